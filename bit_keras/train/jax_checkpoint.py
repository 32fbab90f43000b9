"""Checkpoints without TensorFlow: every model and optimizer variable plus the step in one ``.npz`` per save.

The JAX engine's counterpart of :class:`~bit_keras.train.checkpoint.Checkpointer` (a ``tf.train.Checkpoint``),
with the same contract: ``save(step)`` writes ``ckpt-<step>.npz`` atomically (:mod:`bit_keras.atomic`: a
crash mid-write leaves no half-written file) and keeps the last ``keep``; ``restore(path)`` (default: the
latest) assigns every value back, exactly, and returns the step; :attr:`latest` is the newest file. A
checkpoint is refused (:class:`~bit_keras.errors.ConfigError`) unless it holds exactly this model's and
optimizer's variables, with their shapes. It reads and writes Keras variables only, so it runs on any backend.

Example:
    >>> import tempfile, keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> optimizer = keras.optimizers.SGD(momentum=0.9); optimizer.build(model.trainable_variables)
    >>> ckpt = NpzCheckpointer(model, optimizer, tempfile.mkdtemp(), keep=2)
    >>> ckpt.restore(), ckpt.save(5).endswith("ckpt-5.npz"), ckpt.restore()
    (0, True, 5)
    >>> _ = ckpt.save(6), ckpt.save(7)
    >>> sorted(p.name for p in ckpt.directory.iterdir()), ckpt.latest == latest_checkpoint(ckpt.directory)
    (['ckpt-6.npz', 'ckpt-7.npz'], True)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import numpy as np

from bit_keras.errors import ConfigError
from bit_keras.models.npz import read_npz, write_npz

_NAME = re.compile(r"^ckpt-(\d+)\.npz$")
STEP_KEY = "step"


def _checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The path of the highest-step ``ckpt-<step>.npz`` in ``directory`` (None when there is none)."""
    found = _checkpoints(directory)
    return os.fspath(found[-1][1]) if found else None


class NpzCheckpointer:
    """The variables of ``model`` and ``optimizer`` and a step counter in ``directory/ckpt-<step>.npz``, the
    last ``keep`` kept."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, directory: str | os.PathLike,
                 keep: int = 2) -> None:
        self.model, self.optimizer, self.keep = model, optimizer, int(keep)
        self.directory = Path(directory)

    def _variables(self) -> dict[str, keras.Variable]:
        # Keyed by position, as the model and optimizer list them: variable paths carry names that Keras makes
        # unique per process ("sgd_1", "dense_3"), so they would differ between a run and its resumption.
        named = {}
        for owner, variables in (("model", self.model.weights), ("optimizer", self.optimizer.variables)):
            for i, v in enumerate(variables):
                named[f"{owner}/{i:05d}"] = v
        return named

    @property
    def latest(self) -> str | None:
        return latest_checkpoint(self.directory)

    def restore(self, path: str | os.PathLike | None = None) -> int:
        """Restore checkpoint ``path`` (default: this folder's latest) if there is one; returns its step (0 if none)."""
        path = path or self.latest
        if path is None:
            return 0
        arrays = read_npz(path)
        variables = self._variables()
        missing = sorted(set(variables) - set(arrays))
        unexpected = sorted(set(arrays) - set(variables) - {STEP_KEY})
        wrong = [f"{k} ({v.path}): saved {arrays[k].shape}, now {tuple(v.shape)}" for k, v in variables.items()
                 if k in arrays and tuple(arrays[k].shape) != tuple(v.shape)]
        if missing or unexpected or wrong or STEP_KEY not in arrays:
            raise ConfigError(
                f"checkpoint {path} does not hold this model's and optimizer's variables (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}): use a new output_dir, or "
                "delete the old run's checkpoints")
        for key, v in variables.items():
            v.assign(arrays[key].astype(v.dtype))
        return int(arrays[STEP_KEY])

    def save(self, step: int) -> str:
        """Write ``ckpt-<step>.npz`` and delete all but the last ``keep``; returns its path."""
        arrays = {k: np.asarray(v.numpy()) for k, v in self._variables().items()}
        arrays[STEP_KEY] = np.asarray(step, np.int64)
        path = write_npz(arrays, self.directory / f"ckpt-{int(step)}.npz")
        for _, old in _checkpoints(self.directory)[:-self.keep]:
            old.unlink(missing_ok=True)
        return os.fspath(path)
