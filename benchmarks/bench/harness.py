"""``bit-keras bench``: plan the rows, run each (in a fresh process by default), write the report.

``bit-keras bench`` (or ``python benchmarks/run.py``) measures images/s and peak memory of the library's code
for a grid of *cases* x mode x variant x precision x image size x batch; what each case runs is in
:mod:`benchmarks.bench.rows`:

* ``bit_keras``: the zoo's BiT ResNet-v2 (R50x1, R101x3 too on a GPU; ``--tiny``: the zoo's tiny one), inference
  (``model(x, training=False)``) or the engine's ``TrainStep``, in float32 or mixed precision;
* ``baseline_resnet50v2``: ``keras.applications.ResNet50V2(weights=None)`` (same depth, BatchNorm) under the same
  settings; every row gets ``ratio_to_baseline`` (images/s over the baseline's for the same mode, image size,
  batch size, variant and precision);
* ``saved_model`` / ``saved_model_folded``: ``hub_export.export`` SavedModels, plain and with the weight
  standardization folded into plain kernels (outputs checked against the Keras model);
* ``keras_folded``: the Keras serving form, ``bit_keras.fold_standardization(model)`` (outputs checked too);
* ``input_pipeline``: the library's ``load_dataset`` + ``train_pipeline`` on generated JPEGs, alone;
* ``timm_resnetv2_50x1_bit``: timm's PyTorch BiT (R50x1; R152x2 too on a GPU) as the peer, run by
  ``--peer-python`` (``timm_peer.py``);
* ``diag_*``: the network built by ``resnet_v2`` with plain ``Conv2D`` and/or no GroupNorm, to price those layers.

The rows are run in *groups*, one per architecture x mode x image size x batch size (:func:`group_plan`): every
row of a group gets its own warm worker process (a fresh one each, so that its peak memory is honest), built
and warmed up one after another; then the group runs interleaved rounds, each worker timing one repeat in
turn (:mod:`benchmarks.bench.interleave`), so that a ratio between two rows of a group (bit_keras / baseline,
/ timm, bf16 / float32, folded / Keras) is the median of per-round ratios with its min-max, never the ratio of
two rows measured minutes apart. On CPU peak memory is the growth of the worker's resident-set high-water mark
(``VmHWM``, reset through ``/proc/self/clear_refs``) from the moment after ``import tensorflow`` to the end of
the case (weights, optimizer state, activations, compiled code, allocator caches); on a GPU it is
``tf.config.experimental.get_memory_info('GPU:0')['peak']`` after a reset.

The vocabulary and the models are in :mod:`benchmarks.bench.cases`, the rows in :mod:`benchmarks.bench.rows`,
the report in :mod:`benchmarks.bench.report`, the targets and reference figures (data files) in
:mod:`benchmarks.bench.targets`, the timing and memory probes in :mod:`benchmarks.bench.timing`, the machine
(ISA, oneDNN) in :mod:`benchmarks.bench.machine`, the op profile in :mod:`benchmarks.bench.op_profile`.

Example:
    >>> plan = build_plan(Options(quick=True))
    >>> sum(s.case == "bit_keras" for s in plan), sorted({s.image_size for s in plan})
    (7, [128, 224])
    >>> [(g[0].mode, g[0].image_size, g[0].batch_size, len(g)) for g in group_plan(plan)]
    [('inference', 224, 8, 8), ('train', 224, 8, 6), ('train', 128, 16, 6), ('inference', 224, 1, 4), ('train', 224, 8, 1)]
    >>> [s.case for s in group_plan(plan)[1]]  # one group: each ratio is read on the same interleaved rounds
    ['bit_keras', 'baseline_resnet50v2', 'bit_keras', 'baseline_resnet50v2', 'timm_resnetv2_50x1_bit', 'timm_resnetv2_50x1_bit']
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from benchmarks.bench.cases import (ALL_CASES, BASELINE_CASE, BIT_CASE, DIAG_CASES, FOLDED_CASE, KERAS_FOLDED_CASE,
                                   MODEL_CASES, MODES, PEER_ARCH, PIPELINE_CASE, SAVED_MODEL_CASE, TIMM_CASE,
                                   TIMM_MODELS, TINY_ARCH, CaseSpec, baseline_available)
from benchmarks.bench.interleave import (InProcessWorker, SubprocessWorker, WorkerError, checkout_env, run_rounds,
                                         serve_or_fail)
from benchmarks.bench.machine import machine_info as _machine_info, start_load_warning
from benchmarks.bench.report import add_ratios, ok_row, render_markdown, render_profiles, rerender, write_csv
from benchmarks.bench.rows import CaseRunner, prepare_exports, row_from
from benchmarks.bench.targets import load_targets
from benchmarks.bench.timing import load1


# --------------------------------------------------------------------------- plan


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

    def target_points(self, gpu: bool = False) -> list[tuple[int, int]]:
        """The points the targets are read at, where timm runs: the ``--quick`` grid's (or those given).

        Example:
            >>> Options().target_points()
            [(224, 8), (128, 16)]
        """
        return replace(self, quick=True).points(gpu)


def _mixed(gpu: bool) -> str:
    """The mixed-precision policy of the device: float16 on a GPU, bfloat16 on CPU."""
    return "mixed_float16" if gpu else "mixed_bfloat16"


def _precisions(opts: Options, gpu: bool) -> list[str]:
    """float32 and bf16 on CPU (float32 only for ``--tiny``); both mixed precisions on a GPU."""
    if opts.precisions:
        return list(opts.precisions)
    if opts.tiny:
        return ["float32"]
    return ["mixed_bfloat16", "mixed_float16"] if gpu else ["float32", "mixed_bfloat16"]


GPU_ARCHS = (PEER_ARCH, "R152x2")  # the GPU grid's networks, each with timm's BiT of the same architecture
# The GPU memory row: TrainStep(batch_split=) on the largest network at its fine-tuning resolution, with and
# without splitting the batch ((arch, image size, batch size), splits).
GPU_SPLIT_ROW = (("R152x4", 480, 8), (1, 4))


def _timing(opts: Options, gpu: bool) -> dict[str, Any]:
    """Warm-up steps, rounds (``repeats``: one timed repeat per row per round) and what one repeat is."""
    if opts.tiny:
        base = {"warmup": 1, "repeats": 2, "min_seconds": 0.0, "min_steps": 1}
    elif opts.quick:
        base = {"warmup": 1, "repeats": 4, "min_seconds": 1.0, "min_steps": 1}
    else:
        base = {"warmup": 2, "repeats": 5, "min_seconds": 2.0, "min_steps": 2}
    if opts.repeats is not None:
        base["repeats"] = opts.repeats
    if opts.min_seconds is not None:
        base["min_seconds"] = opts.min_seconds
    base["device"] = "gpu" if gpu else "cpu"
    return base


def _model_grid(opts: Options, gpu: bool) -> list[tuple[str, str, str, tuple[int, int]]]:
    """(mode, variant, precision, point) of the bit_keras / baseline rows.

    Full mode: every point x mode x variant x precision, plus eager at the first point. Quick mode: the rows
    the targets are read from, ``tf.function`` in float32 and mixed precision (inference at the first point,
    training at every point), plus
    XLA inference at the first point on a GPU (on CPU XLA is slower than graph mode and not offered as a speed
    option, so ``--quick`` leaves it to the full grid; no XLA training: compiling it takes about a minute on CPU;
    no eager);
    both: one float32 training row with rematerialised units at the first point (its memory and cost).
    """
    points = opts.points(gpu)
    precisions = _precisions(opts, gpu)
    variants = _variants(opts)
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
                    if opts.quick and variant == "xla" and not gpu and not opts.variants:
                        continue  # XLA is not a speed option on CPU (README): the full grid still measures it
                    grid.append((mode, variant, precision, point))
    if not opts.tiny and not opts.variants and not (opts.quick and not gpu):
        # what rematerialisation costs in speed and saves in memory (no baseline: ResNet50V2 has no units; on CPU
        # --quick leaves it to the full grid, to stay under 10 minutes)
        grid.append(("train", "remat", precisions[0], points[0]))
        if not opts.quick:
            grid.extend((mode, "eager", "float32", points[0]) for mode in MODES)
    return grid


Point = tuple[int, int]  # (image size, batch size)
Row = tuple[str, str, str, str, str, Point]  # (case, mode, variant, precision, arch, point)


def build_plan(opts: Options, gpu: bool = False) -> list[CaseSpec]:
    """The rows to run, in order (bit_keras and baseline rows interleaved so that drift hits both).

    Example:
        >>> plan = build_plan(Options(tiny=True))
        >>> sorted({s.case for s in plan})[:3]
        ['baseline_resnet50v2', 'bit_keras', 'input_pipeline']
        >>> {s.arch for s in plan if s.case == "bit_keras"}
        {'R14x0.25'}
    """
    archs = [TINY_ARCH] if opts.tiny else (list(GPU_ARCHS) if gpu else [PEER_ARCH])
    rows = [*_model_rows(opts, gpu, archs), *_export_rows(opts, gpu, archs[0]), *_serving_rows(opts, gpu, archs[0]),
            *_pipeline_rows(opts, gpu), *_timm_rows(opts, gpu)]
    timing = _timing(opts, gpu)
    first = opts.points(gpu)[0]
    plan = [CaseSpec(case, mode, variant, precision, arch, point[0], point[1], **timing,
                     profile=_profiled(opts, case, mode, variant, point == first))
            for case, mode, variant, precision, arch, point in rows]
    if gpu and not opts.tiny and not opts.point_override:
        (arch, size, batch), splits = GPU_SPLIT_ROW
        plan += [CaseSpec(BIT_CASE, "train", "function", _precisions(opts, gpu)[0], arch, size, batch, **timing,
                          batch_split=split) for split in splits]
    return [s for s in plan if s.case in opts.cases] if opts.cases else plan


def _profiled(opts: Options, case: str, mode: str, variant: str, first_point: bool) -> bool:
    """Which rows profile their step at the end (after the timing): every model row with ``--profile``; else the
    bit_keras training step at the first point, whose op profile says what is left where a target is missed."""
    if opts.profile:
        return case in MODEL_CASES and variant != "eager"
    return case == BIT_CASE and mode == "train" and variant == "function" and first_point and (opts.quick or opts.tiny)


def group_plan(plan: Sequence[CaseSpec]) -> list[list[CaseSpec]]:
    """The plan's rows in comparison groups, in order of first appearance: one per architecture (timm's rows go
    with the zoo network of the same architecture), mode, image size, batch size and batch split. The rows of a
    group are run in interleaved rounds.

    Example:
        >>> plan = build_plan(Options(tiny=True))
        >>> [[s.case for s in group] for group in group_plan(plan)][1:3]
        [['bit_keras', 'baseline_resnet50v2'], ['input_pipeline']]
    """
    groups: dict[tuple, list[CaseSpec]] = {}
    for spec in plan:
        arch = spec.arch if spec.case != PIPELINE_CASE else "-"
        key = (arch, spec.mode, spec.image_size, spec.batch_size, spec.case == PIPELINE_CASE)
        groups.setdefault(key, []).append(spec)
    return list(groups.values())


def _variants(opts: Options) -> list[str]:
    return list(opts.variants) or (["function"] if opts.tiny else ["function", "xla"])


def _model_rows(opts: Options, gpu: bool, archs: Sequence[str]) -> list[Row]:
    """bit_keras rows each followed by its baseline row, then the diagnostics (full mode or --diagnostics)."""
    rows: list[Row] = []
    diagnostics = opts.diagnostics if opts.diagnostics is not None else not (opts.quick or opts.tiny)
    points = opts.points(gpu)
    for arch in archs:
        for mode, variant, precision, point in _model_grid(opts, gpu):
            rows.append((BIT_CASE, mode, variant, precision, arch, point))
            if baseline_available(arch) and variant != "remat":
                rows.append((BASELINE_CASE, mode, variant, precision, arch, point))
        if diagnostics:
            rows += [(case, mode, variant, "float32", arch, point)
                     for point in (points[:1] if opts.quick else points[:2]) for mode in MODES
                     for case in DIAG_CASES for variant in _variants(opts) if variant != "remat" or mode == "train"]
    return rows


def _saved_model_variants(opts: Options) -> list[str]:
    return [v for v in _variants(opts) if v in ("function", "xla")] or ["function"]


def _export_rows(opts: Options, gpu: bool, arch: str) -> list[Row]:
    """The plain and folded SavedModels and the folded Keras model at the measured points."""
    points = opts.points(gpu)
    variants = _saved_model_variants(opts)
    # --quick: the two serving forms (the plain SavedModel runs the Keras model's work: the full grid has it)
    cases = (FOLDED_CASE, KERAS_FOLDED_CASE) if opts.quick else (SAVED_MODEL_CASE, FOLDED_CASE, KERAS_FOLDED_CASE)
    return [(case, "inference", variant, "float32", arch, point)
            for point in (points[:1] if opts.quick else points)
            for case in cases
            for variant in (variants[:1] if opts.quick or opts.tiny else variants)]


def _serving_rows(opts: Options, gpu: bool, arch: str) -> list[Row]:
    """Serving one image at a time, where the weight standardization the folded export removes costs most."""
    if opts.tiny or opts.point_override:
        return []
    serving = (opts.points(gpu)[0][0], 1)
    variant = _saved_model_variants(opts)[0]
    cases = [BIT_CASE, *([BASELINE_CASE] if baseline_available(arch) else []),
             *([] if opts.quick else [SAVED_MODEL_CASE]), FOLDED_CASE, KERAS_FOLDED_CASE]
    return [(case, "inference", variant, "float32", arch, serving) for case in cases]


def _pipeline_rows(opts: Options, gpu: bool) -> list[Row]:
    """The input pipeline once per image size (with that size's first batch size)."""
    points = opts.points(gpu)
    sizes = sorted({p[0] for p in (points[:1] if opts.quick else points)}, reverse=True)
    return [(PIPELINE_CASE, "train", "tf.data", "float32", "-", (size, next(b for s, b in points if s == size)))
            for size in sizes]


def _timm_rows(opts: Options, gpu: bool) -> list[Row]:
    """timm's peer rows at the points the targets are read at (training only beyond the first in --quick), in
    each precision of the grid; for R50x1 (and R152x2 on a GPU: AMP, channels-last)."""
    archs = [a for a in (GPU_ARCHS if gpu and not opts.tiny else (PEER_ARCH,)) if a in TIMM_MODELS]
    variant = "torch_amp" if gpu else "torch_eager"
    return [(TIMM_CASE, mode, variant, precision, arch, point)
            for arch in archs for i, point in enumerate(opts.target_points(gpu))
            for mode in (("train",) if opts.quick and i > 0 else MODES) for precision in _precisions(opts, gpu)]


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


def peer_worker(spec: CaseSpec, python: str | None = None, timeout: float = 1200.0) -> SubprocessWorker:
    """A warm worker for one timm row, run by ``python`` (default: this interpreter): ``timm_peer.py`` imports
    neither TensorFlow nor this package, so the peer may live in a PyTorch-only environment."""
    cmd = [python or sys.executable, str(PEER_SCRIPT), json.dumps(asdict(spec))]
    return SubprocessWorker(spec.label(), cmd, timeout=timeout)


def run_peer(spec: CaseSpec, python: str | None = None, timeout: float = 1200.0) -> dict[str, Any]:
    """One timm row alone (its repeats back to back, in its own process)."""
    return _run_group_workers([(spec, peer_worker(spec, python, timeout))], lambda message: None)[0]


def unavailable_row(spec: CaseSpec, note: str) -> dict[str, Any]:
    """A row for a case that cannot run here (e.g. no torch/timm), with the reason in ``note``.

    Example:
        >>> unavailable_row(CaseSpec(TIMM_CASE, "train"), "timm not installed")["status"]
        'unavailable'
    """
    return {**spec.row_fields(), "status": "unavailable", "note": note, "load1": load1()}


def _worker_env() -> dict[str, str]:
    return checkout_env(Path(__file__).resolve().parents[2])  # the checkout: benchmarks/bench/harness.py


def row_worker(spec: CaseSpec, timeout: float = 1200.0) -> SubprocessWorker:
    """A warm worker process for one row (``--worker``, with the checkout on ``PYTHONPATH``)."""
    cmd = [sys.executable, "-m", "benchmarks.bench.harness", "--worker", json.dumps(asdict(spec))]
    return SubprocessWorker(spec.label(), cmd, env=_worker_env(), timeout=timeout)


def run_isolated(spec: CaseSpec, timeout: float = 1200.0) -> dict[str, Any]:
    """Run one row alone in a fresh Python process (honest peak memory) and return its fields."""
    return _run_group_workers([(spec, row_worker(spec, timeout))], lambda message: None)[0]


def _runner_protocol(spec: CaseSpec) -> tuple[Any, Any, dict[str, Any]]:
    runner = CaseRunner(spec)
    return runner.measure, runner.finish, runner.ready()


def _worker_main(spec_json: str) -> int:
    spec = CaseSpec(**json.loads(spec_json))
    if spec.device == "gpu" and spec.case != TIMM_CASE:
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    else:
        import tensorflow  # noqa: F401 - the memory baseline is taken after the framework is loaded
    return serve_or_fail(lambda: _runner_protocol(spec))


def machine_info(peer_python: str | None = "", onednn: bool = True) -> dict[str, Any]:
    """The machine and software the numbers come from (:func:`benchmarks.bench.machine.machine_info`: CPU, ISA,
    oneDNN and whether it uses AMX, the machine's slug), with the torch/timm versions of ``peer_python``, the
    timm peer's interpreter (``""`` for this one, ``None`` not to ask).

    Example:
        >>> sorted(machine_info(onednn=False))[:4]
        ['cores', 'cpu', 'cpu_flags', 'gpus']
    """
    peer: dict[str, str] = {}
    if peer_python is not None and timm_available(peer_python or None):
        peer.update(timm_versions(peer_python or None))
        if peer_python:
            peer["peer_python"] = peer_python
    return _machine_info(peer, onednn=onednn)


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
    """Run the plan group by group (:func:`group_plan`, interleaved rounds), write ``bench.csv``, ``bench.md``
    and ``machine.json`` (and ``profile.md`` when a row was profiled) under ``opts.output`` (``{machine}`` in
    it is replaced by the machine's slug, e.g. ``benchmarks/results/{machine}``), and return the rows.

    Example (a tiny smoke run of one case, in-process):
        >>> out = tempfile.mkdtemp()
        >>> rows = run_benchmark(Options(output=out, tiny=True, isolation="inprocess", cases=("input_pipeline",),
        ...                              verbose=False))
        >>> [(r["case"], r["status"]) for r in rows], sorted(os.listdir(out))
        ([('input_pipeline', 'ok')], ['bench.csv', 'bench.md', 'machine.json'])
    """
    gpu = _gpu_present(opts.device)
    machine = machine_info(opts.peer_python if opts.check_timm else None)
    warning = start_load_warning(machine)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    out_dir = Path(opts.output.replace("{machine}", machine["slug"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = build_plan(opts, gpu)
    groups = group_plan(plan)
    work = Path(opts.work_dir) if opts.work_dir else Path(tempfile.mkdtemp(prefix="bench-work-"))
    rows: list[dict[str, Any]] = []
    try:
        exports = _prepare(opts, plan, work)
        for gid, group in enumerate(groups, 1):
            group = [replace(spec, work_dir=str(work)) for spec in group]
            _log(opts, f"group {gid}/{len(groups)}: {group[0].arch} {group[0].mode} {group[0].image_size} px batch "
                       f"{group[0].batch_size}, {len(group)} rows, {group[0].repeats} interleaved rounds")
            for row in run_group(opts, group, exports):
                row["group"] = gid
                rows.append(row)
                _log(opts, f"  {_label(row)}: {_row_summary(row)}")
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


def _label(row: dict[str, Any]) -> str:
    return "/".join(str(row.get(k)) for k in ("case", "mode", "variant", "precision", "arch"))


def run_group(opts: Options, group: Sequence[CaseSpec], exports: dict[str, str]) -> list[dict[str, Any]]:
    """One comparison group: a warm worker per row (built one after another), then interleaved rounds; rows
    that cannot run here are ``unavailable``, workers that fail to start ``error``."""
    rows: dict[int, dict[str, Any]] = {}
    workers: list[tuple[int, CaseSpec, Any]] = []
    if opts.isolation == "inprocess":
        import keras

        keras.backend.clear_session()
    for i, spec in enumerate(group):
        why = _unavailable(opts, spec, exports)
        if why:
            rows[i] = unavailable_row(spec, why)
        else:
            workers.append((i, spec, _worker_for(opts, spec)))
    ran = _run_group_workers([(spec, worker) for _, spec, worker in workers], lambda m: _log(opts, m))
    rows.update({i: row for (i, _, _), row in zip(workers, ran)})
    return [rows[i] for i in range(len(group))]


def _run_group_workers(workers: Sequence[tuple[CaseSpec, Any]], log: Any) -> list[dict[str, Any]]:
    """Start each worker in turn (build, warm up: not timed against the others), run the interleaved rounds,
    finish each (peak memory, checks, profile): one row per worker, in order."""
    started: list[tuple[int, CaseSpec, Any, dict[str, Any]]] = []
    rows: dict[int, dict[str, Any]] = {}
    for i, (spec, worker) in enumerate(workers):
        try:
            ready = worker.start()
        except WorkerError as e:
            rows[i] = row_from(spec, None, [], None, str(e))
            log(f"  failed: {spec.label()}: {e}")
            continue
        started.append((i, spec, worker, ready))
        log(f"  ready: {spec.label()} (first call {ready.get('first_call_s', 0):.1f} s)")
    rounds = max((spec.repeats for _, spec, _, _ in started), default=1)
    results = run_rounds([w for _, _, w, _ in started], max(1, rounds), log=log) if started else {}
    for i, spec, worker, ready in started:
        repeats = results.get(worker.name, [])
        try:
            finish = worker.finish()
        except WorkerError as e:
            finish = {"note": f"finish failed: {e}"}
        error = "" if any(repeats) else f"no repeat was timed: {finish.get('note') or 'the worker stopped'}"
        rows[i] = row_from(spec, ready, repeats, finish, error)
    return [rows[i] for i in range(len(workers))]


def _unavailable(opts: Options, spec: CaseSpec, exports: dict[str, str]) -> str:
    """Why a row cannot run here ("" when it can)."""
    if spec.case == TIMM_CASE and not (opts.check_timm and timm_available(opts.peer_python or None)):
        python = opts.peer_python or sys.executable
        return (f"torch and timm are not importable by {python} (pip install 'bit-keras[bench]', or "
                "--peer-python PATH)")
    if spec.case in (SAVED_MODEL_CASE, FOLDED_CASE) and spec.case not in exports:
        return exports.get("error", "no export")
    return ""


def _worker_for(opts: Options, spec: CaseSpec) -> Any:
    if spec.case == TIMM_CASE:
        return peer_worker(spec, opts.peer_python or None, opts.timeout)
    if opts.isolation == "subprocess":
        return row_worker(spec, opts.timeout)
    return InProcessWorker(spec.label(), lambda: _runner_protocol(spec))


def _prepare(opts: Options, plan: Sequence[CaseSpec], work: Path) -> dict[str, str]:
    specs = [s for s in plan if s.case in (SAVED_MODEL_CASE, FOLDED_CASE)]
    if not specs:
        return {}
    cases = sorted({s.case for s in specs})
    _log(opts, f"exporting {specs[0].arch} SavedModels ({', '.join(cases)}) ...")
    try:
        return prepare_exports(specs[0].arch, work, sorted({s.image_size for s in specs}), cases)
    except Exception as e:  # noqa: BLE001 - reported on the rows
        return {"error": f"export failed: {type(e).__name__}: {e}"}


def _run_one(opts: Options, spec: CaseSpec, exports: dict[str, str]) -> dict[str, Any]:
    """One row alone (a group of one)."""
    return run_group(opts, [spec], exports)[0]


def _row_summary(row: dict[str, Any]) -> str:
    if not ok_row(row):
        return f"{row.get('status')}: {row.get('note')}"
    text = f"{float(row['images_per_s']):.2f} img/s, peak {float(row.get('peak_mem_mb') or 0):.0f} MB"
    if row.get("max_abs_diff") not in (None, ""):
        text += f", max abs diff vs Keras {float(row['max_abs_diff']):.1e}"
        tolerance = load_targets().folded_max_abs_diff
        text += f" (equal within {tolerance:g})" if float(row["max_abs_diff"]) <= tolerance else " (MISMATCH)"
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
    parser.add_argument("--output", default="bench-results",
                        help="directory for bench.csv / bench.md; {machine} is replaced by the machine's slug "
                             "(e.g. --output benchmarks/results/{machine})")
    parser.add_argument("--quick", action="store_true",
                        help="two points, the rows the targets are read from, four rounds: under 10 min on 2 CPU cores")
    parser.add_argument("--tiny", action="store_true", help="a tiny network at 32 px, two rounds (smoke test)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--cases", default="", help=f"comma-separated subset of {', '.join(ALL_CASES)}")
    parser.add_argument("--points", default="", help="image_size x batch_size list, e.g. 224x8,128x16")
    parser.add_argument("--precisions", default="", help="e.g. float32,mixed_bfloat16")
    parser.add_argument("--variants", default="", help="e.g. function,xla (eager is added at one point)")
    parser.add_argument("--isolation", choices=("subprocess", "inprocess"), default="subprocess",
                        help="a fresh process per row (honest peak memory, default) or all in this one")
    parser.add_argument("--repeats", "--rounds", type=int, default=None, dest="repeats",
                        help="interleaved rounds (one timed repeat of every row of a group per round)")
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
