"""What one row of ``bit-keras bench`` runs, in this process: the library's code, timed.

* model rows (``bit_keras``, ``baseline_resnet50v2``, ``diag_*``), built by :func:`benchmarks.bench.cases.build_model`
  under the strategy's scope and :func:`bit_keras.models.policy.dtype_policy`, as the engine builds them
  (:meth:`bit_keras.train.engine.Trainer.build`):

  - ``inference``: ``model(images, training=False)``, eagerly, in a ``tf.function`` or XLA-compiled;
  - ``train``: the engine's :class:`bit_keras.train.step.TrainStep` (softmax cross-entropy on one-hot labels,
    SGD with momentum from :func:`~bit_keras.train.step.make_optimizer`, the default strategy), as is
    (``function``), ``jit_compile=True`` (``xla``), ``remat=True`` (``remat``) or ``run_eagerly=True``
    (``eager``);
* ``saved_model`` / ``saved_model_folded``: ``hub_export.export(model, dir, kind="classifier",
  fold_standardization=...)`` loaded with ``tf.saved_model.load``, outputs checked against the Keras model;
* ``keras_folded``: the Keras serving form, ``bit_keras.fold_standardization(model)`` (before it exists there:
  ``hub_export.saved_model.fold_weight_standardization``), the same network with plain ``Conv2D`` layers and
  standardized kernels, outputs checked against the Keras model;
* ``input_pipeline``: :func:`bit_keras.data.sources.load_dataset` on a folder of generated JPEGs and
  :func:`bit_keras.data.pipelines.train_pipeline` (decode, resize, random crop, flip, batch), alone.

Each case is prepared by a :class:`CaseRunner` (build, warm up), which then times one repeat per call: the
harness's workers run it between interleaved rounds, :func:`run_case` runs its repeats back to back.

Example:
    >>> row = run_case(CaseSpec("bit_keras", "train", arch=TINY_ARCH, image_size=32, batch_size=2,
    ...                         warmup=1, repeats=1, min_seconds=0, min_steps=1))
    >>> row["status"], row["steps"], row["images_per_s"] > 0, row["mem_kind"]
    ('ok', 1, True, 'rss_hwm_delta')
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from benchmarks.bench.cases import (ALL_CASES, BIT_CASE, FOLDED_CASE, KERAS_FOLDED_CASE, MODEL_CASES, NUM_CLASSES,
                                   PIPELINE_CASE, SAVED_MODEL_CASE, CaseSpec, build_model, case_gflops)
from benchmarks.bench.cases import TINY_ARCH  # noqa: F401 - the examples' architecture
from benchmarks.bench.op_profile import profile_ops
from benchmarks.bench.targets import load_targets
from benchmarks.bench.timing import MemoryProbe, load1, summarise_repeats, time_repeat, warm_up

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# TrainStep's arguments for each training variant.
TRAIN_STEP_OPTIONS: dict[str, dict[str, bool]] = {
    "function": {}, "xla": {"jit_compile": True}, "remat": {"remat": True}, "eager": {"run_eagerly": True},
}
LEARNING_RATE = 0.003
PIPELINE_CLASSES = 2


# --------------------------------------------------------------------------- model rows


def inputs(spec: CaseSpec, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Random images in [0, 1] and one-hot labels of :data:`~benchmarks.bench.cases.NUM_CLASSES` classes.

    Example:
        >>> images, labels = inputs(CaseSpec("bit_keras", "train", image_size=32, batch_size=2))
        >>> images.shape.as_list(), labels.shape.as_list(), float(labels.numpy().sum())
        ([2, 32, 32, 3], [2, 1000], 2.0)
    """
    import tensorflow as tf

    g = tf.random.Generator.from_seed(seed)
    images = g.uniform((spec.batch_size, spec.image_size, spec.image_size, 3), dtype=tf.float32)
    labels = tf.one_hot(g.uniform((spec.batch_size,), 0, NUM_CLASSES, dtype=tf.int32), NUM_CLASSES)
    return images, labels


