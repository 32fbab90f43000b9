"""Fine-tune a BiT model on a new dataset with the BiT-HyperRule: :func:`transfer`.

One call loads the data (a folder, arrays, a ``tf.data.Dataset`` or a tfds name; optionally few-shot
sampled), picks the HyperRule's resolution, schedule and mixup from its size, builds the model with a
zero-initialised head under a ``tf.distribute`` strategy, and runs a custom training loop: SGD momentum
0.9, the HyperRule learning rate set every step, softmax cross-entropy averaged over the global batch,
gradient accumulation (``batch_split``), optional XLA and mixed precision. With an ``output_dir`` it
writes checkpoints (and resumes from them when started again), TensorBoard scalars, and at the end
``model.keras``, ``metrics.json``, ``hyperparams.json`` and ``history.json``.

Example:
    >>> import numpy as np
    >>> from bit_keras.models.spec import ArchSpec, register_arch
    >>> from bit_keras.models.presets import ModelInfo, register_model
    >>> _ = register_arch("doc-tiny", ArchSpec((1, 1, 1, 1), 0.25, groups=8))
    >>> _ = register_model(ModelInfo("doc-tiny", "doc-tiny", "none", 10, None, 32), overwrite=True)
    >>> images = np.random.randint(0, 256, (40, 16, 16, 3), np.uint8)
    >>> result = transfer("doc-tiny", (images, np.arange(40) % 4), weights=None, batch_size=8, steps=3,
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
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from bit_keras.errors import ConfigError, DataError, MissingFileError
from bit_keras.atomic import json_default, save_model, write_json
from bit_keras.data.sources import DatasetInfo, load_dataset
from bit_keras.data.pipelines import eval_pipeline, train_pipeline
from bit_keras.recipes.hyperrule import HyperParams, hyperparams_for
from bit_keras.train.engine import (
    MIXED_PRECISION_POLICIES,
    Checkpointer,
    TrainingDivergedError,
    TrainStep,
    ensure_dir,
    evaluate_model,
    make_optimizer,
    new_history,
    record_eval,
    run_loop,
    truncate_history,
    weights_finite,
)
from bit_keras.models.policy import dtype_policy
from bit_keras.recipes.transfer_model import build_transfer_model, is_hub_handle

__all__ = ["TrainingDivergedError", "TransferResult", "evaluate", "evaluate_run", "scale_schedule", "transfer"]

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HYPERPARAMS_FILE = "hyperparams.json"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
# Run settings that must match for a run to resume from another's checkpoints.
_RESUME_KEYS = ("hyperparams", "model", "weights", "seed", "flip", "input_range", "dataset_fingerprint")
_SPLIT_RE = re.compile(r"^(train|test|validation|valid|val|dev|eval|holdout)\w*(\[[^\]]*\])?(\+.+)?$", re.I)


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
    """

    model: keras.Model
    history: dict[str, list]
    metrics: dict[str, Any]
    output_dir: Path | None
    hyperparams: HyperParams
    dataset_info: DatasetInfo | None = None


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


