"""The fine-tuning loop behind :func:`bit_keras.recipes.transfer.transfer`: a custom ``tf.distribute`` training loop.

* :func:`make_optimizer`: SGD with momentum (and a ``LossScaleOptimizer`` for float16), built for the
  model's variables; call it under ``strategy.scope()``.
* :class:`TrainStep`: one optimizer step on a global batch, distributed over the strategy's replicas, with
  gradient accumulation over ``batch_split`` micro-batches and optional XLA.
* :func:`evaluate_model`: top-1 / top-5 / loss over a batched evaluation dataset.
* :func:`run_loop`: the loop itself: HyperRule learning rate per step, NaN stop, checkpoints, progress bar,
  TensorBoard scalars, history.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from bit_keras.models.resnet import resnet_v2
    >>> strategy = tf.distribute.get_strategy()
    >>> model = resnet_v2((1, 1, 1, 1), 0.25, num_classes=3, groups=8)
    >>> optimizer = make_optimizer(model, momentum=0.9)
    >>> step = TrainStep(model, optimizer, strategy, batch_size=4, batch_split=2)
    >>> x, y = np.random.rand(4, 32, 32, 3).astype("float32"), tf.one_hot([0, 1, 2, 0], 3)
    >>> float(step(tf.data.Dataset.from_tensors((x, y)).get_single_element())) > 0
    True
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bit_keras.models.policy import MIXED_PRECISION_POLICIES
from bit_keras.errors import ConfigError, DataError, TrainingDivergedError
from bit_keras.train.remat import remat_forward



def make_optimizer(
    model: keras.Model, *, momentum: float = 0.9, weight_decay: float = 0.0, mixed_precision: str | None = None
) -> keras.optimizers.Optimizer:
    """SGD with momentum whose learning rate the loop assigns each step, built for ``model``'s variables.

    ``mixed_precision="mixed_float16"`` wraps it in a dynamic ``LossScaleOptimizer``. Call it under the
    strategy's scope: the optimizer must be built there before the first distributed step.

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
        >>> opt = make_optimizer(resnet_v2((1, 1, 1, 1), 0.25, num_classes=2, groups=8))
        >>> float(opt.learning_rate), len(opt.variables) > 2
        (0.0, True)
    """
    kwargs: dict[str, Any] = {"learning_rate": 0.0, "momentum": momentum}
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    optimizer: keras.optimizers.Optimizer = keras.optimizers.SGD(**kwargs)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def set_learning_rate(optimizer: keras.optimizers.Optimizer, lr: float) -> None:
    """Assign ``lr`` to the optimizer's learning-rate variable (the inner one for loss scaling)."""
    optimizer.learning_rate.assign(lr)


