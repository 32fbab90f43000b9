"""Throughput and peak-memory benchmarks of bit_keras models against ``keras.applications.ResNet50V2``.

``bit-keras bench`` (or ``python benchmarks/run.py``) measures images/s and peak memory of inference and
of a training step (forward, backward, SGD-momentum update) for a grid of *cases*:

* ``bit_keras``: the BiT ResNet-v2 (GroupNorm + weight-standardized convolutions), R50x1 (and R101x3 on
  a GPU), run eagerly, as a ``tf.function`` or XLA-compiled, in float32 or mixed precision;
* ``baseline_resnet50v2``: ``keras.applications.ResNet50V2(weights=None)`` (same depth, BatchNorm) under
  the same settings, in the same run; every row gets ``ratio_to_baseline`` (images/s over the baseline's
  images/s for the same mode, image size, batch size, variant and precision);
* ``saved_model`` / ``saved_model_folded``: the ``hub_export`` SavedModel and its serving variant with the
  weight standardization folded into plain kernels (outputs checked against the Keras model, 1e-5);
* ``input_pipeline``: a tf.data JPEG decode + resize + random crop + flip + batch pipeline alone;
* ``timm_resnetv2_50x1_bit``: timm's PyTorch BiT R50x1 as the peer when torch and timm are installed;
* ``diag_*``: diagnostic variants of the same network without weight standardization and/or without
  GroupNorm, to price those two layers.

Each row runs in a fresh subprocess by default, so that its peak memory is honest: on CPU it is the
growth of the process's resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``)
from the moment after ``import tensorflow`` to the end of the case (weights, optimizer state,
activations, compiled code, allocator caches); on a GPU it is
``tf.config.experimental.get_memory_info('GPU:0')['peak']`` after a reset.

This module plans and runs the rows (and the command line); the vocabulary is in
:mod:`benchmarks.bench.cases`, the report (ratios, CSV, Markdown, summary) in :mod:`benchmarks.bench.report`,
the timing and memory probes in :mod:`benchmarks.bench.timing`, the timm peer in ``timm_peer.py``.

Example:
    >>> plan = build_plan(Options(quick=True))
    >>> sum(s.case == "bit_keras" for s in plan), sorted({s.image_size for s in plan})
    (9, [128, 224])
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from benchmarks.bench.cases import (ALL_CASES, BASELINE_CASE, BIT_CASE, DIAG_CASES, FOLD_TOLERANCE, FOLDED_CASE,
                                   MODEL_CASES, MODES, PIPELINE_CASE, SAVED_MODEL_CASE, TIMM_CASE, TINY_ARCH,
                                   VARIANTS, arch_spec, baseline_available, resnet_v2_gflops)
from benchmarks.bench.report import (TIMM_REFERENCE, add_ratios, ok_row, render_markdown, render_profiles,
                                    rerender, write_csv)
from benchmarks.bench.timing import RESULT_PREFIX, MemoryProbe, cores, load1, sync, time_steps


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class CaseSpec:
    """One benchmark row: what to run and how long to time it.

    Example:
        >>> CaseSpec("bit_keras", "train", "xla", image_size=128, batch_size=16).label()
        'bit_keras/train/xla/float32/R50x1/128px/b16'
    """

    case: str
    mode: str
    variant: str = "function"
    precision: str = "float32"
    arch: str = "R50x1"
    image_size: int = 224
    batch_size: int = 8
    warmup: int = 2
    repeats: int = 3
    min_seconds: float = 2.0
    min_steps: int = 2
    device: str = "cpu"
    work_dir: str = ""
    profile: bool = False

    def label(self) -> str:
        """A short human-readable name of the row."""
        return "/".join([self.case, self.mode, self.variant, self.precision, self.arch,
                         f"{self.image_size}px", f"b{self.batch_size}"])


@dataclass
class Options:
    """What ``bit-keras bench`` runs (the command-line flags).

    Example:
        >>> Options(quick=True, tiny=True).points()
        [(32, 2)]
    """

    output: str = "bench-results"
    quick: bool = False
    tiny: bool = False
    device: str = "auto"
    cases: tuple[str, ...] = ()
    isolation: str = "subprocess"
    repeats: int | None = None
    min_seconds: float | None = None
    timeout: float = 1200.0
    diagnostics: bool | None = None
    point_override: tuple[tuple[int, int], ...] = ()
    precisions: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    check_timm: bool = True
    peer_python: str = ""
    profile: bool = False
    verbose: bool = True
    work_dir: str = ""

    def points(self, gpu: bool = False) -> list[tuple[int, int]]:
        """(image_size, batch_size) pairs to measure."""
        if self.point_override:
            return list(self.point_override)
        if self.tiny:
            return [(32, 2)]
        if gpu:
            return [(224, 32), (128, 64)] if self.quick else [(224, 16), (224, 32), (224, 64),
                                                              (128, 32), (128, 64), (128, 128)]
        return [(224, 8), (128, 16)] if self.quick else [(224, 4), (224, 8), (224, 16),
                                                         (128, 8), (128, 16), (128, 32)]


def _timing(opts: Options, gpu: bool) -> dict[str, Any]:
    if opts.tiny:
        base = {"warmup": 1, "repeats": 1, "min_seconds": 0.0, "min_steps": 1}
    elif opts.quick:
        base = {"warmup": 2, "repeats": 2, "min_seconds": 1.0, "min_steps": 2}
    else:
        base = {"warmup": 2, "repeats": 3, "min_seconds": 3.0, "min_steps": 3}
    if opts.repeats is not None:
        base["repeats"] = opts.repeats
    if opts.min_seconds is not None:
        base["min_seconds"] = opts.min_seconds
    base["device"] = "gpu" if gpu else "cpu"
    base["profile"] = opts.profile
    return base


def _model_grid(opts: Options, gpu: bool) -> list[tuple[str, str, str, tuple[int, int]]]:
    """(mode, variant, precision, point) of the bit_keras / baseline rows.

    Full mode: every point x mode x variant x precision, plus eager at the first point. Quick mode: the rows
    the targets are read from, ``tf.function`` in float32 and mixed precision (inference at the first point,
    training at every point), plus
    XLA inference at the first point (no XLA training: compiling it takes about a minute on CPU; no eager);
    both: one float32 training row with rematerialised units at the first point (its memory and cost).
    """
    points = opts.points(gpu)
    mixed = "mixed_float16" if gpu else "mixed_bfloat16"
    precisions = list(opts.precisions) or (["float32"] if opts.tiny else ["float32", mixed])
    variants = list(opts.variants) or (["function"] if opts.tiny else ["function", "xla"])
    grid = []
    for i, point in enumerate(points):
        for mode in MODES:
            for precision in precisions:
                for variant in variants:
                    if variant == "remat" and mode != "train":
                        continue
                    if opts.quick and i > 0 and mode == "inference":
                        continue  # the inference target is read at 224 px
                    if opts.quick and variant != variants[0] and not (
                            i == 0 and mode == "inference" and precision == precisions[0]):
                        continue
                    grid.append((mode, variant, precision, point))
    if not opts.tiny and not opts.variants:
        # what rematerialisation costs in speed and saves in memory (no baseline: ResNet50V2 has no units)
        grid.append(("train", "remat", precisions[0], points[0]))
        if not opts.quick:
            grid.extend((mode, "eager", "float32", points[0]) for mode in MODES)
    return grid


def build_plan(opts: Options, gpu: bool = False) -> list[CaseSpec]:
    """The rows to run, in order (bit_keras and baseline rows interleaved so that drift hits both).

    Example:
        >>> plan = build_plan(Options(tiny=True))
        >>> sorted({s.case for s in plan})[:3]
        ['baseline_resnet50v2', 'bit_keras', 'input_pipeline']
    """
    timing = _timing(opts, gpu)
    points = opts.points(gpu)
    mixed = "mixed_float16" if gpu else "mixed_bfloat16"
    archs = [TINY_ARCH] if opts.tiny else (["R50x1", "R101x3"] if gpu else ["R50x1"])
    diagnostics = opts.diagnostics if opts.diagnostics is not None else not (opts.quick or opts.tiny)
    variants = list(opts.variants) or (["function"] if opts.tiny else ["function", "xla"])
    plan: list[CaseSpec] = []

    def add(case: str, mode: str, variant: str, precision: str, arch: str, point: tuple[int, int]) -> None:
        plan.append(CaseSpec(case, mode, variant, precision, arch, point[0], point[1], **timing))

    for arch in archs:
        for mode, variant, precision, point in _model_grid(opts, gpu):
            add(BIT_CASE, mode, variant, precision, arch, point)
            if baseline_available(arch) and variant != "remat":
                add(BASELINE_CASE, mode, variant, precision, arch, point)
        if diagnostics:
            for point in points[:1] if opts.quick else points[:2]:
                for mode in MODES:
                    for case in DIAG_CASES:
                        for variant in variants:
                            add(case, mode, variant, "float32", arch, point)
    sm_variants = [v for v in variants if v in ("function", "xla")] or ["function"]
    for point in points[:1] if opts.quick else points:
        for case in (SAVED_MODEL_CASE, FOLDED_CASE):
            for variant in (sm_variants[:1] if opts.quick or opts.tiny else sm_variants):
                add(case, "inference", variant, "float32", archs[0], point)
    if not opts.tiny and not opts.point_override:
        # Serving one image at a time, where the weight standardization the folded export removes costs most.
        serving = (points[0][0], 1)
        add(BIT_CASE, "inference", sm_variants[0], "float32", archs[0], serving)
        if baseline_available(archs[0]):
            add(BASELINE_CASE, "inference", sm_variants[0], "float32", archs[0], serving)
        for case in (SAVED_MODEL_CASE, FOLDED_CASE):
            add(case, "inference", sm_variants[0], "float32", archs[0], serving)
    for size in sorted({p[0] for p in (points[:1] if opts.quick else points)}, reverse=True):
        batch = next(b for s, b in points if s == size)
        add(PIPELINE_CASE, "train", "tf.data", "float32", "-", (size, batch))
    timm_points = [p for p in points if ("train",) + p in TIMM_REFERENCE] or points[:1]
    for i, point in enumerate(timm_points):
        for mode in ("train",) if opts.quick and i > 0 else MODES:
            for precision in ("float32",) if opts.tiny else ("float32", mixed):
                add(TIMM_CASE, mode, "torch_eager", precision, "R50x1", point)
    if opts.cases:
        plan = [s for s in plan if s.case in opts.cases]
    return plan


# --------------------------------------------------------------------------- architectures and FLOPs


def case_gflops(spec: CaseSpec) -> float | None:
    """GFLOP per image of the work a row does (x3 for a training step), None where not a model."""
    if spec.case in (PIPELINE_CASE,):
        return None
    arch = arch_spec(spec.arch if spec.case != TIMM_CASE else "R50x1")
    flops = resnet_v2_gflops(arch.depths, arch.width, spec.image_size)
    return flops * (3 if spec.mode == "train" else 1)


# --------------------------------------------------------------------------- models


def _build_bit(arch: str, num_classes: int = 1000):
    from bit_keras.models.resnet import resnet_v2

    spec = arch_spec(arch)
    return resnet_v2(spec.depths, spec.width, num_classes=num_classes, groups=spec.groups,
                     name=f"bit_{arch.lower().replace('-', '_')}")


def _build_baseline(arch: str, image_size: int, num_classes: int = 1000):
    import keras

    shape = (image_size, image_size, 3)
    if arch == "R50x1":
        return keras.applications.ResNet50V2(weights=None, input_shape=shape, classes=num_classes,
                                             classifier_activation=None)
    from keras.src.applications import resnet

    def stack_fn(x):
        for i, filters in enumerate((16, 32, 64, 128)):
            x = resnet.stack_residual_blocks_v2(x, filters, 2, stride1=1 if i == 3 else 2, name=f"conv{i + 2}")
        return x

    return resnet.ResNet(stack_fn, True, True, weights=None, input_shape=shape, classes=num_classes,
                         classifier_activation=None, name="tiny_resnetv2")


def diagnostic_model(model, plain_conv: bool, no_norm: bool):
    """A copy of a bit_keras model with plain ``Conv2D`` for ``StandardizedConv2D`` and/or identity for
    ``GroupNorm``: the same network less the cost of weight standardization / group normalization.

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
        >>> m = diagnostic_model(resnet_v2((1, 1, 1, 1), 0.25, groups=8), plain_conv=True, no_norm=True)
        >>> sorted({type(l).__name__ for l in m.layers} & {"Conv2D", "GroupNorm", "Identity"})
        ['Conv2D', 'Identity']
    """
    import keras

    from bit_keras.models.layers import GroupNorm, StandardizedConv2D

    def clone(layer):
        if plain_conv and isinstance(layer, StandardizedConv2D):
            config = layer.get_config()
            config.pop("epsilon")
            config["dtype"] = layer.dtype_policy
            return keras.layers.Conv2D.from_config({**config, "use_bias": False})
        if no_norm and isinstance(layer, GroupNorm):
            return keras.layers.Identity(name=layer.name, dtype=layer.dtype_policy)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def build_model(spec: CaseSpec):
    """The Keras model of a model case (under the current dtype policy)."""
    if spec.case == BASELINE_CASE:
        return _build_baseline(spec.arch, spec.image_size)
    model = _build_bit(spec.arch)
    if spec.case == BIT_CASE:
        return model
    return diagnostic_model(model, plain_conv="plain_conv" in spec.case, no_norm="no_norm" in spec.case)


# --------------------------------------------------------------------------- steps


def _wrap(fn: Callable, variant: str) -> Callable:
    import tensorflow as tf

    if variant == "eager":
        return fn
    if variant in ("function", "remat"):
        return tf.function(fn)
    if variant == "xla":
        return tf.function(fn, jit_compile=True)
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def _inputs(spec: CaseSpec, seed: int = 0):
    import tensorflow as tf

    g = tf.random.Generator.from_seed(seed)
    images = g.uniform((spec.batch_size, spec.image_size, spec.image_size, 3), dtype=tf.float32)
    labels = g.uniform((spec.batch_size,), 0, 1000, dtype=tf.int32)
    return images, labels


def inference_step(model, images, variant: str) -> Callable[[], Any]:
    """A zero-argument callable running one forward pass (``training=False``)."""
    fn = _wrap(lambda x: model(x, training=False), variant)
    return lambda: fn(images)


def train_step(model, images, labels, variant: str, precision: str) -> Callable[[], Any]:
    """A zero-argument callable running forward, backward and an SGD-momentum update.

    Example:
        >>> import keras, numpy as np
        >>> from bit_keras.models.resnet import resnet_v2
        >>> m = resnet_v2((1, 1, 1, 1), 0.25, groups=8, num_classes=10)
        >>> step = train_step(m, np.ones((2, 32, 32, 3), "float32"), np.zeros(2, "int32"), "function", "float32")
        >>> float(step()) > 0
        True
    """
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(learning_rate=0.003, momentum=0.9)
    if precision == "mixed_float16":
        optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    variables = model.trainable_variables
    optimizer.build(variables)
    forward = model
    if variant == "remat":
        from bit_keras.train.remat import remat_forward

        forward = remat_forward(model)

    def step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(forward(x, training=True), tf.float32)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return loss

    fn = _wrap(step, variant)
    return lambda: fn(images, labels)


def profile_ops(step: Callable[[], Any], steps: int = 2, top: int = 15) -> list[tuple[str, float]]:
    """Run ``steps`` steps under ``tf.profiler`` and return the ``top`` op types by time per step (ms).

    Op time is summed over threads, so with intra-op parallelism the total exceeds the wall time; the
    shares are what matters (e.g. convolutions vs the GroupNorm reductions and element-wise ops).

    Example:
        >>> import tensorflow as tf
        >>> f = tf.function(lambda: tf.reduce_sum(tf.matmul(tf.random.uniform((256, 256)), tf.ones((256, 256)))))
        >>> ops_ = profile_ops(f, steps=2)
        >>> any("MatMul" in name for name, _ in ops_)
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


