"""Upstream pre-training with the BiT recipe under ``tf.distribute``: :func:`pretrain`.

The same custom loop as :func:`bit_keras.transfer` (:mod:`bit_keras.train.engine`) with the upstream recipe of
:mod:`bit_keras.recipes.upstream`: inception-style random crops and flips, softmax or sigmoid cross-entropy,
L2 weight decay, a linear warm-up then step decays by epoch. It runs on whatever
:func:`bit_keras.train.distribute.get_strategy` finds (one CPU, several GPUs, several workers, a TPU), keeps
checkpoints (the chief writes them), resumes after a crash or a preemption to the same result, and hands
the backbone over: ``weights.npz`` in the official layout (loadable by ``create_model(..., weights=...)``
and ``transfer``), ``model.keras``, and optionally a SavedModel published in a hub registry.

Example:
    >>> import numpy as np
    >>> images = np.random.randint(0, 256, (64, 16, 16, 3), np.uint8)
    >>> r = pretrain("BiT-tiny", (images, np.arange(64) % 4), preset="tiny", epochs=1, batch_size=16,
    ...              image_size=16, progress=False)  # doctest: +ELLIPSIS
    BiT upstream: ...
    >>> r.steps, r.model.output_shape
    (4, (None, 4))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from bit_keras.errors import ConfigError
from bit_keras.atomic import save_model, write_json
from bit_keras.data.sources import DatasetInfo, load_dataset
from bit_keras.train.distribute import distribute_dataset, get_strategy, is_chief
from bit_keras.models.layers import StandardizedConv2D
from bit_keras.models.create import create_model
from bit_keras.train.preemption import Preempted, preemption_guard
from bit_keras.train.engine import Checkpointer, TrainStep, make_optimizer, new_history, run_loop
from bit_keras.models.policy import dtype_policy, seeded_init
from bit_keras.recipes.upstream import UpstreamConfig, get_preset
from bit_keras.models.weights import save_npz

__all__ = ["Preempted", "PretrainResult", "UpstreamStep", "export_to_registry", "pretrain", "upstream_pipeline"]

AUTOTUNE = tf.data.AUTOTUNE


def upstream_pipeline(ds: tf.data.Dataset, info: DatasetInfo, *, image_size: int, batch_size: int,
                      min_crop_area: float = 0.05, flip: bool = True, input_range: Sequence[float] = (0.0, 1.0),
                      seed: int = 0, repeat: bool = True) -> tf.data.Dataset:
    """Upstream training batches: inception-style crop (area 5-100%, aspect 3/4-4/3) resized to
    ``image_size``, random flip, scaled to ``input_range``; one-hot labels. Deterministic for a seed
    (stateless ops keyed by the element's position), so a resumed run sees the same batches. The shuffle
    order also depends on TensorFlow's global seed when one is set (``tf.random.set_seed``,
    ``keras.utils.set_random_seed``): resume under the same setting.

    Example:
        >>> import numpy as np
        >>> ds, info = load_dataset((np.zeros((8, 20, 20, 3), np.uint8), np.arange(8) % 2))
        >>> x, y = next(iter(upstream_pipeline(ds, info, image_size=16, batch_size=4)))
        >>> x.shape.as_list(), y.shape.as_list()
        ([4, 16, 16, 3], [4, 2])
    """
    lo, hi = (float(v) for v in input_range)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.uint8), tf.cast(y, tf.int64)), num_parallel_calls=AUTOTUNE).cache()
    ds = ds.shuffle(max(1, min(100_000, info.num_examples)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def augment(i: tf.Tensor, xy: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = xy
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=tf.stack([tf.constant(seed, tf.int64), 2 * i]), min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3), area_range=(min_crop_area, 1.0), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, size)
        image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), method="bilinear")
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=tf.stack([tf.constant(seed, tf.int64),
                                                                                   2 * i + 1]))
        image = tf.clip_by_value(image, 0.0, 255.0) * ((hi - lo) / 255.0) + lo
        return image, tf.one_hot(label, info.num_classes, dtype=tf.float32)

    ds = ds.enumerate().map(augment, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.batch(batch_size, drop_remainder=True).with_options(options).prefetch(AUTOTUNE)


class UpstreamStep(TrainStep):
    """:class:`TrainStep` with the upstream loss: softmax or sigmoid cross-entropy, plus L2 weight decay
    ``weight_decay / 2 * sum(w**2)`` on the convolution and dense kernels (added once per global batch)."""

    def __init__(self, *args: Any, loss: str = "softmax", weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_kind, self.weight_decay = loss, float(weight_decay)
        decayed = {id(v) for layer in self.model.layers
                   if isinstance(layer, (StandardizedConv2D, keras.layers.Dense)) for v in [layer.kernel]}
        self._decay_mask = [id(v) in decayed for v in self.model.trainable_variables]

    def _micro_grads(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        if self.loss_kind == "softmax":
            return super()._micro_grads(images, labels)
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(self.forward(images, training=True), tf.float32)
            per_example = tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(labels, tf.float32), logits=logits), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.batch_size)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        return loss, [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]

    def _loss_and_grads(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        loss, grads = super()._loss_and_grads(images, labels)
        if not self.weight_decay:
            return loss, grads
        # Each replica adds its share, so the summed update carries the decay exactly once.
        share = self.weight_decay / self.strategy.num_replicas_in_sync
        out, l2 = [], 0.0
        for g, v, decay in zip(grads, self.model.trainable_variables, self._decay_mask):
            if decay:
                w = tf.cast(v, tf.float32)
                g = g + tf.cast(self.optimizer.scale_loss(share * w), g.dtype)
                l2 += 0.5 * share * tf.reduce_sum(w * w)
            out.append(g)
        return loss + l2, out


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the model, the history, the config, where things went."""

    model: keras.Model
    history: dict[str, list]
    config: UpstreamConfig
    steps: int
    output_dir: Path | None
    weights_path: Path | None
    handle: str | None


