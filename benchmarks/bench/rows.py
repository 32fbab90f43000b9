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
* ``input_pipeline``: :func:`bit_keras.data.sources.load_dataset` on a folder of generated JPEGs and
  :func:`bit_keras.data.pipelines.train_pipeline` (decode, resize, random crop, flip, batch), alone.

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

from benchmarks.bench.cases import (ALL_CASES, BIT_CASE, FOLDED_CASE, MODEL_CASES, NUM_CLASSES, PIPELINE_CASE,
                                   SAVED_MODEL_CASE, CaseSpec, build_model, case_gflops)
from benchmarks.bench.cases import TINY_ARCH  # noqa: F401 - the examples' architecture
from benchmarks.bench.targets import load_targets
from benchmarks.bench.timing import MemoryProbe, load1, sync, time_steps

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
               variant: str) -> Callable[[], Any]:
    """A zero-argument callable running the engine's :class:`~bit_keras.train.step.TrainStep` on one batch
    (softmax loss, learning rate :data:`LEARNING_RATE`), with the variant's :data:`TRAIN_STEP_OPTIONS`.

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
                     loss="softmax", **TRAIN_STEP_OPTIONS[variant])
    set_learning_rate(optimizer, LEARNING_RATE)
    batch = (images, labels)
    return lambda: step(batch)


def run_model_case(spec: CaseSpec) -> dict[str, Any]:
    """bit_keras, baseline and diagnostic rows: build the model, time inference or a training step."""
    model, optimizer = build_for(spec)
    images, labels = inputs(spec)
    if spec.mode == "inference":
        step = inference_step(model, images, spec.variant)
    else:
        step = train_step(model, optimizer, images, labels, spec.variant)
    result = time_steps(step, spec.batch_size, spec)
    if spec.profile and spec.variant != "eager":
        result["profile"] = profile_ops(step)
    return result


def profile_ops(step: Callable[[], Any], steps: int = 2, top: int = 15) -> list[tuple[str, float]]:
    """Run ``steps`` steps under ``tf.profiler`` and return the ``top`` op types by time per step (ms).

    Op time is summed over threads, so with intra-op parallelism the total exceeds the wall time; the
    shares are what matters (e.g. convolutions vs the GroupNorm reductions and element-wise ops).

    Example:
        >>> import tensorflow as tf
        >>> f = tf.function(lambda: tf.reduce_sum(tf.matmul(tf.random.uniform((256, 256)), tf.ones((256, 256)))))
        >>> any("MatMul" in name for name, _ in profile_ops(f, steps=2))
        True
    """
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    sync(step())
    logdir = tempfile.mkdtemp(prefix="bench-profile-")
    try:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                sync(step())
        finally:
            tf.profiler.experimental.stop()
        totals: collections.Counter = collections.Counter()
        for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
            space = xplane_pb2.XSpace()
            with open(path, "rb") as f:
                space.ParseFromString(f.read())
            for plane in space.planes:
                names = plane.event_metadata
                for line in plane.lines:
                    for event in line.events:
                        name = names[event.metadata_id].name
                        # TF op events are "<op name>:<op type>"; skip executor frames ("A::B") and functions.
                        if ":" not in name or "::" in name or "__inference" in name:
                            continue
                        op_type = name.rsplit(":", 1)[1].split("#")[0].strip()
                        if op_type:
                            totals[op_type] += event.duration_ps / 1e9 / steps
        return [(name, round(ms, 2)) for name, ms in totals.most_common(top)]
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


# --------------------------------------------------------------------------- SavedModel rows


def reference_images(image_size: int, n: int = 2) -> Any:
    """The fixed images the exported models are checked on (float32 in [0, 1])."""
    import numpy as np

    return np.random.default_rng(1234).uniform(0, 1, (n, image_size, image_size, 3)).astype("float32")


def prepare_exports(arch: str, work_dir: str | os.PathLike, image_sizes: Iterable[int]) -> dict[str, str]:
    """Export a random-weight bit_keras classifier of ``arch`` with ``hub_export.export`` as ``saved_model`` and
    ``saved_model_folded`` under ``work_dir``, and store the Keras model's outputs on :func:`reference_images`
    of each size.

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
    model = build_model(CaseSpec(BIT_CASE, "inference", arch=arch))
    head = model.get_layer("head")  # zero-initialised: give it weights, so that the outputs say something
    rng = np.random.default_rng(0)
    head.set_weights([rng.normal(0, 0.02, tuple(head.kernel.shape)).astype("float32"),
                      rng.normal(0, 0.1, tuple(head.bias.shape)).astype("float32")])
    for size in image_sizes:
        np.save(work / f"reference_{size}.npy", np.asarray(model(reference_images(size), training=False)))
    paths = {}
    for case, fold in ((SAVED_MODEL_CASE, False), (FOLDED_CASE, True)):
        target = work / case
        if target.exists():
            shutil.rmtree(target)
        paths[case] = str(hub_export.export(model, target, kind="classifier", fold_standardization=fold, arch=arch))
    return paths


