"""Fine-tune a BiT model on a new dataset with the BiT-HyperRule: :func:`transfer`, a recipe on the engine.

The recipe: load the data (a folder, arrays, a ``tf.data.Dataset`` or a tfds name; optionally few-shot
sampled), pick the HyperRule's resolution, schedule and mixup from its size, build the model with a
zero-initialised head, and train with SGD momentum 0.9, the HyperRule learning rate at every step and softmax
cross-entropy, evaluating at the end. Everything else (strategy, micro-batches, mixed precision, XLA,
checkpoints and exact resume, NaN stop, TensorBoard, progress) is the engine's
(:class:`bit_keras.train.engine.Trainer`). With an ``output_dir`` the run writes ``run.json``,
``history.json``, ``checkpoints/``, ``tensorboard/`` and at the end ``model.keras``, ``metrics.json`` and
``hyperparams.json`` (what the HyperRule chose and why, the data, what was skipped).

It runs on TensorFlow and on JAX (``KERAS_BACKEND=jax``): the same recipe, data pipeline and files, the engine
choosing the backend's step, strategy and checkpoint format (:mod:`bit_keras.train.parts`). On JAX the
``tf.data`` pipeline still feeds the batches (as NumPy arrays) and ``tf.summary`` writes TensorBoard logs.

Example:
    >>> import numpy as np
    >>> images = np.random.randint(0, 256, (40, 16, 16, 3), np.uint8)
    >>> result = transfer("BiT-tiny", (images, np.arange(40) % 4), weights=None, batch_size=8, steps=3,
    ...                   resize=20, crop=16, progress=False)  # doctest: +ELLIPSIS
    BiT transfer: ...
    >>> result.history["step"], result.model.output_shape
    ([1, 2, 3], (None, 4))
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from bit_keras.backend import require_backend

require_backend(("tensorflow", "jax"), "Fine-tuning (bit_keras.transfer)")
# (checked before importing TensorFlow, which a PyTorch install may lack)

import tensorflow as tf  # noqa: E402

from bit_keras.atomic import save_model, write_json
from bit_keras.data.pipelines import eval_pipeline, train_pipeline
from bit_keras.data.sources import DatasetInfo, load_dataset
from bit_keras.errors import ConfigError, DataError, MissingFileError
from bit_keras.recipes.hyperrule import TUNABLE_FIELDS, HyperParams, hyperparams_for
from bit_keras.recipes.transfer_model import build_transfer_model, is_hub_handle
from bit_keras.train.config import EngineConfig, RunConfig, field_names, route_overrides
from bit_keras.train.engine import Trainer
from bit_keras.train.parts import engine_parts
from bit_keras.train.metrics import evaluate_model

__all__ = ["TransferConfig", "TransferResult", "evaluate", "evaluate_run", "scale_schedule", "transfer"]

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HYPERPARAMS_FILE = "hyperparams.json"
DEFAULT_MODEL = "BiT-M-R50x1"
_SPLIT_RE = re.compile(r"^(train|test|validation|valid|val|dev|eval|holdout)\w*(\[[^\]]*\])?(\+.+)?$", re.I)


@dataclass(frozen=True)
class TransferConfig:
    """Every setting of a transfer run but the model, the data and where it goes, with its default.

    ``transfer(..., **overrides)`` accepts each field by name, each :class:`EngineConfig` field (``batch_split``,
    ``mixed_precision``, ``jit_compile``, ``remat``, ``checkpoint_every``, ``eval_every``, ``progress``...) and
    each HyperRule choice to override (:data:`~bit_keras.recipes.hyperrule.TUNABLE_FIELDS`: ``batch_size``,
    ``base_lr``, ``schedule``, ``mixup_alpha``, ``resize``, ``crop``, ``momentum``, ``weight_decay``,
    ``zero_head``).

    Attributes:
        split: the split of a tfds dataset.
        seed: few-shot sampling, shuffling, augmentation, mixup and random init.
        flip: random left-right flips.
        input_range: the range of the float images fed to the model (``(0, 1)``: TF Hub convention).
        strict: raise on bad examples (else skip them, see ``load_dataset``).
        data_dir: tensorflow-datasets data folder.
        rule: HyperRule variant: ``"code"`` (the released code) or ``"paper"`` (448/384 for large images).
        steps: the schedule's length; the HyperRule supports are scaled proportionally (:func:`scale_schedule`).
        eval_batch_size: evaluation batch; default the micro-batch.
        hyperrule: overrides of the HyperRule's choices (HyperParams fields).
        engine: the engine's settings (its ``batch_size`` is set from the HyperRule's).

    Example:
        >>> TransferConfig().replace(base_lr=0.01, remat=True, seed=3).hyperrule, TransferConfig().engine.checkpoint_every
        ({'base_lr': 0.01}, 100)
    """

    split: str = "train"
    seed: int = 0
    flip: bool = True
    input_range: tuple[float, float] = (0.0, 1.0)
    strict: bool = True
    data_dir: str | None = None
    rule: str = "code"
    steps: int | None = None
    eval_batch_size: int | None = None
    hyperrule: Mapping[str, Any] = field(default_factory=dict)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def replace(self, **overrides: Any) -> TransferConfig:
        """A copy with ``overrides`` routed to this config, the HyperRule overrides or the engine settings."""
        own = [f for f in field_names(TransferConfig) if f not in ("hyperrule", "engine")]
        engine = [f for f in field_names(EngineConfig) if f != "batch_size"]  # the HyperRule's batch_size
        routed = route_overrides(overrides, {"own": own, "hyperrule": TUNABLE_FIELDS, "engine": engine})
        own_values = routed["own"]
        if "input_range" in own_values:
            own_values["input_range"] = tuple(float(v) for v in own_values["input_range"])
        return dataclasses.replace(self, **own_values, hyperrule={**self.hyperrule, **routed["hyperrule"]},
                                   engine=self.engine.replace(**routed["engine"]))


@dataclass
class TransferResult:
    """What :func:`transfer` returns.

    Attributes:
        model: the fine-tuned ``keras.Model`` (images in ``input_range`` -> logits).
        history: per logged step ``step``, ``loss``, ``lr``, ``images_per_s`` (equal-length lists) and per
            evaluation ``val_step``, ``val_top1``, ``val_top5``, ``val_loss``. A resumed run's history includes
            the steps of the earlier, interrupted call (read back from ``history.json``).
        metrics: the final ``top1``, ``top5``, ``loss`` on the validation data (None without validation),
            ``train_loss``, ``steps``, ``images_per_s``, ``val_examples``.
        output_dir: where the run's files are, or None.
        hyperparams: the :class:`~bit_keras.recipes.hyperrule.HyperParams` used.
        dataset_info: what was measured about the training data.
        config: the :class:`TransferConfig` used.
    """

    model: keras.Model
    history: dict[str, list]
    metrics: dict[str, Any]
    output_dir: Path | None
    hyperparams: HyperParams
    dataset_info: DatasetInfo | None = None
    config: TransferConfig | None = None


def scale_schedule(schedule: Sequence[int], steps: int) -> tuple[int, ...]:
    """The schedule's supports scaled proportionally so that it ends at ``steps``.

    Supports that would collide at tiny ``steps`` are merged (fewer decays); the last is always ``steps``.

    Example:
        >>> scale_schedule([100, 200, 300, 400, 500], 50), scale_schedule([100, 200, 300, 400, 500], 2)
        ((10, 20, 30, 40, 50), (0, 1, 2))
    """
    steps = int(steps)
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    end = schedule[-1]
    out: list[int] = []
    for s in schedule[:-1]:
        v = min(int(s * steps // end), steps - 1)
        if not out or v > out[-1]:
            out.append(v)
    out.append(steps)
    if len(out) < 2:
        out.insert(0, 0)
    return tuple(out)


# ------------------------------------------------------------------------------------------------ helpers


def _describe_source(source: Any) -> str:
    if isinstance(source, tuple):
        return "arrays"
    if isinstance(source, tf.data.Dataset):
        return "tf.data.Dataset"
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def _is_tfds_name(source: Any) -> bool:
    return isinstance(source, str) and not (
        os.path.exists(os.path.expanduser(source)) or source.startswith(("/", "./", "../", "~", "\\"))
    )


def _load_validation(validation: Any, dataset: Any, info: DatasetInfo, cfg: TransferConfig
                     ) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The validation data: a split name of a tfds ``dataset``, or any source :func:`load_dataset` takes."""
    kwargs = {"num_classes": info.num_classes, "strict": cfg.strict, "data_dir": cfg.data_dir}
    if isinstance(validation, str) and _SPLIT_RE.match(validation) and not os.path.exists(validation):
        if not _is_tfds_name(dataset):
            raise DataError(
                f"validation={validation!r} is a split name, but the training data is {_describe_source(dataset)}, "
                "not a tensorflow-datasets name: pass the validation data itself (a folder, (images, labels) "
                "arrays or a tf.data.Dataset)"
            )
        name = dataset[len("tfds:"):] if dataset.startswith("tfds:") else dataset
        val_ds, val_info = load_dataset("tfds:" + name.partition(":")[0], split=validation, **kwargs)
    else:
        val_ds, val_info = load_dataset(validation, **kwargs)
    if info.class_names and val_info.class_names and list(info.class_names) != list(val_info.class_names):
        raise DataError(
            f"the validation classes {val_info.class_names} differ from the training classes {info.class_names}: "
            "labels would not line up; give both folders the same class sub-folders"
        )
    return val_ds, val_info


