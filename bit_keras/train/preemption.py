"""Preemption: save a checkpoint at a step boundary and stop, so that the run resumes where it was.

:func:`preemption_guard` gives a training loop one call, ``guard.check(done_steps)`` after every step,
which saves a checkpoint and raises :class:`Preempted` once the job has been told to stop. Two ways of
hearing it:

* ``"tf"``: TensorFlow's ``tf.distribute.experimental.PreemptionCheckpointHandler``. It catches SIGTERM
  (and, on GCP GPU VMs, maintenance events), and under ``MultiWorkerMirroredStrategy`` agrees with the
  other workers, through the coordination service, on the step at which *every* worker saves, so that a
  preemption of one worker stops the whole cluster at the same step. It needs the main thread and is not
  supported by TensorFlow on GCP CPU or TPU VMs.
* ``"signal"``: our own SIGTERM flag, checked after every step (one process; what ``"auto"`` falls back
  to where the handler is unavailable or unsupported, and what it means on JAX, where ``"tf"`` is refused).

The previous SIGTERM handler is put back when the guard closes (TensorFlow's handler never removes its
own), so a finished run leaves the process as it found it.

Example:
    >>> import tempfile, keras
    >>> from bit_keras.train.checkpoint import Checkpointer
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> checkpointer = Checkpointer(model, keras.optimizers.SGD(), tempfile.mkdtemp())
    >>> with preemption_guard(tf.distribute.get_strategy(), checkpointer, mode="signal") as guard:
    ...     guard.check(1)  # no notice: nothing happens
    >>> guard.mode, checkpointer.latest
    ('signal', None)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import TYPE_CHECKING, Any, Iterator

import tensorflow as tf

from bit_keras.backend import backend
from bit_keras.errors import ConfigError, Preempted

if TYPE_CHECKING:
    from bit_keras.train.checkpoint import Checkpointer

MODES = ("auto", "tf", "signal")


class PreemptionGuard:
    """``check(done)`` after each step: when a preemption notice has arrived, save and raise :class:`Preempted`."""

    def __init__(self, strategy: tf.distribute.Strategy, checkpointer: Checkpointer, mode: str) -> None:
        self.checkpointer, self.mode = checkpointer, mode
        self.stop_requested = False
        self._done = 0
        self._handler: Any = None
        if mode == "tf":
            config = tf.distribute.experimental.TerminationConfig(exit_fn=self._exit)
            self._handler = tf.distribute.experimental.PreemptionCheckpointHandler(
                getattr(strategy, "cluster_resolver", None), checkpointer.manager, termination_config=config)
            # The handler counts its calls from a value it restores from the checkpoint; a non-chief worker
            # (whose manager is a scratch folder) restores nothing. Counting from 0 on every worker keeps the
            # counts equal, which is what the cluster-wide "save at call N" agreement needs.
            if hasattr(self._handler, "_run_counter"):
                self._handler._run_counter = 0

    def _exit(self) -> None:
        raise Preempted(f"stopped by a preemption notice after step {self._done}; the checkpoint is saved, "
                        "run again to resume")

    def check(self, done: int) -> None:
        """Call after step ``done`` (1-based count of completed steps) on every worker."""
        self._done = done
        if self._handler is not None:
            self.checkpointer.step.assign(done)  # the handler saves our checkpoint, step counter included
            self._handler.save_checkpoint_if_preempted(checkpoint_number=done)
        elif self.stop_requested:
            self.checkpointer.save(done)
            self._exit()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # where signal handlers can be set


def _handler_supported() -> bool:
    from tensorflow.python.distribute.failure_handling import failure_handling_util as util

    unsupported = (util.PlatformDevice.GCE_CPU, util.PlatformDevice.GCE_TPU)
    return util.detect_platform() not in unsupported


def resolve_mode(mode: str = "auto") -> str:
    """``"tf"`` or ``"signal"`` for ``mode`` here: "auto" takes TensorFlow's handler where it works.

    Example:
        >>> resolve_mode("signal")
        'signal'
    """
    if mode not in MODES:
        raise ConfigError(f"preemption mode {mode!r} is not one of {MODES}")
    if backend() != "tensorflow":
        if mode == "tf":
            raise ConfigError(f"preemption='tf' (TensorFlow's PreemptionCheckpointHandler) runs on TensorFlow, and "
                              f"Keras runs on {backend()!r} here: use preemption='signal' (or 'auto'), or run "
                              "with KERAS_BACKEND=tensorflow")
        return "signal"
    available = _on_main_thread() and hasattr(tf.distribute.experimental, "PreemptionCheckpointHandler")
    if mode == "tf" and not available:
        raise ConfigError("preemption='tf' needs tf.distribute.experimental.PreemptionCheckpointHandler and the "
                         "main thread; use preemption='signal' (or 'auto')")
    if mode == "auto":
        return "tf" if available and _handler_supported() else "signal"
    return mode


@contextlib.contextmanager
def preemption_guard(strategy: tf.distribute.Strategy, checkpointer: Checkpointer,
                     mode: str = "auto") -> Iterator[PreemptionGuard]:
    """A :class:`PreemptionGuard` for the duration of a training loop (see the module docstring).

    ``checkpointer`` is the run's :class:`~bit_keras.train.engine.Checkpointer` (every worker passes its own:
    the chief's is the real one); its step counter is set before each save.
    """
    mode = resolve_mode(mode)
    main = _on_main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    guard = PreemptionGuard(strategy, checkpointer, mode)
    if mode == "signal" and main:
        signal.signal(signal.SIGTERM, lambda *_: setattr(guard, "stop_requested", True))
    try:
        yield guard
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
