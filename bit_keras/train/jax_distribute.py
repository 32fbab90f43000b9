"""Distribution on the JAX backend: ``keras.distribution.DataParallel`` over this process's devices, or none.

The JAX counterpart of :mod:`bit_keras.train.distribute` (which is ``tf.distribute`` and TensorFlow-only). The
engine's ``strategy=`` names map as follows on JAX:

* None: the distribution set with ``keras.distribution.set_distribution`` if any, else one device.
* ``"auto"``: ``DataParallel`` over ``jax.local_devices()`` when there are several, else one device.
* ``"mirrored"``: ``DataParallel`` over ``jax.local_devices()`` (however many there are).
* ``"one_device"`` and ``"default"``: one device (JAX's default device).
* ``"tpu"``: ``DataParallel`` over the local TPU cores (a :class:`~bit_keras.errors.ConfigError` when JAX sees
  no TPU).
* ``"multi_worker"``, a ``tf.distribute.Strategy`` and any ``keras.distribution`` other than ``DataParallel``:
  a :class:`~bit_keras.errors.ConfigError` (they need TensorFlow: ``KERAS_BACKEND=tensorflow``).

Batches come from ``tf.data`` as NumPy arrays (TensorFlow is only the input pipeline here) and are put on the
devices sharded on the batch axis (:func:`put_batch`); variables are replicated.

Example:
    >>> get_distribution("one_device") is None
    True
    >>> get_distribution("multi_worker")
    Traceback (most recent call last):
    ...
    bit_keras.errors.ConfigError: strategy='multi_worker' (tf.distribute's MultiWorkerMirroredStrategy) runs on TensorFlow: run with KERAS_BACKEND=tensorflow; on JAX one process trains on its local devices with strategy='auto' or 'mirrored' (keras.distribution.DataParallel)
    >>> replicas(None)
    1
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np

from bit_keras.errors import ConfigError

CHOICES = ("auto", "tpu", "multi_worker", "mirrored", "one_device", "default")
_ON_JAX = "on JAX one process trains on its local devices with strategy='auto' or 'mirrored' " \
          "(keras.distribution.DataParallel)"


def _data_parallel(devices: list[Any]) -> keras.distribution.DataParallel:
    import jax

    if jax.process_count() > 1:
        raise ConfigError(f"{jax.process_count()} JAX processes: multi-process training runs on TensorFlow "
                          "(KERAS_BACKEND=tensorflow, strategy='multi_worker'); on JAX use one process")
    return keras.distribution.DataParallel(devices=[f"{d.platform}:{d.id}" for d in devices])


def get_distribution(strategy: Any = None) -> keras.distribution.DataParallel | None:
    """The ``DataParallel`` distribution (or None: one device) for ``strategy`` (see the module docstring)."""
    if isinstance(strategy, keras.distribution.DataParallel):
        return strategy
    if hasattr(strategy, "device_mesh"):  # another keras.distribution (ModelParallel)
        raise ConfigError(f"strategy={type(strategy).__name__}: the engine trains data-parallel only; pass "
                          "keras.distribution.DataParallel (or 'auto'/'mirrored')")
    if strategy is None:
        current = keras.distribution.distribution()
        return get_distribution(current) if current is not None else None
    if not isinstance(strategy, str):
        raise ConfigError(f"strategy={type(strategy).__name__} is a TensorFlow object (tf.distribute): run with "
                          f"KERAS_BACKEND=tensorflow, or pass a name; {_ON_JAX}")
    if strategy not in CHOICES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose from {', '.join(CHOICES)} or pass a "
                          "keras.distribution.DataParallel")
    if strategy == "multi_worker":
        raise ConfigError("strategy='multi_worker' (tf.distribute's MultiWorkerMirroredStrategy) runs on "
                          f"TensorFlow: run with KERAS_BACKEND=tensorflow; {_ON_JAX}")
    if strategy in ("one_device", "default"):
        return None
    import jax

    devices = jax.local_devices()
    if strategy == "tpu":
        if devices[0].platform != "tpu":
            raise ConfigError(f"strategy='tpu', but JAX sees no TPU (its devices: {devices[0].platform}); use "
                              "strategy='auto'")
        return _data_parallel(devices)
    if strategy == "auto" and len(devices) == 1:
        return None
    return _data_parallel(devices)


def replicas(distribution: keras.distribution.DataParallel | None) -> int:
    """How many devices share each global batch."""
    return 1 if distribution is None else int(distribution.device_mesh.devices.size)


def scope(distribution: keras.distribution.DataParallel | None) -> contextlib.AbstractContextManager:
    """The block in which variables are created: replicated over the devices (nothing special on one device)."""
    return contextlib.nullcontext() if distribution is None else distribution.scope()


def is_chief() -> bool:
    """The process that writes the files (JAX's process 0; the only one here)."""
    import jax

    return jax.process_index() == 0


def numpy_batches(dataset: Any) -> Iterator[Any]:
    """A ``tf.data.Dataset`` as NumPy arrays (the engine puts them on the devices)."""
    return dataset.as_numpy_iterator()


def put_batch(distribution: keras.distribution.DataParallel | None, batch: Any) -> Any:
    """The arrays of ``batch`` on the devices, sharded on their first (batch) axis under ``distribution``."""
    import jax

    if distribution is None:
        return jax.tree_util.tree_map(jax.device_put, batch)
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, distribution.get_data_layout(np.shape(x)).backend_layout), batch)


def replicate(distribution: keras.distribution.DataParallel | None, variables: list[Any]) -> None:
    """Put each variable's value on every device of ``distribution`` (for variables made outside its scope)."""
    if distribution is None:
        return
    import jax

    for v in variables:
        layout = distribution.get_variable_layout(v).backend_layout
        if getattr(v.value, "sharding", None) != layout:
            v.assign(jax.device_put(v.value, layout))
