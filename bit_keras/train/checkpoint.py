"""Checkpoints of a run: model, optimizer and step counter in one ``tf.train.Checkpoint``, the last few kept.

Example:
    >>> import tempfile, keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> ckpt = Checkpointer(model, keras.optimizers.SGD(), tempfile.mkdtemp())
    >>> ckpt.restore(), ckpt.save(5).endswith("ckpt-5"), ckpt.restore()
    (0, True, 5)
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf


class Checkpointer:
    """``tf.train.Checkpoint(model, optimizer, step)`` in ``directory`` with a manager keeping the last ``keep``."""

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer, directory: str | os.PathLike,
                 keep: int = 2) -> None:
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=self.step)
        self.manager = tf.train.CheckpointManager(self.checkpoint, os.fspath(directory), max_to_keep=keep)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def restore(self, path: str | None = None) -> int:
        """Restore checkpoint ``path`` (default: this folder's latest) if there is one; returns its step (0 if none)."""
        path = path or self.manager.latest_checkpoint
        if path is None:
            return 0
        self.checkpoint.restore(path).assert_existing_objects_matched()
        return int(self.step.numpy())

    def save(self, step: int) -> str:
        self.step.assign(step)
        return self.manager.save(checkpoint_number=step)