def run_saved_model_case(spec: CaseSpec) -> dict[str, Any]:
    """saved_model / saved_model_folded rows: load the export, check its outputs, time inference."""
    import numpy as np
    import tensorflow as tf

    path = Path(spec.work_dir) / spec.case
    if not spec.work_dir or not (path / "saved_model.pb").exists():
        raise FileNotFoundError(f"no export at {path}; prepare_exports() first")
    loaded = tf.saved_model.load(str(path))
    reference = np.load(Path(spec.work_dir) / f"reference_{spec.image_size}.npy")
    got = np.asarray(loaded(tf.constant(reference_images(spec.image_size)), training=False))
    diff = float(np.max(np.abs(got - reference)))
    images, _ = inputs(spec)
    result = time_steps(inference_step(loaded, images, spec.variant), spec.batch_size, spec)
    result["max_abs_diff"] = diff
    tolerance = load_targets().folded_max_abs_diff
    if diff > tolerance:
        result["status"] = "mismatch"
        result["note"] = f"outputs differ from the Keras model by {diff:.2e} > {tolerance:g}"
    return result


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


def run_pipeline_case(spec: CaseSpec) -> dict[str, Any]:
    """input_pipeline rows: images/s of the library's pipeline alone, on JPEGs written for the run."""
    with tempfile.TemporaryDirectory(prefix="bench-jpegs-") as tmp:
        height = max(spec.image_size + 8, int(spec.image_size * 1.6))
        folder = write_image_folder(tmp, 16 if spec.image_size <= 64 else 64, height, int(height * 1.25))
        iterators = [iter(pipeline_batches(folder, spec.image_size, spec.batch_size))]
        try:
            return time_steps(lambda: next(iterators[0]), spec.batch_size, spec)
        finally:
            iterators.clear()  # drops the iterator: stops the prefetch threads before the files go
            gc.collect()


# --------------------------------------------------------------------------- one row


def run_case(spec: CaseSpec) -> dict[str, Any]:
    """Run one row in this process and return its CSV fields (status ``ok``, ``mismatch`` or ``error``).

    Example: see the module docstring.
    """
    row: dict[str, Any] = {**spec.row_fields(), "status": "ok", "note": "", "load1": load1()}
    probe = MemoryProbe(gpu=spec.device == "gpu")
    probe.start()
    try:
        if spec.case in MODEL_CASES:
            result = run_model_case(spec)
        elif spec.case in (SAVED_MODEL_CASE, FOLDED_CASE):
            result = run_saved_model_case(spec)
        elif spec.case == PIPELINE_CASE:
            result = run_pipeline_case(spec)
        else:
            raise ValueError(f"unknown case {spec.case!r}; choose from {ALL_CASES}")
    except Exception as e:  # noqa: BLE001 - a failing row is reported, the run goes on
        row.update(status="error", note=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
        return row
    if "peak_mem_mb" not in result:
        result["peak_mem_mb"], result["mem_kind"] = probe.peak_mb()
    row.update(result)
    flops = case_gflops(spec)
    if flops is not None and row.get("images_per_s"):
        row["gflop_per_s"] = row["images_per_s"] * flops
    return row
