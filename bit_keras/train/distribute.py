"""Choosing a ``tf.distribute`` strategy: one CPU, several GPUs, several machines or a TPU pod.

``get_strategy("auto")`` picks TPUStrategy when a TPU is configured, MultiWorkerMirroredStrategy when
``TF_CONFIG`` names several workers, MirroredStrategy for several local GPUs, else the default strategy.
``"tpu"``, ``"multi_worker"``, ``"mirrored"`` and ``"one_device"`` force one. The same object serves
``bit_keras.transfer`` and ``bit_keras.pretrain``.

Example:
    >>> strategy = get_strategy("auto")          # on a CPU-only machine: the default strategy
    >>> strategy.num_replicas_in_sync
    1
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow as tf

from bit_keras.errors import ConfigError

CHOICES = ("auto", "tpu", "multi_worker", "mirrored", "one_device", "default")
_TPU_ENV = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES")


def tf_config_workers(env: dict[str, str] | None = None) -> int:
    """Number of workers (chief included) that ``$TF_CONFIG`` names; 0 when it is unset.

    Example:
        >>> tf_config_workers({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {}}'})
        2
    """
    raw = (env if env is not None else os.environ).get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err}); see the tf.distribute multi-worker guide") from err
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def tpu_configured(env: dict[str, str] | None = None) -> bool:
    """True when the environment names a TPU (a TPU VM, Colab or a ``TPU_NAME``)."""
    env = env if env is not None else os.environ
    return any(env.get(k) for k in _TPU_ENV) or os.path.exists("/dev/accel0") or os.path.exists("/dev/vfio/0")


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or os.environ.get("TPU_NAME", ""))
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def get_strategy(strategy: str | tf.distribute.Strategy | None = "auto", *, tpu: str | None = None,
                 devices: list[str] | None = None) -> tf.distribute.Strategy:
    """A ``tf.distribute.Strategy`` from a name (see :data:`CHOICES`) or passed through as it is.

    Call it before any TensorFlow op for ``"tpu"`` and ``"multi_worker"`` (they configure the runtime).

    Args:
        strategy: a strategy object (returned unchanged), None or ``"default"`` (the default strategy),
            ``"auto"``, or a forced kind.
        tpu: TPU name or address for ``"tpu"`` (default ``$TPU_NAME``, or the local TPU VM).
        devices: devices for ``"mirrored"`` (default all local GPUs; CPUs if there are none) or the
            device of ``"one_device"`` (default the first GPU, else the CPU).

    Example:
        >>> get_strategy("one_device").extended.worker_devices
        ('/job:localhost/replica:0/task:0/device:CPU:0',)
    """
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    if strategy is None or strategy == "default":
        return tf.distribute.get_strategy()
    if strategy not in CHOICES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from {', '.join(CHOICES)} or pass a "
                         "tf.distribute.Strategy")
    # TPU and multi-worker set-ups must come before anything initialises TensorFlow's devices.
    if strategy == "auto" and (tpu or tpu_configured()):
        strategy = "tpu"
    elif strategy == "auto" and tf_config_workers() > 1:
        strategy = "multi_worker"
    if strategy == "tpu":
        return _tpu_strategy(tpu)
    if strategy == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if strategy == "auto":
        if len(gpus) <= 1:
            return tf.distribute.get_strategy()
        strategy = "mirrored"
    if strategy == "mirrored":
        if devices is None:
            devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    device = (devices or gpus or ["/cpu:0"])[0]
    return tf.distribute.OneDeviceStrategy(device)


def split_cpu(n: int) -> list[str]:
    """Split the CPU into ``n`` logical devices (for MirroredStrategy on one CPU, e.g. in tests).

    Must run before TensorFlow initialises its devices (before the first op); returns their names.
    """
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    return [d.name for d in tf.config.list_logical_devices("CPU")]


def replica_batch_size(global_batch: int, strategy: tf.distribute.Strategy) -> int:
    """The per-replica batch of a global batch; it must divide evenly.

    Example:
        >>> replica_batch_size(512, tf.distribute.get_strategy())
        512
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        raise ConfigError(f"global batch {global_batch} is not divisible by the {replicas} replicas; "
                         f"use a multiple of {replicas}")
    return global_batch // replicas


def distribute_dataset(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset) -> Any:
    """``strategy.experimental_distribute_dataset`` with sharding set explicitly to DATA.

    Each worker reads the whole (identically seeded) stream and keeps its share of every global batch,
    so file-less sources (arrays, generators) shard correctly and the global batch order does not
    depend on the number of workers.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True on the worker that writes logs, checkpoints and exports (always True on one machine).

    Example:
        >>> is_chief()
        True
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0) or task_type is None