class TrainStep:
    """One optimizer step on a global batch: loss, gradients (accumulated over micro-batches), update.

    The loss is softmax cross-entropy on the (possibly mixed) one-hot labels, averaged over the GLOBAL
    batch with ``tf.nn.compute_average_loss``; the optimizer sums the replicas' gradients. With
    ``batch_split=k`` each replica's share is cut into k micro-batches whose gradients are summed before
    the single update, so the update equals that of the full batch. ``jit_compile`` compiles the
    per-replica loss-and-gradient function with XLA (the update stays outside, as MirroredStrategy needs).
    ``remat=True`` recomputes each residual unit's activations in the backward pass (:mod:`bit_keras.train.remat`).
    Calling the object runs one step and returns the global mean loss (a float32 scalar tensor).
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        *,
        batch_size: int,
        batch_split: int = 1,
        jit_compile: bool = False,
        remat: bool = False,
    ) -> None:
        replicas = strategy.num_replicas_in_sync
        if batch_size % (replicas * batch_split):
            raise ConfigError(
                f"batch_size {batch_size} must be divisible by replicas ({replicas}) x batch_split ({batch_split}) "
                f"= {replicas * batch_split}: choose a batch_size that is a multiple of it"
            )
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.batch_size, self.batch_split = batch_size, batch_split
        self.micro = batch_size // replicas // batch_split
        # The forward pass used for gradients: the model itself, or the same layers with each residual unit
        # recomputed in the backward pass (bit_keras.train.remat: less activation memory, ~1/3 more compute).
        self.forward: Callable[..., Any] = remat_forward(model) if remat else model
        self._grads = tf.function(self._loss_and_grads, jit_compile=jit_compile, autograph=False)
        self._step = tf.function(self._distributed_step, autograph=False)

    def _micro_grads(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(self.forward(images, training=True), tf.float32)
            per_example = tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.batch_size)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        return loss, grads

    def _loss_and_grads(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        k, m = self.batch_split, self.micro
        if k == 1:
            return self._micro_grads(images, labels)
        images = tf.reshape(images, tf.concat([[k, m], tf.shape(images)[1:]], 0))
        labels = tf.reshape(labels, tf.concat([[k, m], tf.shape(labels)[1:]], 0))
        zeros = [tf.zeros_like(v) for v in self.model.trainable_variables]

        def body(i: tf.Tensor, loss: tf.Tensor, acc: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
            l, g = self._micro_grads(images[i], labels[i])
            return i + 1, loss + l, [a + b for a, b in zip(acc, g)]

        _, loss, grads = tf.while_loop(
            lambda i, *_: i < k, body, (tf.constant(0), tf.constant(0.0), zeros), maximum_iterations=k
        )
        return loss, grads

    def _replica_step(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        loss, grads = self._grads(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def _distributed_step(self, batch: Any) -> tf.Tensor:
        per_replica = self.strategy.run(self._replica_step, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def __call__(self, batch: Any) -> tf.Tensor:
        return self._step(batch)


def evaluate_model(
    model: keras.Model, dataset: tf.data.Dataset, *, num_classes: int | None = None, jit_compile: bool = False
) -> dict[str, float]:
    """Top-1, top-5 (``min(5, classes)``) accuracy and mean cross-entropy over ``(images, int labels)`` batches.

    Ties are broken towards the lower class index (as ``argmax``), so an untrained zero head scores chance,
    not 100%.

    Example:
        >>> import numpy as np
        >>> from bit_keras.models.resnet import resnet_v2
        >>> m = resnet_v2((1, 1, 1, 1), 0.25, num_classes=3, groups=8)
        >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((6, 32, 32, 3), "float32"), [0, 1, 2, 0, 1, 2])).batch(4)
        >>> r = evaluate_model(m, ds)
        >>> round(r["top1"], 3), r["top5"], r["num_examples"], round(r["loss"], 4)
        (0.333, 1.0, 6, 1.0986)
    """

    @tf.function(jit_compile=jit_compile, autograph=False)
    def batch_stats(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        logits = tf.cast(model(images, training=False), tf.float32)
        labels = tf.cast(labels, tf.int32)
        true = tf.gather(logits, labels, axis=1, batch_dims=1)[:, None]
        index = tf.range(tf.shape(logits)[1])[None, :]
        ahead = tf.logical_or(logits > true, tf.logical_and(logits == true, index < labels[:, None]))
        rank = tf.reduce_sum(tf.cast(ahead, tf.int32), axis=1)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return rank, loss, tf.shape(logits)[1]

    ranks, losses, classes = [], [], num_classes
    for images, labels in dataset:
        rank, loss, c = batch_stats(images, labels)
        ranks.append(rank.numpy())
        losses.append(loss.numpy())
        classes = int(c)
    if not ranks:
        raise DataError("the evaluation dataset is empty: pass a validation source with at least one example")
    rank, loss = np.concatenate(ranks), np.concatenate(losses)
    k = min(5, classes or 5)
    return {
        "top1": float(np.mean(rank < 1)),
        "top5": float(np.mean(rank < k)),
        "loss": float(np.mean(loss)),
        "num_examples": int(rank.size),
    }


def weights_finite(model: keras.Model) -> bool:
    """Whether every weight of ``model`` is finite."""
    return all(bool(np.all(np.isfinite(np.asarray(v.numpy(), np.float64)))) for v in model.weights)


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


def run_loop(
    *,
    train_step: TrainStep,
    batches: Iterator[Any],
    lr_at: Callable[[int], float | None],
    start_step: int,
    steps: int,
    history: dict[str, list],
    checkpointer: Checkpointer | None = None,
    checkpoint_every: int | None = 100,
    save_history: Callable[[], None] | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int | None = None,
    writer: Any = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Run steps ``start_step .. steps-1``; returns ``{"images_per_s", "loss", "steps_run"}`` of this call.

    Each step sets the HyperRule learning rate ``lr_at(step)``, runs ``train_step`` on the next batch,
    checks the loss is finite (else :class:`TrainingDivergedError`, without saving), logs, and every
    ``checkpoint_every`` completed steps saves a checkpoint (after checking the weights are finite).
    ``on_step(completed_steps, logs)`` is called after each step, after any checkpoint; an exception raised
    from it stops the run (use it to interrupt and resume). ``evaluate`` runs every ``eval_every`` steps.
    """
    model, optimizer = train_step.model, train_step.optimizer
    bar = keras.utils.Progbar(steps, stateful_metrics=["lr", "images/s"], unit_name="step") if progress else None
    if bar is not None and start_step:
        bar.update(start_step)
    timed_images, timed_seconds, loss_value = 0, 0.0, float("nan")
    for step in range(start_step, steps):
        lr = lr_at(step)
        if lr is None:
            raise ConfigError(f"the schedule ended before step {step}; steps={steps} exceeds it")
        set_learning_rate(optimizer, lr)
        try:
            batch = next(batches)
        except StopIteration:
            raise RuntimeError(f"the training data ran out at step {step}: pass a repeating dataset") from None
        t0 = time.perf_counter()
        loss_value = float(train_step(batch))
        seconds = time.perf_counter() - t0
        if step > start_step:  # the first step of a call traces and compiles
            timed_images += train_step.batch_size
            timed_seconds += seconds
        images_per_s = train_step.batch_size / seconds if seconds > 0 else float("inf")
        if not math.isfinite(loss_value):
            raise TrainingDivergedError(step, lr, loss_value, checkpointer.latest if checkpointer else None)
        done = step + 1
        logs = {"loss": loss_value, "lr": lr, "images_per_s": images_per_s}
        history["step"].append(done)
        for key, value in logs.items():
            history[key].append(value)
        if writer is not None:
            with writer.as_default(step=done):
                tf.summary.scalar("train/loss", loss_value)
                tf.summary.scalar("train/lr", lr)
                tf.summary.scalar("train/images_per_s", images_per_s)
        if evaluate is not None and eval_every and done % eval_every == 0 and done < steps:
            val = evaluate()
            record_eval(history, writer, done, val)
            logs.update({f"val_{k}": v for k, v in val.items() if k != "num_examples"})
        if checkpointer is not None and checkpoint_every and done % checkpoint_every == 0 and done < steps:
            if not weights_finite(model):
                raise TrainingDivergedError(step, lr, loss_value, checkpointer.latest, what="model's weights after it")
            checkpointer.save(done)
            if save_history is not None:
                save_history()
        if bar is not None:
            bar.update(done, [("loss", loss_value), ("lr", lr), ("images/s", images_per_s)])
        if on_step is not None:
            on_step(done, logs)
    if writer is not None:
        writer.flush()
    return {
        "images_per_s": timed_images / timed_seconds if timed_seconds > 0 else float("nan"),
        "loss": loss_value,
        "steps_run": steps - start_step,
    }


