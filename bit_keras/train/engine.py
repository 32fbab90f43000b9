"""The training engine every recipe runs on: :class:`Trainer`, on TensorFlow or JAX.

It owns what every run needs and no recipe should write twice: the strategy (variables created under its
scope, batches sharded over the replicas), the dtype policy, the optimizer and the step (micro-batches, mixed
precision, XLA, remat), checkpoints written by the chief and exact resume (``run.json`` checked against
:attr:`RunConfig.RESUME_KEYS`; the input stream skipped to the resumed step; the history read back),
pre-emption notices, the NaN stop, the history, TensorBoard scalars and the progress bar. A recipe
(:mod:`bit_keras.recipes`) gives it a model builder, a loss, a learning-rate schedule, a batch stream and an
optional evaluation, and writes its own result files.

What differs between backends (the strategy, the step, the checkpoint format, how batches reach the devices)
is behind the seams of :mod:`bit_keras.train.parts`: on TensorFlow ``tf.distribute``,
:class:`~bit_keras.train.step.TrainStep` and ``tf.train.Checkpoint``; on JAX ``keras.distribution.DataParallel``,
:class:`~bit_keras.train.jax_step.JaxTrainStep` and ``.npz`` checkpoints (TensorFlow still runs the
``tf.data`` input pipeline and writes the TensorBoard summaries there, never the model).

Output folder (when given): ``run.json``, ``history.json``, ``checkpoints/`` and ``tensorboard/``, written by
the chief only (other workers keep theirs in a scratch folder that is removed when the run ends).

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from bit_keras.models.resnet import resnet_v2
    >>> from bit_keras.train.config import EngineConfig, RunConfig
    >>> run = RunConfig("doc", "R14x0.25", None, engine=EngineConfig(batch_size=4, progress=False))
    >>> batches = tf.data.Dataset.from_tensors((np.random.rand(4, 32, 32, 3).astype("float32"),
    ...                                         tf.one_hot([0, 1, 2, 0], 3))).repeat()
    >>> with Trainer(run) as trainer:
    ...     model = trainer.build(lambda: resnet_v2("R14x0.25", num_classes=3))
    ...     stats = trainer.fit(batches, steps=3, lr_at=lambda step: 0.01)
    >>> trainer.history["step"], stats["steps_run"]
    ([1, 2, 3], 3)
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from bit_keras.atomic import write_json
from bit_keras.errors import ConfigError, Preempted, TrainingDivergedError
from bit_keras.models.policy import dtype_policy
from bit_keras.train.config import RunConfig
from bit_keras.train.history import new_history, record_eval, truncate_history
from bit_keras.train.metrics import weights_finite
from bit_keras.train.parts import engine_parts
from bit_keras.train.preemption import preemption_guard
from bit_keras.train.step import make_optimizer, set_learning_rate

RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"


class Trainer:
    """One training run on one strategy; use it as a context manager (it closes its writer and scratch folder).

    Args:
        run: the run's :class:`~bit_keras.train.config.RunConfig` (its ``engine`` holds the engine settings).
        strategy: on TensorFlow a ``tf.distribute.Strategy``, a name for
            :func:`~bit_keras.train.distribute.get_strategy` (``"auto"``, ``"mirrored"``...), or None for the
            current (default) strategy; on JAX a ``keras.distribution.DataParallel``, a name
            (:func:`~bit_keras.train.jax_distribute.get_distribution`) or None.
        output_dir: where checkpoints, ``run.json``, ``history.json`` and TensorBoard logs go; None keeps
            nothing (no resume).
    """

    def __init__(self, run: RunConfig, *, strategy: Any = None, output_dir: str | Path | None = None) -> None:
        self.run, self.config = run, run.engine
        self.parts = engine_parts()
        self.parts.check(self.config)
        self.strategy = self.parts.get_strategy(strategy)
        self.chief = self.parts.is_chief(self.strategy)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self._scratch: Path | None = None
        self.work_dir: Path | None = None
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # Multi-worker: only the chief writes into output_dir; the others write the same files to a scratch
            # folder and resume from the chief's checkpoints.
            self.work_dir = self.output_dir if self.chief else Path(tempfile.mkdtemp(prefix="bit_keras_worker_"))
            self._scratch = None if self.chief else self.work_dir
        self.history: dict[str, list] = new_history()
        self.start = 0
        self.model: keras.Model | None = None
        self.step: Any = None  # the backend's step (TrainStep on TensorFlow)
        self.checkpointer: Any = None  # the backend's checkpointer (Checkpointer on TensorFlow)
        self._writer: Any = None

    # ------------------------------------------------------------------ set-up

    def build(self, build_model: Callable[[], keras.Model], *, loss: str = "softmax", weight_decay: float = 0.0,
              optimizer_weight_decay: float = 0.0, momentum: float = 0.9) -> keras.Model:
        """Build the model (under the strategy's scope and the dtype policy), the optimizer and the step, and
        restore the latest checkpoint of ``output_dir`` when there is one (after checking it is this run).

        ``loss``: ``"softmax"`` or ``"sigmoid"`` cross-entropy; ``weight_decay``: L2 on the kernels, in the
        loss; ``optimizer_weight_decay``: the optimizer's decoupled decay.
        """
        c = self.config
        with self.parts.scope(self.strategy), dtype_policy(c.mixed_precision):
            model = build_model()
            optimizer = make_optimizer(model, momentum=momentum, weight_decay=optimizer_weight_decay,
                                       mixed_precision=c.mixed_precision)
        self.model = model
        self.step = self.parts.make_step(model, optimizer, self.strategy, c, loss=loss, weight_decay=weight_decay)
        if self.work_dir is not None:
            self.checkpointer = self.parts.make_checkpointer(model, optimizer, self.work_dir / CHECKPOINT_DIR,
                                                             keep=c.keep_checkpoints)
        self.start = self._resume()
        return model

    def _resume(self) -> int:
        """Restore the chief's latest checkpoint (0 when there is none) and write or check ``run.json``."""
        if self.output_dir is None or self.checkpointer is None:
            return 0
        run_file = self.output_dir / RUN_FILE
        latest = self.parts.latest_checkpoint(self.output_dir / CHECKPOINT_DIR)
        if latest is None:
            if self.chief:
                write_json(run_file, self.run.to_dict())
            return 0
        try:
            saved = json.loads(run_file.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{run_file} is missing or unreadable ({err}), but {self.output_dir} has checkpoints: "
                              "use a new output_dir or delete the old run") from err
        self.run.check_resumable(saved, self.output_dir)
        start = self.checkpointer.restore(latest)
        if self.chief:
            write_json(run_file, self.run.to_dict())  # the engine settings may have changed
        history_file = self.output_dir / HISTORY_FILE
        if history_file.exists():
            self.history = truncate_history(json.loads(history_file.read_text()), start)
        if self.config.progress or start:
            print(f"  resuming from step {start} ({latest})")
        return start

    @property
    def replicas(self) -> int:
        """How many replicas (devices) share each global batch."""
        return self.parts.replicas(self.strategy)

    @property
    def uses_xla(self) -> bool:
        """Whether the step is XLA-compiled (``jit_compile`` on TensorFlow; always on JAX)."""
        return self.parts.uses_xla(self.config)

    @property
    def writer(self) -> Any:
        """The TensorBoard writer of the chief's output folder (None without one)."""
        if self._writer is None and self.chief and self.output_dir is not None:
            self._writer = tf.summary.create_file_writer(str(self.output_dir / TENSORBOARD_DIR))
        return self._writer

    # ------------------------------------------------------------------ training

    def fit(self, batches: tf.data.Dataset, *, steps: int, lr_at: Callable[[int], float | None],
            evaluate: Callable[[], dict[str, float]] | None = None,
            on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
        """Train steps ``start .. steps - 1`` and save the final checkpoint; returns this call's
        ``{"images_per_s", "loss", "steps_run"}``.

        ``batches`` is the global batch stream from step 0, a deterministic function of the seed (a resumed
        run skips the steps already done). ``lr_at(step)`` is the learning rate of each step. ``evaluate()``
        runs every ``eval_every`` steps. ``on_step(completed, logs)`` runs after each step (and any
        checkpoint); an exception from it stops the run, which a later identical call resumes.
        """
        if self.step is None:
            raise ConfigError("Trainer.fit before Trainer.build: build the model first")
        stats: dict[str, float] = {"images_per_s": float("nan"), "loss": float("nan"), "steps_run": 0}
        if self.start < steps:
            ds = batches.skip(self.start).take(steps - self.start)
            options = tf.data.Options()
            options.deterministic = True
            iterator = iter(self.parts.distribute_dataset(self.strategy, ds.with_options(options)))
            guarded = self.config.preemption is not None and self.checkpointer is not None
            guard_scope = (preemption_guard(self.strategy, self.checkpointer, self.config.preemption)
                           if guarded else contextlib.nullcontext(None))
            with guard_scope as guard:
                stats = self._loop(iterator, steps, lr_at, evaluate, on_step, guard)
            if not weights_finite(self.step.model):
                last = steps - 1
                raise TrainingDivergedError(last, lr_at(last) or 0.0, stats["loss"],
                                            self.checkpointer.latest if self.checkpointer else None,
                                            what="model's weights after it")
            if self.checkpointer is not None:
                self.checkpointer.save(steps)
        self.save_history()
        return stats

    def _loop(self, batches: Any, steps: int, lr_at: Callable[[int], float | None],
              evaluate: Callable[[], dict[str, float]] | None, on_step: Callable[..., None] | None,
              guard: Any) -> dict[str, float]:
        step_fn, c = self.step, self.config
        assert step_fn is not None
        bar = keras.utils.Progbar(steps, stateful_metrics=["lr", "images/s"], unit_name="step") \
            if c.progress and self.chief else None
        if bar is not None and self.start:
            bar.update(self.start)
        timed_images, timed_seconds, loss_value = 0, 0.0, float("nan")
        for step in range(self.start, steps):
            lr = lr_at(step)
            if lr is None:
                raise ConfigError(f"the schedule ended before step {step}; steps={steps} exceeds it")
            set_learning_rate(step_fn.optimizer, lr)
            try:
                batch = next(batches)
            except StopIteration:
                raise ConfigError(f"the training data ran out at step {step}: pass a repeating dataset") from None
            t0 = time.perf_counter()
            loss_value = float(step_fn(batch))
            seconds = time.perf_counter() - t0
            if step > self.start:  # the first step of a call traces and compiles
                timed_images += step_fn.batch_size
                timed_seconds += seconds
            images_per_s = step_fn.batch_size / seconds if seconds > 0 else float("inf")
            if not math.isfinite(loss_value):
                raise TrainingDivergedError(step, lr, loss_value, self.checkpointer.latest if self.checkpointer else None)
            done = step + 1
            logs = {"loss": loss_value, "lr": lr, "images_per_s": images_per_s}
            self._log(done, logs)
            if evaluate is not None and c.eval_every and done % c.eval_every == 0 and done < steps:
                val = evaluate()
                self.record_eval(done, val)
                logs.update({f"val_{k}": v for k, v in val.items() if k != "num_examples"})
            if self.checkpointer is not None and c.checkpoint_every and done % c.checkpoint_every == 0 and done < steps:
                if not weights_finite(step_fn.model):
                    raise TrainingDivergedError(step, lr, loss_value, self.checkpointer.latest,
                                                what="model's weights after it")
                self.checkpointer.save(done)
                self.save_history()
            if bar is not None:
                bar.update(done, [("loss", loss_value), ("lr", lr), ("images/s", images_per_s)])
            if guard is not None:
                try:
                    guard.check(done)  # saves and raises Preempted once told to stop (every worker at the same step)
                except Preempted:
                    self.save_history()  # the history up to the checkpoint the guard saved: nothing is lost
                    raise
            if on_step is not None:
                on_step(done, logs)
        if self.writer is not None:
            self.writer.flush()
        return {"images_per_s": timed_images / timed_seconds if timed_seconds > 0 else float("nan"),
                "loss": loss_value, "steps_run": steps - self.start}

    def _log(self, done: int, logs: dict[str, float]) -> None:
        self.history["step"].append(done)
        for key, value in logs.items():
            self.history[key].append(value)
        if self.writer is not None:
            with self.writer.as_default(step=done):
                for key, value in logs.items():
                    tf.summary.scalar(f"train/{key}", value)

    # ------------------------------------------------------------------ records

    def record_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Add evaluation metrics to the history (replacing those of a finished run started again) and TensorBoard."""
        record_eval(self.history, self.writer, step, metrics)

    def text_summary(self, name: str, text: str) -> None:
        """A TensorBoard text summary at step 0 (once: not on a resumed run)."""
        if self.writer is not None and not self.start:
            with self.writer.as_default(step=0):
                tf.summary.text(name, text)

    def save_history(self) -> None:
        if self.work_dir is not None:
            write_json(self.work_dir / HISTORY_FILE, self.history)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