def inference_step(model: Any, images: tf.Tensor, variant: str) -> Callable[[], Any]:
    """A zero-argument callable running ``model(images, training=False)`` eagerly, as a ``tf.function``
    (``function``) or XLA-compiled (``xla``)."""
    import tensorflow as tf

    def forward(x: tf.Tensor) -> Any:
        return model(x, training=False)

    if variant == "eager":
        fn = forward
    elif variant in ("function", "xla"):
        fn = tf.function(forward, jit_compile=variant == "xla")
    else:
        raise ValueError(f"variant {variant!r} is not an inference variant; choose from eager, function, xla")
    return lambda: fn(images)


def mixed_precision(precision: str) -> str | None:
    """The engine's ``mixed_precision`` setting for a row's precision (None for float32).

    Example:
        >>> mixed_precision("float32"), mixed_precision("mixed_bfloat16")
        (None, 'mixed_bfloat16')
    """
    return None if precision == "float32" else precision


def build_for(spec: CaseSpec) -> tuple[keras.Model, keras.optimizers.Optimizer | None]:
    """The row's model, and for training its optimizer, built as the engine builds them: under the strategy's
    scope and the dtype policy, the optimizer by :func:`~bit_keras.train.step.make_optimizer`."""
    import tensorflow as tf

    from bit_keras.models.policy import dtype_policy
    from bit_keras.train.step import make_optimizer

    mixed = mixed_precision(spec.precision)
    with tf.distribute.get_strategy().scope(), dtype_policy(mixed):
        model = build_model(spec)
        optimizer = make_optimizer(model, mixed_precision=mixed) if spec.mode == "train" else None
    return model, optimizer


def train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, images: tf.Tensor, labels: tf.Tensor,
               variant: str, batch_split: int = 1) -> Callable[[], Any]:
    """A zero-argument callable running the engine's :class:`~bit_keras.train.step.TrainStep` on one batch
    (softmax loss, learning rate :data:`LEARNING_RATE`), with the variant's :data:`TRAIN_STEP_OPTIONS` and
    ``batch_split`` micro-batches per step.

    Example:
        >>> spec = CaseSpec("bit_keras", "train", arch=TINY_ARCH, image_size=32, batch_size=2)
        >>> model, optimizer = build_for(spec)
        >>> step = train_step(model, optimizer, *inputs(spec), "eager")
        >>> float(step()) > 0
        True
    """
    import tensorflow as tf

    from bit_keras.train.step import TrainStep, set_learning_rate

    if variant not in TRAIN_STEP_OPTIONS:
        raise ValueError(f"unknown training variant {variant!r}; choose from {sorted(TRAIN_STEP_OPTIONS)}")
    step = TrainStep(model, optimizer, tf.distribute.get_strategy(), batch_size=int(images.shape[0]),
                     loss="softmax", **TRAIN_STEP_OPTIONS[variant], **({"batch_split": batch_split} if batch_split > 1 else {}))
    set_learning_rate(optimizer, LEARNING_RATE)
    batch = (images, labels)
    return lambda: step(batch)


def prepare_model_case(spec: CaseSpec) -> Callable[[], Any]:
    """bit_keras, baseline and diagnostic rows: build the model, return its inference or training step."""
    model, optimizer = build_for(spec)
    images, labels = inputs(spec)
    if spec.mode == "inference":
        return inference_step(model, images, spec.variant)
    return train_step(model, optimizer, images, labels, spec.variant, spec.batch_split)


# --------------------------------------------------------------------------- SavedModel rows


def reference_images(image_size: int, n: int = 2) -> Any:
    """The fixed images the exported models are checked on (float32 in [0, 1])."""
    import numpy as np

    return np.random.default_rng(1234).uniform(0, 1, (n, image_size, image_size, 3)).astype("float32")


def _with_head_weights(model: keras.Model) -> keras.Model:
    """The model with random weights in its zero-initialised head, so that its outputs say something."""
    import numpy as np

    head = model.get_layer("head")
    rng = np.random.default_rng(0)
    head.set_weights([rng.normal(0, 0.02, tuple(head.kernel.shape)).astype("float32"),
                      rng.normal(0, 0.1, tuple(head.bias.shape)).astype("float32")])
    return model


