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
* ``input_pipeline``: the library's ``load_dataset`` + ``train_pipeline`` on generated JPEGs, alone;
* ``timm_resnetv2_50x1_bit``: timm's PyTorch BiT R50x1 as the peer, run by ``--peer-python`` (``timm_peer.py``);
* ``diag_*``: the network built by ``resnet_v2`` with plain ``Conv2D`` and/or no GroupNorm, to price those layers.

Each row runs in a fresh subprocess by default, so that its peak memory is honest: on CPU it is the
growth of the process's resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``)
from the moment after ``import tensorflow`` to the end of the case (weights, optimizer state,
activations, compiled code, allocator caches); on a GPU it is
``tf.config.experimental.get_memory_info('GPU:0')['peak']`` after a reset.

The vocabulary and the models are in :mod:`benchmarks.bench.cases`, the rows in :mod:`benchmarks.bench.rows`,
the report in :mod:`benchmarks.bench.report`, the targets and reference figures (data files) in
:mod:`benchmarks.bench.targets`, the timing and memory probes in :mod:`benchmarks.bench.timing`.

Example:
    >>> plan = build_plan(Options(quick=True))
    >>> sum(s.case == "bit_keras" for s in plan), sorted({s.image_size for s in plan})
    (9, [128, 224])
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from benchmarks.bench.cases import (ALL_CASES, BASELINE_CASE, BIT_CASE, DIAG_CASES, FOLDED_CASE, MODES, PEER_ARCH,
                                   PIPELINE_CASE, SAVED_MODEL_CASE, TIMM_CASE, TINY_ARCH, CaseSpec,
                                   baseline_available, case_gflops)
from benchmarks.bench.report import add_ratios, ok_row, render_markdown, render_profiles, rerender, write_csv
from benchmarks.bench.rows import prepare_exports, run_case
from benchmarks.bench.targets import load_targets
from benchmarks.bench.timing import RESULT_PREFIX, cores, load1


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
    precisions = list(opts.precisions) or (["float32"] if opts.tiny else ["float32", _mixed(gpu)])
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
                    grid.append((mode, variant, precision, point))
    if not opts.tiny and not opts.variants:
        # what rematerialisation costs in speed and saves in memory (no baseline: ResNet50V2 has no units)
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
    archs = [TINY_ARCH] if opts.tiny else ([PEER_ARCH, "R101x3"] if gpu else [PEER_ARCH])
    rows = [*_model_rows(opts, gpu, archs), *_export_rows(opts, gpu, archs[0]), *_serving_rows(opts, gpu, archs[0]),
            *_pipeline_rows(opts, gpu), *_timm_rows(opts, gpu)]
    timing = _timing(opts, gpu)
    plan = [CaseSpec(case, mode, variant, precision, arch, point[0], point[1], **timing)
            for case, mode, variant, precision, arch, point in rows]
    return [s for s in plan if s.case in opts.cases] if opts.cases else plan


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
    """The plain and folded SavedModels at the measured points."""
    points = opts.points(gpu)
    variants = _saved_model_variants(opts)
    return [(case, "inference", variant, "float32", arch, point)
            for point in (points[:1] if opts.quick else points) for case in (SAVED_MODEL_CASE, FOLDED_CASE)
            for variant in (variants[:1] if opts.quick or opts.tiny else variants)]


def _serving_rows(opts: Options, gpu: bool, arch: str) -> list[Row]:
    """Serving one image at a time, where the weight standardization the folded export removes costs most."""
    if opts.tiny or opts.point_override:
        return []
    serving = (opts.points(gpu)[0][0], 1)
    variant = _saved_model_variants(opts)[0]
    cases = [BIT_CASE, *([BASELINE_CASE] if baseline_available(arch) else []), SAVED_MODEL_CASE, FOLDED_CASE]
    return [(case, "inference", variant, "float32", arch, serving) for case in cases]


def _pipeline_rows(opts: Options, gpu: bool) -> list[Row]:
    """The input pipeline once per image size (with that size's first batch size)."""
    points = opts.points(gpu)
    sizes = sorted({p[0] for p in (points[:1] if opts.quick else points)}, reverse=True)
    return [(PIPELINE_CASE, "train", "tf.data", "float32", "-", (size, next(b for s, b in points if s == size)))
            for size in sizes]


def _timm_rows(opts: Options, gpu: bool) -> list[Row]:
    """timm's peer rows at the points the targets are read at (training only beyond the first in --quick)."""
    precisions = ("float32",) if opts.tiny else ("float32", _mixed(gpu))
    return [(TIMM_CASE, mode, "torch_eager", precision, PEER_ARCH, point)
            for i, point in enumerate(opts.target_points(gpu))
            for mode in (("train",) if opts.quick and i > 0 else MODES) for precision in precisions]


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
    row: dict[str, Any] = {**spec.row_fields(), "status": "ok", "note": "", "load1": load1()}
    cmd = [python or sys.executable, str(PEER_SCRIPT), json.dumps(asdict(spec))]
    result, why = _result_of(cmd, timeout, "peer")
    if result is None or "error" in result:
        return {**row, "status": "error", "note": why if result is None else result["error"]}
    row.update(result)
    row["gflop_per_s"] = row["images_per_s"] * case_gflops(spec)
    return row


def unavailable_row(spec: CaseSpec, note: str) -> dict[str, Any]:
    """A row for a case that cannot run here (e.g. no torch/timm), with the reason in ``note``.

    Example:
        >>> unavailable_row(CaseSpec(TIMM_CASE, "train"), "timm not installed")["status"]
        'unavailable'
    """
    return {**spec.row_fields(), "status": "unavailable", "note": note, "load1": load1()}


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
    return row if row is not None else {**spec.row_fields(), "status": "error", "note": why}


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

    Example (a tiny smoke run of one case, in-process):
        >>> out = tempfile.mkdtemp()
        >>> rows = run_benchmark(Options(output=out, tiny=True, isolation="inprocess", cases=("input_pipeline",),
        ...                              verbose=False))
        >>> [(r["case"], r["status"]) for r in rows], sorted(os.listdir(out))
        ([('input_pipeline', 'ok')], ['bench.csv', 'bench.md', 'machine.json'])
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