# --------------------------------------------------------------------------- cases


def _set_policy(precision: str) -> None:
    import keras

    keras.mixed_precision.set_global_policy(precision)


def run_model_case(spec: CaseSpec) -> dict[str, Any]:
    """bit_keras, baseline and diagnostic rows: build the model, time inference or a training step."""
    _set_policy(spec.precision)
    try:
        model = build_model(spec)
        images, labels = _inputs(spec)
        if spec.mode == "inference":
            step = inference_step(model, images, spec.variant)
        else:
            step = train_step(model, images, labels, spec.variant, spec.precision)
        result = time_steps(step, spec.batch_size, spec)
        if spec.profile and spec.variant != "eager":
            result["profile"] = profile_ops(step)
        return result
    finally:
        _set_policy("float32")


def reference_images(image_size: int, n: int = 2):
    """The fixed images the exported models are checked on (float32 in [0, 1])."""
    import numpy as np

    return np.random.default_rng(1234).uniform(0, 1, (n, image_size, image_size, 3)).astype("float32")


def prepare_exports(arch: str, work_dir: str | os.PathLike, image_sizes: Iterable[int]) -> dict[str, str]:
    """Export a random-weight bit_keras classifier as ``saved_model`` and ``saved_model_folded`` under
    ``work_dir`` and store the Keras model's outputs on :func:`reference_images` for each size.

    Returns ``{case: path}``, or ``{"error": message}`` when ``hub_export`` cannot be imported.

    Example:
        >>> import tempfile
        >>> sorted(prepare_exports(TINY_ARCH, tempfile.mkdtemp(), [32]))  # doctest: +SKIP
        ['saved_model', 'saved_model_folded']
    """
    import numpy as np

    try:
        import hub_export
    except ImportError as e:
        return {"error": f"hub_export is not importable ({e})"}
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = _build_bit(arch)
    head = model.get_layer("head")
    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.02, tuple(head.kernel.shape)).astype("float32")
    head.set_weights([kernel, rng.normal(0, 0.1, tuple(head.bias.shape)).astype("float32")])
    for size in image_sizes:
        np.save(work / f"reference_{size}.npy", np.asarray(model(reference_images(size), training=False)))
    paths = {}
    for case, fold in ((SAVED_MODEL_CASE, False), (FOLDED_CASE, True)):
        target = work / case
        if target.exists():
            shutil.rmtree(target)
        paths[case] = str(hub_export.export(model, target, kind="classifier", fold_standardization=fold))
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
    images, _ = _inputs(spec)
    step = inference_step(loaded, images, spec.variant)
    result = time_steps(step, spec.batch_size, spec)
    result["max_abs_diff"] = diff
    if diff > FOLD_TOLERANCE:
        result["status"] = "mismatch"
        result["note"] = f"outputs differ from the Keras model by {diff:.2e} > {FOLD_TOLERANCE:g}"
    return result