def prepare_exports(arch: str, work_dir: str | os.PathLike, image_sizes: Iterable[int],
                    cases: Iterable[str] = (SAVED_MODEL_CASE, FOLDED_CASE)) -> dict[str, str]:
    """Export a random-weight bit_keras classifier of ``arch`` with ``hub_export.export`` as ``cases``
    (``saved_model`` and/or ``saved_model_folded``) under ``work_dir``, and store the Keras model's outputs on
    :func:`reference_images` of each size.

    Returns ``{case: path}``, or ``{"error": message}`` when ``hub_export`` cannot be imported.

    Example:
        >>> sorted(prepare_exports(TINY_ARCH, tempfile.mkdtemp(), [32]))
        ['saved_model', 'saved_model_folded']
    """
    import numpy as np

    try:
        import hub_export
    except ImportError as e:
        return {"error": f"hub_export is not importable ({e})"}
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = _with_head_weights(build_model(CaseSpec(BIT_CASE, "inference", arch=arch)))
    from bit_keras.models.native import native_ops

    with native_ops(False):  # the exports hold the Keras-ops graph: check them against the same math
        for size in image_sizes:
            np.save(work / f"reference_{size}.npy", np.asarray(model(reference_images(size), training=False)))
    paths = {}
    wanted = set(cases)
    for case, fold in ((SAVED_MODEL_CASE, False), (FOLDED_CASE, True)):
        if case not in wanted:
            continue
        target = work / case
        if target.exists():
            shutil.rmtree(target)
        paths[case] = str(hub_export.export(model, target, kind="classifier", fold_standardization=fold, arch=arch))
    return paths


def _check_outputs(got: Any, reference: Any) -> dict[str, Any]:
    """``max_abs_diff`` of an exported/folded model's outputs from the Keras model's, and ``status`` ``mismatch``
    with a note above ``targets.json``'s ``folded_max_abs_diff``."""
    import numpy as np

    diff = float(np.max(np.abs(np.asarray(got, dtype="float32") - np.asarray(reference, dtype="float32"))))
    out: dict[str, Any] = {"max_abs_diff": diff}
    tolerance = load_targets().folded_max_abs_diff
    if diff > tolerance:
        out["status"] = "mismatch"
        out["note"] = f"outputs differ from the Keras model by {diff:.2e} > {tolerance:g}"
    return out


def prepare_saved_model_case(spec: CaseSpec, extras: dict[str, Any]) -> Callable[[], Any]:
    """saved_model / saved_model_folded rows: load the export, check its outputs (into ``extras``), return its
    inference step."""
    import numpy as np
    import tensorflow as tf

    path = Path(spec.work_dir) / spec.case
    if not spec.work_dir or not (path / "saved_model.pb").exists():
        raise FileNotFoundError(f"no export at {path}; prepare_exports() first")
    loaded = tf.saved_model.load(str(path))
    reference = np.load(Path(spec.work_dir) / f"reference_{spec.image_size}.npy")
    extras.update(_check_outputs(loaded(tf.constant(reference_images(spec.image_size)), training=False), reference))
    images, _ = inputs(spec)
    return inference_step(loaded, images, spec.variant)


def fold_standardization_function() -> Callable[[Any], Any]:
    """``bit_keras.fold_standardization``, or where the package does not have it yet,
    ``hub_export.saved_model.fold_weight_standardization`` (the same function).

    Example:
        >>> fold_standardization_function().__name__ in ("fold_standardization", "fold_weight_standardization")
        True
    """
    try:
        from bit_keras import fold_standardization  # type: ignore[attr-defined]
    except ImportError:
        from hub_export.saved_model import fold_weight_standardization as fold_standardization
    return fold_standardization