def record_eval(history: dict[str, list], writer: Any, step: int, val: dict[str, float]) -> None:
    """Append validation metrics to ``history`` (``val_step``, ``val_top1``...) and TensorBoard."""
    history["val_step"].append(step)
    for key in ("top1", "top5", "loss"):
        history[f"val_{key}"].append(val[key])
    if writer is not None:
        with writer.as_default(step=step):
            for key in ("top1", "top5", "loss"):
                tf.summary.scalar(f"val/{key}", val[key])
        writer.flush()


def new_history() -> dict[str, list]:
    """An empty history: per-step ``step, loss, lr, images_per_s`` and per-evaluation ``val_*`` lists."""
    return {k: [] for k in ("step", "loss", "lr", "images_per_s", "val_step", "val_top1", "val_top5", "val_loss")}


def truncate_history(history: dict[str, list], step: int) -> dict[str, list]:
    """The entries of a saved history up to and including ``step`` (for a resumed run)."""
    out = new_history()
    for prefix, step_key in (("", "step"), ("val_", "val_step")):
        keep = [i for i, s in enumerate(history.get(step_key, [])) if s <= step]
        for key in out:
            if (key.startswith("val_") == bool(prefix)) and key in history:
                out[key] = [history[key][i] for i in keep]
    return out


def ensure_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