def _load_validation(validation: Any, dataset: Any, info: DatasetInfo, *, strict: bool,
                     data_dir: str | None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The validation data: a split name of a tfds ``dataset``, or any source :func:`load_dataset` takes."""
    if isinstance(validation, str) and _SPLIT_RE.match(validation) and not os.path.exists(validation):
        if not _is_tfds_name(dataset):
            raise DataError(
                f"validation={validation!r} is a split name, but the training data is {_describe_source(dataset)}, "
                "not a tensorflow-datasets name: pass the validation data itself (a folder, (images, labels) "
                "arrays or a tf.data.Dataset)"
            )
        name = dataset[len("tfds:"):] if dataset.startswith("tfds:") else dataset
        source: Any = "tfds:" + name.partition(":")[0]
        val_ds, val_info = load_dataset(source, split=validation, num_classes=info.num_classes, strict=strict,
                                        data_dir=data_dir)
    else:
        val_ds, val_info = load_dataset(validation, num_classes=info.num_classes, strict=strict, data_dir=data_dir)
    if info.class_names and val_info.class_names and list(info.class_names) != list(val_info.class_names):
        raise DataError(
            f"the validation classes {val_info.class_names} differ from the training classes {info.class_names}: "
            "labels would not line up; give both folders the same class sub-folders"
        )
    return val_ds, val_info


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    try:
        from bit_keras.train.distribute import is_chief
    except ImportError:  # pragma: no cover
        return True
    return is_chief(strategy)


def _check_resumable(path: Path, run: dict[str, Any]) -> None:
    try:
        saved = json.loads(path.read_text())["run"]
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{path} is missing or unreadable ({err}), but {path.parent} has checkpoints: "
                         "use a new output_dir or delete the old run") from err
    diff = [k for k in _RESUME_KEYS if json.loads(json.dumps(run.get(k), default=json_default)) != saved.get(k)]
    if diff:
        shown = "; ".join(f"{k}: saved {saved.get(k)!r}, now {run.get(k)!r}" for k in diff)
        raise ConfigError(
            f"output_dir {path.parent} holds a different run, which cannot be resumed with these settings ({shown}): "
            "use a new output_dir, or delete the old one to start over"
        )


# ---------------------------------------------------------------------------------------------- transfer


def transfer(
    model: str | keras.Model = "BiT-M-R152x4",
    dataset: Any = None,
    *,
    examples_per_class: int | None = None,
    validation: Any = None,
    output_dir: str | os.PathLike | None = None,
    batch_size: int = 512,
    batch_split: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    mixed_precision: str | None = None,
    weights: str | os.PathLike | None = "pretrained",
    split: str = "train",
    seed: int = 0,
    flip: bool = True,
    rule: str = "code",
    steps: int | None = None,
    checkpoint_every: int | None = 100,
    eval_every: int | None = None,
    eval_batch_size: int | None = None,
    jit_compile: bool = False,
    remat: bool = False,
    input_range: Sequence[float] = (0.0, 1.0),
    strict: bool = True,
    progress: bool = True,
    data_dir: str | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    **overrides: Any,
) -> TransferResult:
    """Fine-tune ``model`` on ``dataset`` with the BiT-HyperRule.

    Args:
        model: a zoo name (``bit_keras.list_models()``), a ``keras.Model`` (a classifier whose last Dense layer
            is named "head" gets a new zero head when its class count differs; a feature model gets one; the
            model is trained in place under the default strategy) or a hub handle (``hub_export.load``).
        dataset: anything :func:`bit_keras.data.sources.load_dataset` takes: a folder with one sub-folder per class,
            ``(images, labels)`` arrays, a ``tf.data.Dataset`` or a tensorflow-datasets name.
        examples_per_class: few-shot: train on exactly this many examples per class (drawn with ``seed``).
        validation: None (no validation; the final metrics are then None), a split name of a tfds ``dataset``
            (``"test"``, ``"train[90%:]"``), or any source ``load_dataset`` takes. Top-1/top-5/loss are measured
            at the end and every ``eval_every`` steps.
        output_dir: where checkpoints, TensorBoard logs and the final files go; None writes nothing (no resume).
            Started again on the same folder, a run resumes from its last checkpoint and ends exactly where an
            uninterrupted run would have.
        batch_size: the global batch (HyperRule: 512); the learning rate is not rescaled when you change it.
        batch_split: accumulate gradients over this many micro-batches of ``batch_size / batch_split``.
        strategy: a ``tf.distribute.Strategy``; None uses ``tf.distribute.get_strategy()``.
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (with loss scaling) for the model's
            layers (models built here; a given ``keras.Model`` keeps its own policy).
        weights: for a zoo name: ``"pretrained"``, a local ``.npz`` path or URL, or None (random init seeded by
            ``seed``). For a ``keras.Model``: a path loads its backbone; ``"pretrained"``/None keep its weights.
        split: the split of a tfds ``dataset``.
        seed: few-shot sampling, shuffling, augmentation, mixup and random init.
        flip: random left-right flips.
        rule: HyperRule variant: ``"code"`` (the released code) or ``"paper"`` (448/384 for large images).
        steps: the schedule's length; the HyperRule supports are scaled proportionally (:func:`scale_schedule`).
        checkpoint_every: save a checkpoint every this many steps (None or 0: only at the end).
        eval_every: evaluate on ``validation`` every this many steps (besides the end).
        eval_batch_size: evaluation batch; default the micro-batch ``batch_size / batch_split``.
        jit_compile: compile the per-replica forward/backward pass with XLA.
        remat: recompute each residual unit's activations in the backward pass (:mod:`bit_keras.train.remat`):
            less memory for a bigger batch, ~1/3 more compute, same updates. Not for hub handles.
        input_range: the range of the float images fed to the model (``(0, 1)``: TF Hub convention;
            the model maps it to BiT's [-1, 1] itself).
        strict: raise on bad examples (else skip them, see ``load_dataset``).
        progress: show a progress bar (loss, lr, images/s). The chosen hyperparameters are printed regardless.
        data_dir: tensorflow-datasets data folder.
        on_step: ``on_step(step, logs)`` after every completed step (after any checkpoint); raising from it
            stops the run, which a later identical call resumes.
        **overrides: any HyperParams field: ``base_lr``, ``schedule``, ``mixup_alpha``, ``resize``, ``crop``,
            ``momentum``, ``weight_decay``, ``zero_head``.

    Returns:
        A :class:`TransferResult`.

    Raises:
        TrainingDivergedError: the loss became NaN/inf (the last good checkpoint is kept).
        DataError: unusable data (named). ValueError / TypeError: inconsistent options (named).

    Example:
        >>> import numpy as np
        >>> images = np.random.randint(0, 256, (40, 16, 16, 3), np.uint8)
        >>> r = transfer("doc-tiny", (images, np.arange(40) % 4), weights=None, batch_size=8, steps=2,
        ...              resize=20, crop=16, progress=False, validation=(images[:8], np.arange(8) % 4))
        ... # doctest: +ELLIPSIS
        BiT transfer: ...
        >>> sorted(k for k in r.metrics if k.startswith("top"))
        ['top1', 'top5']
    """
    if dataset is None:
        raise ConfigError(
            "transfer() needs dataset=: a folder, (images, labels) arrays, a tf.data.Dataset or a tfds name"
        )
    if mixed_precision not in (None, *MIXED_PRECISION_POLICIES):
        raise ConfigError(f"mixed_precision must be None or one of {MIXED_PRECISION_POLICIES}, got {mixed_precision!r}")
    batch_split = int(batch_split or 1)
    if batch_split < 1 or batch_size % batch_split:
        raise ConfigError(f"batch_split ({batch_split}) must be >= 1 and divide batch_size ({batch_size})")
    if "batch_size" in overrides:
        raise ConfigError("pass batch_size as its own argument, not as a HyperParams override")
    if isinstance(model, os.PathLike):
        model = os.fspath(model)  # a SavedModel folder: a hub handle
    if isinstance(strategy, str):
        from bit_keras.train.distribute import get_strategy

        strategy = get_strategy(strategy)
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ConfigError(f"strategy must be a tf.distribute.Strategy, a name or None, got {type(strategy).__name__}")
    input_range = tuple(float(v) for v in input_range)  # type: ignore[assignment]
    started = time.perf_counter()

    # ----- data and hyperparameters
    train_ds, info = load_dataset(dataset, split=split, examples_per_class=examples_per_class, seed=seed,
                                  strict=strict, data_dir=data_dir)
    hp = hyperparams_for(info.num_examples, info.image_size, rule, batch_size=batch_size, **overrides)
    if steps is not None:
        hp = dataclasses.replace(hp, schedule=scale_schedule(hp.schedule, steps),
                                 overridden=tuple(sorted({*hp.overridden, "schedule"})))
    val = None
    if validation is not None:
        val = _load_validation(validation, dataset, info, strict=strict, data_dir=data_dir)
    eval_batch = int(eval_batch_size or batch_size // batch_split)

    model_desc = model if isinstance(model, str) else f"keras.Model {model.name!r}"
    model_kind = "keras.Model" if not isinstance(model, str) else "hub" if is_hub_handle(model) else "zoo"
    run = {
        "model": model_desc,
        "model_kind": model_kind,
        "weights": None if weights is None else os.fspath(weights),
        "seed": seed,
        "flip": flip,
        "rule": rule,
        "input_range": list(input_range),
        "hyperparams": hp.to_dict(),
        "dataset_fingerprint": [info.num_examples, info.num_classes, list(info.image_size), examples_per_class],
        "batch_split": batch_split,
        "mixed_precision": mixed_precision,
        "jit_compile": jit_compile,
        "replicas": strategy.num_replicas_in_sync,
    }
    record = {
        "hyperparams": hp.to_dict(),
        "steps": hp.steps,
        "why": hp.describe(),
        "dataset": {
            "source": info.source or _describe_source(dataset),
            "split": split,
            "num_examples": info.num_examples,
            "num_classes": info.num_classes,
            "image_size": list(info.image_size),
            "examples_per_class": examples_per_class,
            "class_names": info.class_names,
            **info.skipped_record(),  # the count and the first 1000 (item, reason)
        },
        "validation": None if val is None else {
            "source": val[1].source or _describe_source(validation),
            "num_examples": val[1].num_examples,
        },
        "run": run,
    }

    # ----- output folder, resume check
    out = ensure_dir(output_dir) if output_dir is not None else None
    resume_from = tf.train.latest_checkpoint(os.fspath(out / CHECKPOINT_DIR)) if out is not None else None
    if resume_from:
        _check_resumable(out / HYPERPARAMS_FILE, run)  # type: ignore[operator]
    # Multi-worker: only the chief writes into output_dir; the other workers write (the same) files to a
    # scratch folder and resume from the chief's checkpoints.
    work = out if out is None or _is_chief(strategy) else Path(tempfile.mkdtemp(prefix="bit_keras_worker_"))
    if work is not None:
        write_json(work / HYPERPARAMS_FILE, record)

    micro = f" in {batch_split} micro-batches of {batch_size // batch_split}" if batch_split > 1 else ""
    print(f"BiT transfer: {model_desc} (weights {run['weights']}) on {record['dataset']['source']}: "
          f"{info.num_examples} examples, {info.num_classes} classes, images {info.image_size[0]}x{info.image_size[1]}")
    for line in hp.describe():
        print(f"  {line}")
    print(f"  batch {batch_size}{micro} on {strategy.num_replicas_in_sync} replica(s); mixed precision "
          f"{mixed_precision or 'off'}; XLA {'on' if jit_compile else 'off'}; output {out or 'none'}")

    # ----- model, optimizer, checkpoint
    with strategy.scope(), dtype_policy(mixed_precision):
        net = build_transfer_model(model, weights=weights, num_classes=info.num_classes, input_range=input_range,
                                   zero_head=hp.zero_head, seed=seed, progress=progress)
        optimizer = make_optimizer(net, momentum=hp.momentum, weight_decay=hp.weight_decay,
                                   mixed_precision=mixed_precision)
        step_fn = TrainStep(net, optimizer, strategy, batch_size=batch_size, batch_split=batch_split,
                            jit_compile=jit_compile, remat=remat)
        checkpointer = Checkpointer(net, optimizer, work / CHECKPOINT_DIR) if work is not None else None
    start = checkpointer.restore(resume_from) if checkpointer is not None else 0
    history = new_history()
    if start and out is not None and (out / HISTORY_FILE).exists():
        history = truncate_history(json.loads((out / HISTORY_FILE).read_text()), start)
    if start:
        print(f"  resuming from step {start} ({checkpointer.latest})")  # type: ignore[union-attr]

    def save_history() -> None:
        if work is not None:
            write_json(work / HISTORY_FILE, history)

    def evaluate_now() -> dict[str, float]:
        assert val is not None
        batches = eval_pipeline(val[0], val[1], crop=hp.crop, batch_size=eval_batch, input_range=input_range)
        return evaluate_model(net, batches, num_classes=info.num_classes)

    # ----- training
    writer = tf.summary.create_file_writer(os.fspath(work / TENSORBOARD_DIR)) if work is not None else None
    try:
        if writer is not None and not start:
            with writer.as_default(step=0):
                tf.summary.text("hyperparams", "\n\n".join(hp.describe()))
        loop_stats = {"images_per_s": float("nan"), "loss": float("nan"), "steps_run": 0}
        if start < hp.steps:
            ds = train_pipeline(train_ds, info, resize=hp.resize, crop=hp.crop, batch_size=batch_size, flip=flip,
                                mixup_alpha=hp.mixup_alpha, input_range=input_range, seed=seed, repeat=True)
            ds = ds.skip(start).take(hp.steps - start)  # the stream is a function of (seed, step): resume exactly
            options = tf.data.Options()
            options.deterministic = True
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            batches = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))
            loop_stats = run_loop(
                train_step=step_fn, batches=batches, lr_at=hp.lr, start_step=start, steps=hp.steps,
                history=history, checkpointer=checkpointer, checkpoint_every=checkpoint_every,
                save_history=save_history, evaluate=evaluate_now if val is not None else None,
                eval_every=eval_every, writer=writer, progress=progress, on_step=on_step,
            )
            if not weights_finite(net):
                last = hp.steps - 1
                raise TrainingDivergedError(last, hp.lr(last) or 0.0, loop_stats["loss"],
                                            checkpointer.latest if checkpointer else None,
                                            what="model's weights after it")
            if checkpointer is not None:
                checkpointer.save(hp.steps)

        # ----- final evaluation
        final = evaluate_now() if val is not None else None
        if final is not None:
            while history["val_step"] and history["val_step"][-1] >= hp.steps:  # a finished run started again
                for key in ("val_step", "val_top1", "val_top5", "val_loss"):
                    history[key].pop()
            record_eval(history, writer, hp.steps, final)
            print(f"  validation after {hp.steps} steps: top-1 {final['top1']:.4f}, top-5 {final['top5']:.4f}, "
                  f"loss {final['loss']:.4f} ({final['num_examples']} examples)")
    finally:
        if writer is not None:
            writer.close()

    # ----- files
    metrics = {
        "top1": final["top1"] if final else None,
        "top5": final["top5"] if final else None,
        "loss": final["loss"] if final else None,
        "val_examples": final["num_examples"] if final else 0,
        "train_loss": history["loss"][-1] if history["loss"] else None,
        "steps": hp.steps,
        "images_per_s": loop_stats["images_per_s"],
        "wall_s": time.perf_counter() - started,
    }
    if work is not None:
        save_history()
        write_json(work / METRICS_FILE, metrics)
        write_json(work / HYPERPARAMS_FILE, record)
        save_model(net, work / MODEL_FILE)
    return TransferResult(net, history, metrics, out, hp, info)


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
        >>> m = resnet_v2((1, 1, 1, 1), 0.25, num_classes=2, groups=8)
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
    import bit_keras.models.layers  # noqa: F401  (registers the custom layers for deserialization)

    record = json.loads((run_dir / HYPERPARAMS_FILE).read_text())
    hub_run = record["run"].get("model_kind") == "hub"
    if hub_run:
        import hub_export.load  # noqa: F401  (registers SavedModelLayer)
    model = keras.models.load_model(model_path, safe_mode=not hub_run if safe_mode is None else safe_mode)
    return evaluate(model, dataset, crop=int(record["hyperparams"]["crop"]), split=split, batch_size=batch_size,
                    input_range=record["run"]["input_range"], class_names=record["dataset"].get("class_names"),
                    data_dir=data_dir)
