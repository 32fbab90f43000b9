"""The engine's backend seams, chosen in one place: :func:`engine_parts`.

:class:`~bit_keras.train.engine.Trainer` is one class on every backend it supports; what differs is behind
these seams, one object per backend:

=====================  ===========================================  ==============================================
seam                   TensorFlow                                   JAX
=====================  ===========================================  ==============================================
strategy               ``tf.distribute`` (:mod:`.distribute`)       None or ``keras.distribution.DataParallel``
                                                                    (:mod:`.jax_distribute`)
batches                ``experimental_distribute_dataset``          ``tf.data`` as NumPy, sharded by the step
step                   :class:`.step.TrainStep` (``tf.function``)   :class:`.jax_step.JaxTrainStep` (``jax.jit``)
checkpoints            :class:`.checkpoint.Checkpointer`            :class:`.jax_checkpoint.NpzCheckpointer`
                       (``tf.train.Checkpoint``)                    (``.npz``)
pre-emption            ``"tf"`` handler or SIGTERM flag             SIGTERM flag (:mod:`.preemption`)
=====================  ===========================================  ==============================================

Settings that only one backend can honour are refused by :meth:`check` with a
:class:`~bit_keras.errors.ConfigError` naming the backend that can (on JAX: ``remat``, ``preemption="tf"``;
``jit_compile`` is moot there: every JAX step is one XLA program). Everything else (the loop, schedule, resume
check against ``run.json``, history, NaN stop, TensorBoard through ``tf.summary``, progress) is shared.

Example:
    >>> parts = engine_parts("tensorflow")
    >>> parts.name, parts.replicas(parts.get_strategy(None)), parts.uses_xla(EngineConfig(jit_compile=True))
    ('tensorflow', 1, True)
    >>> engine_parts("jax").check(EngineConfig(remat=True))
    Traceback (most recent call last):
    ...
    bit_keras.errors.ConfigError: remat=True runs on TensorFlow (tf.recompute_grad): run with KERAS_BACKEND=tensorflow, or on JAX cut activation memory with batch_split
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import keras

from bit_keras.backend import backend
from bit_keras.errors import ConfigError
from bit_keras.train.config import EngineConfig

ENGINE_BACKENDS = ("tensorflow", "jax")


class TensorFlowParts:
    """``tf.distribute`` strategies, :class:`~bit_keras.train.step.TrainStep`, ``tf.train.Checkpoint``."""

    name = "tensorflow"

    def get_strategy(self, strategy: Any) -> Any:
        from bit_keras.train.distribute import get_strategy

        return get_strategy(strategy)

    def scope(self, strategy: Any) -> contextlib.AbstractContextManager:
        return strategy.scope()

    def replicas(self, strategy: Any) -> int:
        return int(strategy.num_replicas_in_sync)

    def is_chief(self, strategy: Any) -> bool:
        from bit_keras.train.distribute import is_chief

        return is_chief(strategy)

    def distribute_dataset(self, strategy: Any, dataset: Any) -> Any:
        from bit_keras.train.distribute import distribute_dataset

        return distribute_dataset(strategy, dataset)

    def check(self, config: EngineConfig) -> None:
        """Every engine setting works on TensorFlow."""

    def uses_xla(self, config: EngineConfig) -> bool:
        return bool(config.jit_compile)

    def make_step(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, strategy: Any,
                  config: EngineConfig, *, loss: str, weight_decay: float) -> Any:
        from bit_keras.train.step import TrainStep

        return TrainStep(model, optimizer, strategy, batch_size=config.batch_size, batch_split=config.batch_split,
                         jit_compile=config.jit_compile, remat=config.remat, loss=loss, weight_decay=weight_decay)

    def make_checkpointer(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                          directory: str | os.PathLike, keep: int) -> Any:
        from bit_keras.train.checkpoint import Checkpointer

        return Checkpointer(model, optimizer, directory, keep=keep)

    def latest_checkpoint(self, directory: str | os.PathLike) -> str | None:
        import tensorflow as tf

        return tf.train.latest_checkpoint(os.fspath(directory))


class JaxParts:
    """``keras.distribution.DataParallel``, :class:`~bit_keras.train.jax_step.JaxTrainStep`, ``.npz`` checkpoints."""

    name = "jax"

    def get_strategy(self, strategy: Any) -> Any:
        from bit_keras.train.jax_distribute import get_distribution

        return get_distribution(strategy)

    def scope(self, strategy: Any) -> contextlib.AbstractContextManager:
        from bit_keras.train.jax_distribute import scope

        return scope(strategy)

    def replicas(self, strategy: Any) -> int:
        from bit_keras.train.jax_distribute import replicas

        return replicas(strategy)

    def is_chief(self, strategy: Any) -> bool:
        from bit_keras.train.jax_distribute import is_chief

        return is_chief()

    def distribute_dataset(self, strategy: Any, dataset: Any) -> Any:
        from bit_keras.train.jax_distribute import numpy_batches

        return numpy_batches(dataset)

    def check(self, config: EngineConfig) -> None:
        if config.remat:
            raise ConfigError("remat=True runs on TensorFlow (tf.recompute_grad): run with KERAS_BACKEND=tensorflow, "
                              "or on JAX cut activation memory with batch_split")
        if config.preemption is not None:
            from bit_keras.train.preemption import resolve_mode

            resolve_mode(config.preemption)  # refuses "tf" off TensorFlow, naming 'signal' and the backend

    def uses_xla(self, config: EngineConfig) -> bool:
        return True  # jax.jit: every step is one XLA program, whatever jit_compile says

    def make_step(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, strategy: Any,
                  config: EngineConfig, *, loss: str, weight_decay: float) -> Any:
        from bit_keras.train.jax_step import JaxTrainStep

        return JaxTrainStep(model, optimizer, strategy, batch_size=config.batch_size,
                            batch_split=config.batch_split, loss=loss, weight_decay=weight_decay)

    def make_checkpointer(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                          directory: str | os.PathLike, keep: int) -> Any:
        from bit_keras.train.jax_checkpoint import NpzCheckpointer

        return NpzCheckpointer(model, optimizer, directory, keep=keep)

    def latest_checkpoint(self, directory: str | os.PathLike) -> str | None:
        from bit_keras.train.jax_checkpoint import latest_checkpoint

        return latest_checkpoint(directory)


_PARTS = {"tensorflow": TensorFlowParts(), "jax": JaxParts()}


def engine_parts(name: str | None = None) -> TensorFlowParts | JaxParts:
    """The seams for backend ``name`` (default: the one Keras runs on); other backends raise
    :class:`~bit_keras.errors.BackendError` (through :func:`~bit_keras.backend.require_backend`)."""
    if name is None:
        from bit_keras.backend import require_backend

        require_backend(ENGINE_BACKENDS, "Training (bit_keras.train)")
        name = backend()
    if name not in _PARTS:
        raise ConfigError(f"no engine for backend {name!r}; the engine runs on {', '.join(ENGINE_BACKENDS)}")
    return _PARTS[name]