def _hyperparams(info: DatasetInfo, cfg: TransferConfig) -> HyperParams:
    hp = hyperparams_for(info.num_examples, info.image_size, cfg.rule, **cfg.hyperrule)
    if cfg.steps is not None:
        hp = dataclasses.replace(hp, schedule=scale_schedule(hp.schedule, cfg.steps),
                                 overridden=tuple(sorted({*hp.overridden, "schedule"})))
    return hp


def _model_description(model: Any) -> tuple[str, str]:
    if isinstance(model, keras.Model):
        return f"keras.Model {model.name!r}", "keras.Model"
    return model, "hub" if is_hub_handle(model) else "zoo"


# ---------------------------------------------------------------------------------------------- transfer


def transfer(
    model: str | os.PathLike | keras.Model = DEFAULT_MODEL,
    dataset: Any = None,
    *,
    validation: Any = None,
    examples_per_class: int | None = None,
    output_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = "pretrained",
    strategy: Any = None,
    config: TransferConfig | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    **overrides: Any,
) -> TransferResult:
    """Fine-tune ``model`` on ``dataset`` with the BiT-HyperRule.

    Args:
        model: a zoo name (``bit_keras.list_models()``; default ``BiT-M-R50x1``), a ``keras.Model`` (a
            classifier whose last Dense layer is named "head" gets a new zero head when its class count
            differs; a feature model gets one; trained in place under the default strategy) or a hub handle.
        dataset: anything :func:`bit_keras.data.sources.load_dataset` takes: a folder with one sub-folder per
            class, ``(images, labels)`` arrays, a ``tf.data.Dataset`` or a tensorflow-datasets name.
        validation: None (no validation; the final metrics are then None), a split name of a tfds ``dataset``
            (``"test"``, ``"train[90%:]"``), or any source ``load_dataset`` takes. Top-1/top-5/loss are
            measured at the end and every ``eval_every`` steps.
        examples_per_class: few-shot: train on exactly this many examples per class (drawn with ``seed``).
        output_dir: where the run's files go; None writes nothing (no resume). Started again on the same folder,
            a run resumes from its last checkpoint and ends exactly where an uninterrupted run would have.
        weights: for a zoo name: ``"pretrained"``, a local ``.npz`` path or URL, or None (random init seeded by
            ``seed``). For a ``keras.Model``: a path loads its backbone; ``"pretrained"``/None keep its weights.
        strategy: a name (``"auto"``, ``"mirrored"``...), None for the current one, or on TensorFlow a
            ``tf.distribute.Strategy``, on JAX a ``keras.distribution.DataParallel`` (``"auto"``/``"mirrored"``:
            over the local devices; ``"multi_worker"`` and ``tf.distribute`` objects need TensorFlow).
        config: a :class:`TransferConfig`; ``**overrides`` change any of its settings by name, e.g.
            ``batch_size=128, base_lr=0.001, steps=500, batch_split=4, mixed_precision="mixed_bfloat16"``.
        on_step: ``on_step(step, logs)`` after every completed step (after any checkpoint); raising from it
            stops the run, which a later identical call resumes.

    Returns:
        A :class:`TransferResult`.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (the last good checkpoint is kept).
        DataError: unusable data (named). ConfigError: unknown or inconsistent settings (named).

    Example:
        >>> import numpy as np
        >>> images = np.random.randint(0, 256, (40, 16, 16, 3), np.uint8)
        >>> r = transfer("BiT-tiny", (images, np.arange(40) % 4), weights=None, batch_size=8, steps=2,
        ...              resize=20, crop=16, progress=False, validation=(images[:8], np.arange(8) % 4))
        ... # doctest: +ELLIPSIS
        BiT transfer: ...
        >>> sorted(k for k in r.metrics if k.startswith("top"))
        ['top1', 'top5']
    """
    if dataset is None:
        raise ConfigError("transfer() needs dataset=: a folder, (images, labels) arrays, a tf.data.Dataset or a "
                          "tfds name")
    cfg = (config or TransferConfig()).replace(**overrides)
    parts = engine_parts()
    parts.check(cfg.engine)  # settings this backend cannot honour, before any work
    strategy = parts.get_strategy(strategy)  # before any TensorFlow op: TPU and multi-worker set-ups configure the runtime
    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    if not isinstance(model, (str, keras.Model)):
        raise ConfigError(f"model must be a zoo name, a hub handle or a keras.Model; got {type(model).__name__}")
    started = time.perf_counter()

    train_ds, info = load_dataset(dataset, split=cfg.split, examples_per_class=examples_per_class, seed=cfg.seed,
                                  strict=cfg.strict, data_dir=cfg.data_dir)
    hp = _hyperparams(info, cfg)
    cfg = dataclasses.replace(cfg, engine=cfg.engine.replace(batch_size=hp.batch_size))
    val = _load_validation(validation, dataset, info, cfg) if validation is not None else None
    model_desc, model_kind = _model_description(model)
    run = RunConfig(
        "transfer", model_desc, None if weights is None else os.fspath(weights), cfg.seed,
        data={"num_examples": info.num_examples, "num_classes": info.num_classes,
              "image_size": list(info.image_size), "examples_per_class": examples_per_class},
        settings={"hyperparams": hp.to_dict(), "flip": cfg.flip, "input_range": list(cfg.input_range),
                  "rule": cfg.rule, "model_kind": model_kind},
        engine=cfg.engine,
    )
    record = {
        "hyperparams": hp.to_dict(),
        "steps": hp.steps,
        "why": hp.describe(),
        "dataset": {"source": info.source or _describe_source(dataset), "split": cfg.split,
                    "num_examples": info.num_examples, "num_classes": info.num_classes,
                    "image_size": list(info.image_size), "examples_per_class": examples_per_class,
                    "class_names": info.class_names, **info.skipped_record()},
        "validation": None if val is None else {"source": val[1].source or _describe_source(validation),
                                                 "num_examples": val[1].num_examples},
        "run": run.to_dict(),
    }

    with Trainer(run, strategy=strategy, output_dir=output_dir) as trainer:
        e = cfg.engine
        micro = f" in {e.batch_split} micro-batches of {e.micro_batch}" if e.batch_split > 1 else ""
        print(f"BiT transfer: {model_desc} (weights {run.weights}) on {record['dataset']['source']}: "
              f"{info.num_examples} examples, {info.num_classes} classes, "
              f"images {info.image_size[0]}x{info.image_size[1]}")
        for line in hp.describe():
            print(f"  {line}")
        print(f"  batch {e.batch_size}{micro} on {trainer.replicas} replica(s); mixed "
              f"precision {e.mixed_precision or 'off'}; XLA {'on' if trainer.uses_xla else 'off'}; "
              f"output {output_dir or 'none'}")
        if trainer.work_dir is not None:
            write_json(trainer.work_dir / HYPERPARAMS_FILE, record)

        net = trainer.build(lambda: build_transfer_model(
            model, weights=weights, num_classes=info.num_classes, input_range=cfg.input_range,
            zero_head=hp.zero_head, seed=cfg.seed, progress=e.progress),
            loss="softmax", optimizer_weight_decay=hp.weight_decay, momentum=hp.momentum)
        trainer.text_summary("hyperparams", "\n\n".join(hp.describe()))
        eval_batch = int(cfg.eval_batch_size or e.micro_batch)

        def evaluate_now() -> dict[str, float]:
            assert val is not None
            batches = eval_pipeline(val[0], val[1], crop=hp.crop, batch_size=eval_batch, input_range=cfg.input_range)
            return evaluate_model(net, batches, num_classes=info.num_classes)

        batches = train_pipeline(train_ds, info, resize=hp.resize, crop=hp.crop, batch_size=hp.batch_size,
                                 flip=cfg.flip, mixup_alpha=hp.mixup_alpha, input_range=cfg.input_range,
                                 seed=cfg.seed, repeat=True)  # a function of (seed, step): resumes exactly
        stats = trainer.fit(batches, steps=hp.steps, lr_at=hp.lr, evaluate=evaluate_now if val else None,
                            on_step=on_step)
        final = evaluate_now() if val is not None else None
        if final is not None:
            trainer.record_eval(hp.steps, final)
            trainer.save_history()
            print(f"  validation after {hp.steps} steps: top-1 {final['top1']:.4f}, top-5 {final['top5']:.4f}, "
                  f"loss {final['loss']:.4f} ({final['num_examples']} examples)")
        history = trainer.history
        metrics = {
            "top1": final["top1"] if final else None,
            "top5": final["top5"] if final else None,
            "loss": final["loss"] if final else None,
            "val_examples": final["num_examples"] if final else 0,
            "train_loss": history["loss"][-1] if history["loss"] else None,
            "steps": hp.steps,
            "images_per_s": stats["images_per_s"],
            "wall_s": time.perf_counter() - started,
        }
        if trainer.work_dir is not None:
            write_json(trainer.work_dir / METRICS_FILE, metrics)
            write_json(trainer.work_dir / HYPERPARAMS_FILE, record)
            save_model(net, trainer.work_dir / MODEL_FILE)
    out = Path(output_dir) if output_dir is not None else None
    return TransferResult(net, history, metrics, out, hp, info, cfg)