def write_jpegs(directory: str | os.PathLike, count: int, height: int, width: int, seed: int = 0) -> list[str]:
    """Write ``count`` smooth random RGB JPEGs (quality 90) and return their paths.

    Example:
        >>> import tempfile
        >>> len(write_jpegs(tempfile.mkdtemp(), 2, 40, 48))
        2
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype("float32")
        image = tf.image.resize(coarse[None], (height, width), "bilinear")[0]
        image = tf.clip_by_value(image + rng.normal(0, 8, (height, width, 3)), 0, 255)
        path = os.path.join(directory, f"img{i:04d}.jpg")
        tf.io.write_file(path, tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=90))
        paths.append(path)
    return paths


def input_pipeline(files: Sequence[str], image_size: int, batch_size: int):
    """The BiT training input pipeline on JPEG files: decode, resize, random crop, random flip, batch.

    Resizes to ``image_size * 8 / 7`` (256 for 224, like the ImageNet recipe; 146 for 128), crops
    ``image_size`` at random, flips at random, scales to float32 [0, 1].

    Example:
        >>> import tempfile
        >>> ds = input_pipeline(write_jpegs(tempfile.mkdtemp(), 2, 40, 48), 32, 2)
        >>> tuple(next(iter(ds)).shape)
        (2, 32, 32, 3)
    """
    import tensorflow as tf

    resize = int(round(image_size * 8 / 7))

    def load(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, (resize, resize))
        image = tf.image.random_crop(image, (image_size, image_size, 3))
        image = tf.image.random_flip_left_right(image)
        return image / 255.0

    ds = tf.data.Dataset.from_tensor_slices(list(files)).repeat().shuffle(len(files))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def run_pipeline_case(spec: CaseSpec) -> dict[str, Any]:
    """input_pipeline rows: images/s of the tf.data pipeline alone, on JPEGs written for the run."""
    with tempfile.TemporaryDirectory(prefix="bench-jpegs-") as tmp:
        height = max(spec.image_size + 8, int(spec.image_size * 1.6))
        files = write_jpegs(tmp, 16 if spec.image_size <= 64 else 64, height, int(height * 1.25))
        iterators = [iter(input_pipeline(files, spec.image_size, spec.batch_size))]
        try:
            return time_steps(lambda: next(iterators[0]), spec.batch_size, spec)
        finally:
            iterators.clear()  # drops the iterator: stops the prefetch threads before the files go
            gc.collect()


# --------------------------------------------------------------------------- timm peer (PyTorch)

PEER_SCRIPT = Path(__file__).with_name("timm_peer.py")
_PEER_VERSIONS: dict[str, dict[str, str]] = {}


def timm_versions(python: str | None = None) -> dict[str, str]:
    """torch and timm versions as seen by the interpreter ``python`` (default: this one), or
    ``{"error": why}``; asked once per interpreter, in a subprocess (``timm_peer.py --versions``)."""
    python = python or sys.executable
    if python not in _PEER_VERSIONS:
        try:
            proc = subprocess.run([python, str(PEER_SCRIPT), "--versions"], capture_output=True, text=True,
                                  timeout=300)
            lines = proc.stdout.strip().splitlines()
            _PEER_VERSIONS[python] = json.loads(lines[-1]) if lines else {"error": proc.stderr.strip()[-300:]}
        except (OSError, subprocess.TimeoutExpired, ValueError) as e:
            _PEER_VERSIONS[python] = {"error": f"{type(e).__name__}: {e}"}
    return _PEER_VERSIONS[python]


def timm_available(python: str | None = None) -> bool:
    """Whether torch and timm can be imported by ``python`` (the optional ``[bench]`` extra, or another
    environment named with ``--peer-python``)."""
    return "error" not in timm_versions(python)


def run_peer(spec: CaseSpec, python: str | None = None, timeout: float = 1200.0) -> dict[str, Any]:
    """One timm row, run by ``python`` (default: this interpreter) in its own process: ``timm_peer.py``
    imports neither TensorFlow nor this package, so the peer may live in a PyTorch-only environment."""
    row: dict[str, Any] = {**_spec_fields(spec), "status": "ok", "note": "", "load1": load1()}
    cmd = [python or sys.executable, str(PEER_SCRIPT), json.dumps(asdict(spec))]
    result, why = _result_of(cmd, timeout, "peer")
    if result is None or "error" in result:
        return {**row, "status": "error", "note": why if result is None else result["error"]}
    row.update(result)
    row["gflop_per_s"] = row["images_per_s"] * case_gflops(spec)
    return row


# --------------------------------------------------------------------------- running one row


def run_case(spec: CaseSpec) -> dict[str, Any]:
    """Run one row in this process and return its CSV fields (status ``ok`` / ``error`` / ...).

    Example:
        >>> row = run_case(CaseSpec("bit_keras", "inference", arch=TINY_ARCH, image_size=32, batch_size=2,
        ...                         warmup=1, repeats=1, min_seconds=0))
        >>> row["status"], row["images_per_s"] > 0
        ('ok', True)
    """
    row: dict[str, Any] = {**_spec_fields(spec), "status": "ok", "note": "", "load1": load1()}
    gpu = spec.device == "gpu"
    probe = MemoryProbe(gpu=gpu)
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


def _spec_fields(spec: CaseSpec) -> dict[str, Any]:
    return {"case": spec.case, "mode": spec.mode, "variant": spec.variant, "precision": spec.precision,
            "arch": spec.arch, "image_size": spec.image_size, "batch_size": spec.batch_size}


def unavailable_row(spec: CaseSpec, note: str) -> dict[str, Any]:
    """A row for a case that cannot run here (e.g. no torch/timm), with the reason in ``note``.

    Example:
        >>> unavailable_row(CaseSpec(TIMM_CASE, "train"), "timm not installed")["status"]
        'unavailable'
    """
    return {**_spec_fields(spec), "status": "unavailable", "note": note, "load1": load1()}


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the checkout: benchmarks/bench/harness.py
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _result_of(cmd: list[str], timeout: float, who: str, env: dict[str, str] | None = None
               ) -> tuple[dict[str, Any] | None, str]:
    """Run ``cmd``: (the JSON of its last ``RESULT_PREFIX`` line, "") or (None, why there is none)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):]), ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return None, f"{who} exited {proc.returncode}: {tail[0][:300]}"