def _build(model: str | keras.Model, num_classes: int, seed: int) -> keras.Model:
    if isinstance(model, keras.Model):
        return model
    with seeded_init(seed):
        return create_model(model, num_classes=num_classes)


def pretrain(
    model: str | keras.Model = "BiT-S-R50x1",
    dataset: Any = None,
    *,
    preset: str | UpstreamConfig = "BiT-S",
    output_dir: str | os.PathLike | None = None,
    strategy: str | tf.distribute.Strategy | None = "auto",
    split: str = "train",
    seed: int = 0,
    flip: bool = True,
    steps_per_epoch: int | None = None,
    batch_split: int = 1,
    mixed_precision: str | None = None,
    jit_compile: bool = False,
    remat: bool = False,
    checkpoint_every: int | None = 500,
    preemption: str = "auto",
    export_handle: str | None = None,
    registry: str | os.PathLike | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    data_dir: str | None = None,
    **overrides: Any,
) -> PretrainResult:
    """Pre-train a BiT network upstream with the BiT recipe.

    Args:
        model: a zoo name (its architecture, randomly initialised; ``"BiT-tiny"`` trains in minutes on a
            CPU) or a ``keras.Model`` with a head of the right size.
        dataset: anything :func:`bit_keras.data.sources.load_dataset` takes (a folder, arrays, a tf.data.Dataset, a
            tensorflow-datasets name such as ``"imagenet2012"``).
        preset: ``"BiT-S"``, ``"BiT-M"``, ``"BiT-L"``, ``"tiny"`` or an :class:`UpstreamConfig`; ``**overrides``
            change any of its values (``epochs``, ``batch_size``, ``lr_per_256``, ``warmup_steps``,
            ``decay_epochs``, ``weight_decay``, ``image_size``, ``loss``...).
        output_dir: checkpoints, TensorBoard logs, ``weights.npz``, ``model.keras`` and ``upstream.json``.
            Started again on the same folder, the run resumes and ends as an uninterrupted one would.
        strategy: ``"auto"`` (TPU, multi-worker, several GPUs or the default), a kind name, or a strategy.
        steps_per_epoch: default ``num_examples // batch_size``.
        batch_split: accumulate gradients over this many micro-batches (same update, less memory).
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (loss scaling); GroupNorm and
            weight-standardization statistics stay in float32.
        jit_compile: XLA for the per-replica forward/backward pass.
        remat: recompute each residual unit's activations in the backward pass instead of keeping them
            (:mod:`bit_keras.train.remat`): less memory for bigger batches or models, ~1/3 more compute.
        checkpoint_every: steps between checkpoints (the chief writes them).
        preemption: how a preemption notice is heard (:mod:`bit_keras.train.preemption`): ``"auto"`` (TensorFlow's
            ``PreemptionCheckpointHandler`` where it works, which under MultiWorkerMirroredStrategy stops
            every worker at the same step; else a SIGTERM flag), ``"tf"`` or ``"signal"``. Either saves a
            checkpoint after a completed step and raises :class:`Preempted`; needs ``output_dir``.
        export_handle: also export the feature extractor as a SavedModel into the registry under this
            handle (``publisher/name/variant/version``).
        registry: the registry root (default ``$BIT_KERAS_REGISTRY``, else under the cache).
        on_step: ``on_step(step, logs)`` after each step; raising from it stops the run (resumable).
    """
    if dataset is None:
        raise ConfigError("pretrain() needs dataset=: a folder, (images, labels) arrays, a tf.data.Dataset or a tfds name")
    config = get_preset(preset) if isinstance(preset, str) else preset
    config = config.replace(**overrides) if overrides else config
    strategy = get_strategy(strategy)
    chief = is_chief(strategy)

    train_ds, info = load_dataset(dataset, split=split, seed=seed, data_dir=data_dir)
    steps_per_epoch = int(steps_per_epoch or max(1, info.num_examples // config.batch_size))
    total = config.total_steps(steps_per_epoch)
    print(f"BiT upstream: {config.name} preset on {info.source}: {info.num_examples} images, "
          f"{info.num_classes} classes; {config.epochs} epochs x {steps_per_epoch} steps = {total} steps, "
          f"batch {config.batch_size} over {strategy.num_replicas_in_sync} replica(s), base lr {config.base_lr}, "
          f"warm-up {config.warmup_steps}, decays after epochs {list(config.decay_epochs)}, "
          f"{config.loss} cross-entropy, weight decay {config.weight_decay}")

    with dtype_policy(mixed_precision), strategy.scope():
        net = _build(model, info.num_classes, seed)
        optimizer = make_optimizer(net, momentum=config.momentum, mixed_precision=mixed_precision)
    step_fn = UpstreamStep(net, optimizer, strategy, batch_size=config.batch_size, batch_split=batch_split,
                           jit_compile=jit_compile, remat=remat, loss=config.loss, weight_decay=config.weight_decay)

    out = Path(output_dir) if output_dir is not None else None
    checkpointer = None
    scratch_dir = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        # Every worker saves (the variables are synchronised), but only the chief keeps its copy.
        ckpt_dir = out / "checkpoints" if chief else Path(tempfile.mkdtemp(prefix="bit_keras_worker_ckpt_"))
        scratch_dir = None if chief else ckpt_dir
        checkpointer = Checkpointer(net, optimizer, ckpt_dir)
    start = checkpointer.restore() if checkpointer is not None and chief else 0
    if checkpointer is not None and not chief and (out / "checkpoints").exists():
        # Non-chief workers resume from the chief's checkpoint.
        chief_ckpt = tf.train.latest_checkpoint(os.fspath(out / "checkpoints"))
        if chief_ckpt:
            checkpointer.checkpoint.restore(chief_ckpt).assert_existing_objects_matched()
            start = int(checkpointer.step.numpy())
    if start:
        print(f"Resuming from step {start} of {total}.")

    batches = upstream_pipeline(train_ds, info, image_size=config.image_size, batch_size=config.batch_size,
                                min_crop_area=config.min_crop_area, flip=flip, seed=seed).skip(start)
    iterator = iter(distribute_dataset(strategy, batches))
    writer = tf.summary.create_file_writer(os.fspath(out / "tensorboard")) if out is not None and chief else None
    history = new_history()

    guard_scope = (preemption_guard(strategy, checkpointer, preemption)
                   if checkpointer is not None else contextlib.nullcontext(None))
    with guard_scope as guard:
        def hook(done: int, logs: dict[str, float]) -> None:
            if guard is not None:
                guard.check(done)  # saves and raises Preempted once told to stop (every worker, same step)
            if on_step is not None:
                on_step(done, logs)

        try:
            run_loop(train_step=step_fn, batches=iterator, lr_at=lambda s: config.lr(s, steps_per_epoch),
                     start_step=start, steps=total, history=history, checkpointer=checkpointer,
                     checkpoint_every=checkpoint_every, writer=writer, progress=progress and chief, on_step=hook)
        finally:
            if scratch_dir is not None:
                shutil.rmtree(scratch_dir, ignore_errors=True)

    weights_path = handle = None
    if out is not None and chief:
        if checkpointer is not None:
            checkpointer.save(total)
        weights_path = save_npz(net, out / "weights.npz")
        save_model(net, out / "model.keras")
        write_json(out / "upstream.json", {
            "config": config.to_dict(), "steps": total, "steps_per_epoch": steps_per_epoch,
            "dataset": info.source, "num_examples": info.num_examples, "num_classes": info.num_classes,
            "class_names": info.class_names, "replicas": strategy.num_replicas_in_sync,
            **info.skipped_record(),
            "final_loss": history["loss"][-1] if history["loss"] else None,
            "model": model if isinstance(model, str) else net.name})
    if export_handle and chief:
        handle = export_to_registry(net, export_handle, registry=registry, metadata={
            "upstream_data": info.source, "upstream_preset": config.name, "steps": total,
            "architecture": model if isinstance(model, str) else net.name})
    return PretrainResult(net, history, config, total, out, weights_path, handle)


def export_to_registry(model: keras.Model, handle: str, *, registry: str | os.PathLike | None = None,
                       metadata: dict[str, Any] | None = None) -> str:
    """Export ``model``'s feature extractor as a Reusable SavedModel and publish it under ``handle``."""
    import hub_export

    with tempfile.TemporaryDirectory(prefix="bit_keras_export_") as tmp:
        export_dir = hub_export.export(model, Path(tmp) / "saved_model", kind="feature_vector")
        hub_export.Registry(registry).publish(export_dir, handle, metadata=metadata)
    return handle