# -------------------------------------------------------------------------------------------- evaluation


def evaluate(
    model: keras.Model,
    dataset: Any,
    *,
    crop: int,
    split: str = "test",
    batch_size: int = 64,
    input_range: Sequence[float] = (0.0, 1.0),
    class_names: Sequence[str] | None = None,
    strict: bool = True,
    data_dir: str | None = None,
) -> dict[str, float]:
    """Top-1, top-5 and loss of a classifier on any source :func:`load_dataset` takes (resized to ``crop``).

    Example:
        >>> import numpy as np
        >>> from bit_keras.models.resnet import resnet_v2
        >>> m = resnet_v2("R14x0.25", num_classes=2)
        >>> evaluate(m, (np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1]), crop=16)["top1"]
        0.5
    """
    num_classes = int(model.output_shape[-1])
    ds, info = load_dataset(dataset, split=split, num_classes=num_classes, strict=strict, data_dir=data_dir)
    if class_names and info.class_names and list(class_names) != list(info.class_names):
        raise DataError(f"the dataset's classes {info.class_names} differ from the model's {list(class_names)}: "
                        "evaluate on a folder with the training class sub-folders")
    batches = eval_pipeline(ds, info, crop=crop, batch_size=batch_size, input_range=tuple(input_range))
    return evaluate_model(model, batches, num_classes=num_classes)


