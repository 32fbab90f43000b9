"""Upstream pre-training with the BiT recipe under ``tf.distribute``: :func:`pretrain`, a recipe on the engine.

The recipe (:mod:`bit_keras.recipes.upstream`): inception-style random crops and flips
(:func:`bit_keras.data.pipelines.upstream_pipeline`), softmax or sigmoid cross-entropy, L2 weight decay, a
linear warm-up then step decays by epoch. The engine (:class:`bit_keras.train.engine.Trainer`) runs it on
whatever strategy is found (one CPU, several GPUs, several workers, a TPU), keeps checkpoints (the chief writes
them), resumes after a crash or a pre-emption to the same result, and stops on a pre-emption notice. The
backbone is handed over as ``weights.npz`` in the official layout (for ``create_model(..., weights=...)`` and
``transfer``), ``model.keras``, and optionally a SavedModel published in a hub registry.

TensorFlow only, by nature (``tf.distribute``): importing this module on another Keras backend raises
:class:`~bit_keras.errors.BackendError` naming ``KERAS_BACKEND=tensorflow``. The weights it writes load on every
backend.

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

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from bit_keras.backend import require_tensorflow

require_tensorflow("Upstream pre-training (bit_keras.pretrain, tf.distribute)")
# (checked before importing TensorFlow, which a JAX or PyTorch install may lack)

import tensorflow as tf  # noqa: E402

from bit_keras.atomic import save_model, write_json
from bit_keras.data.pipelines import upstream_pipeline
from bit_keras.data.sources import load_dataset
from bit_keras.errors import ConfigError
from bit_keras.models.create import create_model
from bit_keras.models.policy import seeded_init
from bit_keras.models.presets import get_model_info
from bit_keras.models.weights import save_npz
from bit_keras.recipes.upstream import UpstreamConfig, get_preset
from bit_keras.train.config import EngineConfig, RunConfig, field_names, route_overrides
from bit_keras.train.distribute import get_strategy
from bit_keras.train.engine import Trainer

__all__ = ["PretrainConfig", "PretrainResult", "export_to_registry", "pretrain"]


@dataclass(frozen=True)
class PretrainConfig:
    """Every setting of a pre-training run but the model, the data, the preset and where it goes.

    ``pretrain(..., **overrides)`` accepts each field by name, each :class:`UpstreamConfig` field of the
    preset (``epochs``, ``batch_size``, ``lr_per_256``, ``warmup_steps``, ``decay_epochs``, ``weight_decay``,
    ``image_size``, ``loss``...) and each :class:`EngineConfig` field (``batch_split``, ``mixed_precision``,
    ``jit_compile``, ``remat``, ``checkpoint_every``, ``preemption``, ``progress``...).

    Attributes:
        split: the split of a tfds dataset.
        seed: shuffling, augmentation and random init.
        flip: random left-right flips.
        strict: raise on bad examples (else skip them).
        data_dir: tensorflow-datasets data folder.
        steps_per_epoch: default ``num_examples // batch_size``.
        upstream: overrides of the preset's values.
        engine: the engine's settings: checkpoints every 500 steps, pre-emption notices heard (``"auto"``).

    Example:
        >>> PretrainConfig().replace(epochs=3, remat=True).upstream
        {'epochs': 3}
    """

    split: str = "train"
    seed: int = 0
    flip: bool = True
    strict: bool = True
    data_dir: str | None = None
    steps_per_epoch: int | None = None
    upstream: Mapping[str, Any] = field(default_factory=dict)
    engine: EngineConfig = field(default_factory=lambda: EngineConfig(checkpoint_every=500, preemption="auto"))

    def replace(self, **overrides: Any) -> PretrainConfig:
        """A copy with ``overrides`` routed to this config, the preset's values or the engine settings."""
        own = [f for f in field_names(PretrainConfig) if f not in ("upstream", "engine")]
        upstream = [f for f in field_names(UpstreamConfig) if f not in ("name", "expected")]
        engine = [f for f in field_names(EngineConfig) if f != "batch_size"]  # the preset's batch_size
        routed = route_overrides(overrides, {"own": own, "upstream": upstream, "engine": engine})
        return dataclasses.replace(self, **routed["own"], upstream={**self.upstream, **routed["upstream"]},
                                   engine=self.engine.replace(**routed["engine"]))


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns: the model, the history, the recipe, where things went."""

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
    export_handle: str | None = None,
    registry: str | os.PathLike | None = None,
    config: PretrainConfig | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    **overrides: Any,
) -> PretrainResult:
    """Pre-train a BiT network upstream with the BiT recipe.

    Args:
        model: a zoo name (its architecture, randomly initialised; ``"BiT-tiny"`` trains in minutes on a
            CPU) or a ``keras.Model`` with a head of the right size.
        dataset: anything :func:`bit_keras.data.sources.load_dataset` takes (a folder, arrays, a tf.data.Dataset,
            a tensorflow-datasets name such as ``"imagenet2012"``).
        preset: ``"BiT-S"``, ``"BiT-M"``, ``"BiT-L"``, ``"tiny"`` or an :class:`UpstreamConfig`.
        output_dir: checkpoints, TensorBoard logs, ``weights.npz``, ``model.keras`` and ``upstream.json``.
            Started again on the same folder, the run resumes and ends as an uninterrupted one would.
        strategy: ``"auto"`` (TPU, multi-worker, several GPUs or the default), a kind name, or a strategy.
        export_handle: also export the feature extractor as a SavedModel into the registry under this
            handle (``publisher/name/variant/version``).
        registry: the registry root (default ``$BIT_KERAS_REGISTRY``, else under the cache).
        config: a :class:`PretrainConfig`; ``**overrides`` change any of its settings or the preset's by name
            (``epochs=30, batch_size=64, batch_split=2, remat=True, preemption="signal"``...). A pre-emption
            notice (``preemption``, needs ``output_dir``) saves a checkpoint after a completed step and raises
            :class:`~bit_keras.errors.Preempted`.
        on_step: ``on_step(step, logs)`` after each step; raising from it stops the run (resumable).
    """
    if dataset is None:
        raise ConfigError("pretrain() needs dataset=: a folder, (images, labels) arrays, a tf.data.Dataset or a "
                          "tfds name")
    cfg = (config or PretrainConfig()).replace(**overrides)
    strategy = get_strategy(strategy)  # before any TensorFlow op: TPU and multi-worker set-ups configure the runtime
    recipe = get_preset(preset) if isinstance(preset, str) else preset
    recipe = recipe.replace(**cfg.upstream) if cfg.upstream else recipe
    cfg = dataclasses.replace(cfg, engine=cfg.engine.replace(batch_size=recipe.batch_size))

    train_ds, info = load_dataset(dataset, split=cfg.split, seed=cfg.seed, strict=cfg.strict, data_dir=cfg.data_dir)
    steps_per_epoch = int(cfg.steps_per_epoch or max(1, info.num_examples // recipe.batch_size))
    total = recipe.total_steps(steps_per_epoch)
    model_name = model if isinstance(model, str) else model.name
    run = RunConfig("pretrain", model_name, None, cfg.seed,
                    data={"source": info.source, "num_examples": info.num_examples, "num_classes": info.num_classes},
                    settings={"upstream": recipe.to_dict(), "steps_per_epoch": steps_per_epoch, "flip": cfg.flip},
                    engine=cfg.engine)

    with Trainer(run, strategy=strategy, output_dir=output_dir) as trainer:
        print(f"BiT upstream: {recipe.name} preset on {info.source}: {info.num_examples} images, "
              f"{info.num_classes} classes; {recipe.epochs} epochs x {steps_per_epoch} steps = {total} steps, "
              f"batch {recipe.batch_size} over {trainer.strategy.num_replicas_in_sync} replica(s), base lr "
              f"{recipe.base_lr}, warm-up {recipe.warmup_steps}, decays after epochs {list(recipe.decay_epochs)}, "
              f"{recipe.loss} cross-entropy, weight decay {recipe.weight_decay}")
        net = trainer.build(lambda: _build(model, info.num_classes, cfg.seed), loss=recipe.loss,
                            weight_decay=recipe.weight_decay, momentum=recipe.momentum)
        if trainer.start:
            print(f"Resuming from step {trainer.start} of {total}.")
        batches = upstream_pipeline(train_ds, info, image_size=recipe.image_size, batch_size=recipe.batch_size,
                                    min_crop_area=recipe.min_crop_area, flip=cfg.flip, seed=cfg.seed)
        trainer.fit(batches, steps=total, lr_at=lambda s: recipe.lr(s, steps_per_epoch), on_step=on_step)
        history = trainer.history
        weights_path = handle = None
        out = trainer.output_dir
        if out is not None and trainer.chief:
            weights_path = save_npz(net, out / "weights.npz")
            save_model(net, out / "model.keras")
            write_json(out / "upstream.json", {
                "config": recipe.to_dict(), "steps": total, "steps_per_epoch": steps_per_epoch,
                "dataset": info.source, "num_examples": info.num_examples, "num_classes": info.num_classes,
                "class_names": info.class_names, "replicas": trainer.strategy.num_replicas_in_sync,
                **info.skipped_record(),
                "final_loss": history["loss"][-1] if history["loss"] else None, "model": model_name})
        if export_handle and trainer.chief:
            handle = export_to_registry(net, export_handle, registry=registry,
                                        arch=get_model_info(model).spec if isinstance(model, str) else None,
                                        metadata={"upstream_data": info.source, "upstream_preset": recipe.name,
                                                  "steps": total, "architecture_name": model_name})
    return PretrainResult(net, history, recipe, total, out, weights_path, handle)


def export_to_registry(model: keras.Model, handle: str, *, registry: str | os.PathLike | None = None,
                       arch: Any = None, metadata: dict[str, Any] | None = None) -> str:
    """Export ``model``'s feature extractor as a Reusable SavedModel and publish it under ``handle``.

    Example:
        >>> import tempfile
        >>> from bit_keras.models.resnet import resnet_v2
        >>> export_to_registry(resnet_v2("R14x0.25"), "me/tiny/fv/1", registry=tempfile.mkdtemp())
        'me/tiny/fv/1'
    """
    from hub_export.saved_model import export
    from hub_export.registry import Registry

    with tempfile.TemporaryDirectory(prefix="bit_keras_export_") as tmp:
        export_dir = export(model, Path(tmp) / "saved_model", kind="feature_vector", arch=arch)
        Registry(registry).publish(export_dir, handle, metadata=metadata)
    return handle