def prepare_keras_folded_case(spec: CaseSpec, extras: dict[str, Any]) -> Callable[[], Any]:
    """keras_folded rows: the bit_keras model with a random head, folded by :func:`fold_standardization_function`;
    its outputs checked against the model's (into ``extras``); returns the folded model's inference step.

    Example:
        >>> extras = {}
        >>> step = prepare_keras_folded_case(CaseSpec("keras_folded", "inference", arch=TINY_ARCH, image_size=32,
        ...                                           batch_size=2), extras)
        >>> tuple(step().shape), extras["max_abs_diff"] < 1e-5
        ((2, 1000), True)
    """
    from bit_keras.models.policy import dtype_policy

    with dtype_policy(mixed_precision(spec.precision)):
        model = _with_head_weights(build_model(CaseSpec(BIT_CASE, "inference", arch=spec.arch)))
        folded = fold_standardization_function()(model)
    from bit_keras.models.native import native_ops

    check = reference_images(spec.image_size)
    with native_ops(False):  # the folding's own error, not the native kernels' rounding against Keras ops
        extras.update(_check_outputs(folded(check, training=False), model(check, training=False)))
    del model
    gc.collect()
    images, _ = inputs(spec)
    return inference_step(folded, images, spec.variant)


# --------------------------------------------------------------------------- input pipeline row


def write_image_folder(directory: str | os.PathLike, count: int, height: int, width: int,
                       classes: int = PIPELINE_CLASSES, seed: int = 0) -> str:
    """Write ``count`` smooth random RGB JPEGs (quality 90) into ``classes`` class sub-folders of
    ``directory`` (the layout :func:`~bit_keras.data.sources.load_dataset` reads) and return the folder.

    Example:
        >>> folder = write_image_folder(tempfile.mkdtemp(), 4, 40, 48)
        >>> sorted(os.listdir(folder)), len(os.listdir(os.path.join(folder, "class1")))
        (['class0', 'class1'], 2)
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for i in range(count):
        coarse = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype("float32")
        image = tf.image.resize(coarse[None], (height, width), "bilinear")[0]
        image = tf.clip_by_value(image + rng.normal(0, 8, (height, width, 3)), 0, 255)
        folder = os.path.join(directory, f"class{i % classes}")
        os.makedirs(folder, exist_ok=True)
        tf.io.write_file(os.path.join(folder, f"img{i:04d}.jpg"), tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90))
    return str(directory)


def pipeline_batches(folder: str, image_size: int, batch_size: int) -> tf.data.Dataset:
    """The library's training input on an image folder: :func:`~bit_keras.data.sources.load_dataset`, then
    :func:`~bit_keras.data.pipelines.train_pipeline` resizing to ``image_size * 8 / 7`` (256 for 224) and
    cropping ``image_size``, uncached (every image read and decoded again each epoch, as for data over 1 GiB).

    Example:
        >>> folder = write_image_folder(tempfile.mkdtemp(), 4, 40, 48)
        >>> images, labels = next(iter(pipeline_batches(folder, 32, 2)))
        >>> images.shape.as_list(), labels.shape.as_list()
        ([2, 32, 32, 3], [2, 2])
    """
    from bit_keras.data.pipelines import train_pipeline
    from bit_keras.data.sources import load_dataset

    ds, info = load_dataset(folder)
    return train_pipeline(ds, info, resize=round(image_size * 8 / 7), crop=image_size, batch_size=batch_size,
                          cache=False)


def prepare_pipeline_case(spec: CaseSpec, cleanup: list[Callable[[], None]]) -> Callable[[], Any]:
    """input_pipeline rows: the library's pipeline on JPEGs written for the run; returns "the next batch"."""
    tmp = tempfile.mkdtemp(prefix="bench-jpegs-")
    height = max(spec.image_size + 8, int(spec.image_size * 1.6))
    folder = write_image_folder(tmp, 16 if spec.image_size <= 64 else 64, height, int(height * 1.25))
    iterators = [iter(pipeline_batches(folder, spec.image_size, spec.batch_size))]

    def close() -> None:
        iterators.clear()  # drops the iterator: stops the prefetch threads before the files go
        gc.collect()
        shutil.rmtree(tmp, ignore_errors=True)

    cleanup.append(close)
    return lambda: next(iterators[0])


# --------------------------------------------------------------------------- one row