def evaluate_run(run_dir: str | os.PathLike, dataset: Any, *, split: str = "test", batch_size: int = 64,
                 data_dir: str | None = None, safe_mode: bool | None = None) -> dict[str, float]:
    """Evaluate the ``model.keras`` of a finished :func:`transfer` run with the run's crop and input range.

    ``safe_mode`` is passed to ``keras.models.load_model``; by default it is off only for runs that fine-tuned
    a hub SavedModel (their ``model.keras`` loads that SavedModel, which Keras refuses in safe mode).

    Example:
        >>> evaluate_run("/no/such/run", "cifar10")
        Traceback (most recent call last):
        ...
        bit_keras.errors.MissingFileError: /no/such/run/model.keras does not exist: pass the output_dir of a finished transfer run
    """
    run_dir = Path(run_dir)
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise MissingFileError(f"{model_path} does not exist: pass the output_dir of a finished transfer run")
    record = json.loads((run_dir / HYPERPARAMS_FILE).read_text())
    settings = record["run"].get("settings", record["run"])  # bit-keras 0.1 runs kept these in "run" itself
    hub_run = settings.get("model_kind") == "hub"
    if hub_run:
        import hub_export.load  # noqa: F401  (registers SavedModelLayer)
    model = keras.models.load_model(model_path, safe_mode=not hub_run if safe_mode is None else safe_mode)
    return evaluate(model, dataset, crop=int(record["hyperparams"]["crop"]), split=split, batch_size=batch_size,
                    input_range=settings["input_range"], class_names=record["dataset"].get("class_names"),
                    data_dir=data_dir)