def run_isolated(spec: CaseSpec, timeout: float = 1200.0) -> dict[str, Any]:
    """Run one row in a fresh Python process (honest peak memory) and return its fields."""
    cmd = [sys.executable, "-m", "benchmarks.bench.harness", "--worker", json.dumps(asdict(spec))]
    row, why = _result_of(cmd, timeout, "worker", env=_worker_env())
    return row if row is not None else {**_spec_fields(spec), "status": "error", "note": why}


def _worker_main(spec_json: str) -> int:
    spec = CaseSpec(**json.loads(spec_json))
    if spec.device == "gpu" and spec.case != TIMM_CASE:
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    else:
        import tensorflow  # noqa: F401
    row = run_case(spec)
    print(RESULT_PREFIX + json.dumps(row), flush=True)
    return 0


def machine_info(peer_python: str | None = "") -> dict[str, Any]:
    """The machine and software the numbers come from (with torch/timm versions of ``peer_python``, the
    timm peer's interpreter: ``""`` for this one, ``None`` not to ask).

    Example:
        >>> sorted(machine_info())[:4]
        ['cores', 'cpu', 'cpu_flags', 'gpus']
    """
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and cpu in (platform.processor(), platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    have = set(line.split(":", 1)[1].split())
                    flags = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16",
                                         "amx_tile") if f in have]
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cpu_flags": flags, "cores": cores(), "gpus": [],
                            "memory_gb": None, "python": platform.python_version(), "os": platform.platform()}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    import keras
    import tensorflow as tf

    info["tensorflow"] = tf.__version__
    info["keras"] = keras.__version__
    info["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        info["gpus"].append(details.get("device_name", gpu.name))
    if peer_python is not None and timm_available(peer_python or None):
        info.update(timm_versions(peer_python or None))
        if peer_python:
            info["peer_python"] = peer_python
    info["load_avg"] = [round(v, 2) for v in os.getloadavg()]
    return info


# --------------------------------------------------------------------------- driver


def _gpu_present(device: str) -> bool:
    if device == "cpu":
        return False
    import tensorflow as tf

    present = bool(tf.config.list_physical_devices("GPU"))
    if device == "gpu" and not present:
        raise RuntimeError("--device gpu: TensorFlow sees no GPU")
    return present


def _log(opts: Options, message: str) -> None:
    if opts.verbose:
        print(message, flush=True)


def run_benchmark(opts: Options) -> list[dict[str, Any]]:
    """Run the plan, write ``bench.csv``, ``bench.md`` and ``machine.json`` under ``opts.output``, and
    return the rows.

    Example (a tiny smoke run, in-process; tests/test_bench.py runs it):
        >>> import tempfile
        >>> rows = run_benchmark(Options(output=tempfile.mkdtemp(), tiny=True, isolation="inprocess",
        ...                              cases=("bit_keras", "baseline_resnet50v2"), verbose=False))  # doctest: +SKIP
        >>> sorted({r["ratio_to_baseline"] for r in rows if r["case"] == "baseline_resnet50v2"})  # doctest: +SKIP
        [1.0]
    """
    out_dir = Path(opts.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = _gpu_present(opts.device)
    machine = machine_info(opts.peer_python if opts.check_timm else None)
    plan = build_plan(opts, gpu)
    work = Path(opts.work_dir) if opts.work_dir else Path(tempfile.mkdtemp(prefix="bench-work-"))
    rows: list[dict[str, Any]] = []
    try:
        exports = _prepare(opts, plan, work)
        for i, spec in enumerate(plan, 1):
            spec = replace(spec, work_dir=str(work))
            row = _run_one(opts, spec, exports)
            rows.append(row)
            _log(opts, f"[{i}/{len(plan)}] {spec.label()}: {_row_summary(row)}")
    finally:
        if not opts.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    machine["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    machine["title"] = "bit-keras bench" + (" (--quick)" if opts.quick else "") + (" (--tiny)" if opts.tiny else "")
    add_ratios(rows)
    write_csv(rows, out_dir / "bench.csv")
    report = render_markdown(rows, machine, title=machine["title"])
    (out_dir / "bench.md").write_text(report, encoding="utf-8")
    (out_dir / "machine.json").write_text(json.dumps(machine, indent=2) + "\n", encoding="utf-8")
    if any(r.get("profile") for r in rows):
        (out_dir / "profile.md").write_text(render_profiles(rows), encoding="utf-8")
    _log(opts, "\n" + report)
    return rows


def _prepare(opts: Options, plan: Sequence[CaseSpec], work: Path) -> dict[str, str]:
    specs = [s for s in plan if s.case in (SAVED_MODEL_CASE, FOLDED_CASE)]
    if not specs:
        return {}
    _log(opts, f"exporting {specs[0].arch} SavedModels (plain and folded) ...")
    try:
        return prepare_exports(specs[0].arch, work, sorted({s.image_size for s in specs}))
    except Exception as e:  # noqa: BLE001 - reported on the rows
        return {"error": f"export failed: {type(e).__name__}: {e}"}


def _run_one(opts: Options, spec: CaseSpec, exports: dict[str, str]) -> dict[str, Any]:
    if spec.case == TIMM_CASE:
        if not (opts.check_timm and timm_available(opts.peer_python or None)):
            python = opts.peer_python or sys.executable
            return unavailable_row(spec, f"torch and timm are not importable by {python} "
                                         "(pip install 'bit-keras[bench]', or --peer-python PATH)")
        return run_peer(spec, opts.peer_python or None, opts.timeout)
    if spec.case in (SAVED_MODEL_CASE, FOLDED_CASE) and spec.case not in exports:
        return unavailable_row(spec, exports.get("error", "no export"))
    if opts.isolation == "subprocess":
        return run_isolated(spec, opts.timeout)
    import keras

    keras.backend.clear_session()
    return run_case(spec)


def _row_summary(row: dict[str, Any]) -> str:
    if not ok_row(row):
        return f"{row.get('status')}: {row.get('note')}"
    text = f"{float(row['images_per_s']):.2f} img/s, peak {float(row.get('peak_mem_mb') or 0):.0f} MB"
    if row.get("max_abs_diff") not in (None, ""):
        text += f", max abs diff vs Keras {float(row['max_abs_diff']):.1e}"
        text += " (equal within 1e-05)" if float(row["max_abs_diff"]) <= FOLD_TOLERANCE else " (MISMATCH)"
    return text


# --------------------------------------------------------------------------- command line


def _points(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"224x8,128x16"`` into ((224, 8), (128, 16))."""
    out = []
    for item in text.split(","):
        size, _, batch = item.strip().partition("x")
        out.append((int(size), int(batch)))
    return tuple(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` flags (shared by ``bit-keras bench`` and ``benchmarks/run.py``)."""
    parser.add_argument("--output", default="bench-results", help="directory for bench.csv / bench.md")
    parser.add_argument("--quick", action="store_true",
                        help="two points, the rows the targets are read from, two repeats: a few minutes on CPU")
    parser.add_argument("--tiny", action="store_true", help="a tiny network at 32 px, one repeat (smoke test)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--cases", default="", help=f"comma-separated subset of {', '.join(ALL_CASES)}")
    parser.add_argument("--points", default="", help="image_size x batch_size list, e.g. 224x8,128x16")
    parser.add_argument("--precisions", default="", help="e.g. float32,mixed_bfloat16")
    parser.add_argument("--variants", default="", help="e.g. function,xla (eager is added at one point)")
    parser.add_argument("--isolation", choices=("subprocess", "inprocess"), default="subprocess",
                        help="a fresh process per row (honest peak memory, default) or all in this one")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--min-seconds", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per row")
    parser.add_argument("--diagnostics", action=argparse.BooleanOptionalAction, default=None,
                        help="diag_* rows without WS / GN (default: on in full mode)")
    parser.add_argument("--no-timm", action="store_true", help="skip the timm peer even if installed")
    parser.add_argument("--peer-python", default="", metavar="PATH",
                        help="the Python interpreter (e.g. another venv's bin/python) with torch and timm "
                             "for the timm peer rows (default: this one)")
    parser.add_argument("--report-only", action="store_true",
                        help="only re-write DIR/bench.md from DIR/bench.csv and DIR/machine.json")
    parser.add_argument("--profile", action="store_true",
                        help="also profile each model row (tf.profiler) and write DIR/profile.md")


def options_from_args(args: argparse.Namespace) -> Options:
    """:class:`Options` from parsed :func:`add_arguments` flags."""
    def split(text: str) -> tuple[str, ...]:
        return tuple(s.strip() for s in text.split(",") if s.strip())

    unknown = [c for c in split(args.cases) if c not in ALL_CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {', '.join(ALL_CASES)}")
    if getattr(args, "report_only", False):
        raise SystemExit("--report-only is handled by run_from_args")
    return Options(output=args.output, quick=args.quick, tiny=args.tiny, device=args.device,
                   cases=split(args.cases), isolation=args.isolation, repeats=args.repeats,
                   min_seconds=args.min_seconds, timeout=args.timeout, diagnostics=args.diagnostics,
                   point_override=_points(args.points) if args.points else (),
                   precisions=split(args.precisions), variants=split(args.variants), check_timm=not args.no_timm,
                   peer_python=args.peer_python,
                   profile=args.profile)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed flags; exit code 1 if a folded/plain export disagrees with Keras."""
    if args.report_only:
        print(rerender(args.output))
        return 0
    rows = run_benchmark(options_from_args(args))
    return 1 if any(r.get("status") == "mismatch" for r in rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench.harness`` / ``benchmarks/run.py`` entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return _worker_main(argv[1])
    parser = argparse.ArgumentParser(prog="bit-keras bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