class CaseRunner:
    """One row's case in this process: built and warmed up on creation (from right after which peak memory is
    measured), then one timed repeat per :meth:`measure`; :meth:`finish` gives the peak memory, the output checks
    and (``spec.profile``, model rows) the op profile, measured after the timing so that it disturbs nothing.

    Example:
        >>> runner = CaseRunner(CaseSpec("bit_keras", "inference", arch=TINY_ARCH, image_size=32, batch_size=2,
        ...                              warmup=1, min_seconds=0, min_steps=1))
        >>> sorted(runner.ready()), runner.measure()["steps"], sorted(runner.finish())
        (['first_call_s'], 1, ['mem_kind', 'peak_mem_mb'])
    """

    def __init__(self, spec: CaseSpec):
        self.spec = spec
        self.extras: dict[str, Any] = {}
        self.cleanup: list[Callable[[], None]] = []
        self.probe = MemoryProbe(gpu=spec.device == "gpu")
        self.probe.start()
        if spec.case in MODEL_CASES:
            self.step = prepare_model_case(spec)
        elif spec.case in (SAVED_MODEL_CASE, FOLDED_CASE):
            self.step = prepare_saved_model_case(spec, self.extras)
        elif spec.case == KERAS_FOLDED_CASE:
            self.step = prepare_keras_folded_case(spec, self.extras)
        elif spec.case == PIPELINE_CASE:
            self.step = prepare_pipeline_case(spec, self.cleanup)
        else:
            raise ValueError(f"unknown case {spec.case!r}; choose from {ALL_CASES}")
        self.first_call_s = warm_up(self.step, spec)

    def ready(self) -> dict[str, Any]:
        return {"first_call_s": self.first_call_s}

    def measure(self, row: str | None = None) -> dict[str, Any]:
        """Time one repeat (:func:`~benchmarks.bench.timing.time_repeat`)."""
        del row
        return time_repeat(self.step, self.spec.batch_size, self.spec)

    def finish(self) -> dict[str, Any]:
        out = dict(self.extras)
        out["peak_mem_mb"], out["mem_kind"] = self.probe.peak_mb()
        try:
            if self.spec.profile and self.spec.case in MODEL_CASES and self.spec.variant != "eager":
                out["profile"] = profile_ops(self.step)
        finally:
            for close in self.cleanup:
                close()
        return out


def row_from(spec: CaseSpec, ready: dict[str, Any] | None, repeats: list[dict[str, Any] | None],
             finish: dict[str, Any] | None, error: str = "") -> dict[str, Any]:
    """A row's CSV fields from what its runner reported: the READY payload, the repeats (one per round,
    ``None`` where missed) and the finish payload; ``error`` makes it an ``error`` row.

    Example:
        >>> row = row_from(CaseSpec("bit_keras", "inference"), {"first_call_s": 2.0},
        ...                [{"images_per_s": 10.0, "cpu_ms_per_image": 190.0, "steps": 3, "seconds": 2.4}],
        ...                {"peak_mem_mb": 400.0, "mem_kind": "rss_hwm_delta"})
        >>> row["status"], row["images_per_s"], round(row["gflop_per_s"], 1), row["round_images_per_s"]
        ('ok', 10.0, 81.8, '10')
    """
    row: dict[str, Any] = {**spec.row_fields(), "status": "ok", "note": "", "load1": load1()}
    if error:
        return {**row, "status": "error", "note": error}
    row.update(ready or {})
    row.update(summarise_repeats(repeats))
    row.update(finish or {})
    if not row.get("images_per_s") and row["status"] == "ok":
        row.update(status="error", note=row.get("note") or "no repeat was timed")
    flops = case_gflops(spec)
    if flops is not None and row.get("images_per_s"):
        row["gflop_per_s"] = row["images_per_s"] * flops
    return row


def run_case(spec: CaseSpec) -> dict[str, Any]:
    """Run one row in this process, its ``spec.repeats`` repeats back to back, and return its CSV fields
    (status ``ok``, ``mismatch`` or ``error``).

    Example: see the module docstring.
    """
    try:
        runner = CaseRunner(spec)
        repeats: list[dict[str, Any] | None] = [runner.measure() for _ in range(max(1, spec.repeats))]
        finish = runner.finish()
    except Exception as e:  # noqa: BLE001 - a failing row is reported, the run goes on
        return row_from(spec, None, [], None, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
    return row_from(spec, runner.ready(), repeats, finish)
