"""The benchmark harness (benchmarks.bench.harness): plan, CSV/Markdown output, ratios, peer and export checks.

No timing assertions here: performance is measured by the benchmarks themselves, never in tests. The
runs use a tiny architecture at 32 px with one repeat.
"""

import argparse
import csv
import doctest
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench import harness as bench, report as bench_report

REPO = Path(__file__).resolve().parents[1]
REQUIRED_COLUMNS = {"case", "mode", "image_size", "batch_size", "images_per_s", "peak_mem_mb", "ratio_to_baseline"}
TINY = dict(arch=bench.TINY_ARCH, image_size=32, batch_size=2, warmup=1, repeats=1, min_seconds=0.0, min_steps=1)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny in-process run of every case except the diagnostics, timm forced unavailable."""
    out = tmp_path_factory.mktemp("bench")
    original = bench.timm_available
    bench.timm_available = lambda python=None: False
    try:
        rows = bench.run_benchmark(bench.Options(output=str(out), tiny=True, isolation="inprocess", verbose=False,
                                                 work_dir=str(out / "work")))
    finally:
        bench.timm_available = original
    return out, rows


def test_tiny_run_writes_csv_with_required_columns(tiny_run):
    out, rows = tiny_run
    table = _read_csv(out / "bench.csv")
    assert REQUIRED_COLUMNS <= set(table[0]) and {"variant", "precision"} <= set(table[0])
    assert len(table) == len(rows)
    cases = {r["case"] for r in table}
    assert {"bit_keras", "baseline_resnet50v2", "saved_model", "saved_model_folded", "input_pipeline",
            "timm_resnetv2_50x1_bit"} <= cases
    assert {r["mode"] for r in table} == {"inference", "train"}
    for r in table:
        if r["status"] == "ok":
            assert float(r["images_per_s"]) > 0 and float(r["peak_mem_mb"]) >= 0, r


def test_ratios_are_images_per_s_over_the_baseline(tiny_run):
    out, _ = tiny_run
    table = _read_csv(out / "bench.csv")
    base = {(r["mode"], r["image_size"], r["batch_size"], r["variant"], r["precision"]): float(r["images_per_s"])
            for r in table if r["case"] == "baseline_resnet50v2" and r["status"] == "ok"}
    assert base, "the tiny run has baseline rows"
    checked = 0
    for r in table:
        key = (r["mode"], r["image_size"], r["batch_size"], r["variant"], r["precision"])
        if r["status"] == "ok" and key in base:
            assert math.isclose(float(r["ratio_to_baseline"]), float(r["images_per_s"]) / base[key], rel_tol=1e-3)
            checked += 1
        elif key not in base:
            assert r["ratio_to_baseline"] == ""
    assert checked >= 4  # bit_keras and baseline, inference and train
    assert all(float(r["ratio_to_baseline"]) == 1.0 for r in table if r["case"] == "baseline_resnet50v2")


def test_markdown_report_has_machine_and_table(tiny_run):
    out, _ = tiny_run
    text = (out / "bench.md").read_text(encoding="utf-8")
    assert "## Machine" in text and "TensorFlow" in text and "Keras" in text and "CPU:" in text
    assert bench_report.TABLE_HEADER in text
    assert "| bit_keras | train |" in text
    assert (out / "machine.json").exists()


def test_timm_unavailable_is_reported(tiny_run):
    out, _ = tiny_run
    timm_rows = [r for r in _read_csv(out / "bench.csv") if r["case"] == "timm_resnetv2_50x1_bit"]
    assert timm_rows and all(r["status"] == "unavailable" for r in timm_rows)
    assert all("timm" in r["note"] and r["images_per_s"] == "" for r in timm_rows)
    assert "timm peer: unavailable" in (out / "bench.md").read_text(encoding="utf-8")


def test_exports_match_keras_within_tolerance(tiny_run):
    out, _ = tiny_run
    rows = {r["case"]: r for r in _read_csv(out / "bench.csv") if r["case"].startswith("saved_model")}
    assert set(rows) == {"saved_model", "saved_model_folded"}
    for r in rows.values():
        assert r["status"] == "ok", r
        assert float(r["max_abs_diff"]) <= bench.FOLD_TOLERANCE
    assert "max abs diff vs Keras" in (out / "bench.md").read_text(encoding="utf-8")


def test_folded_export_equality_is_checked(tiny_run, tmp_path):
    out, _ = tiny_run
    work = tmp_path / "work"
    shutil.copytree(out / "work", work)  # the tiny run's exports and reference outputs
    spec = bench.CaseSpec("saved_model_folded", "inference", work_dir=str(work), **TINY)
    row = bench.run_case(spec)
    assert row["status"] == "ok" and row["max_abs_diff"] <= bench.FOLD_TOLERANCE
    reference = np.load(work / "reference_32.npy")
    np.save(work / "reference_32.npy", reference + 1e-3)
    row = bench.run_case(spec)
    assert row["status"] == "mismatch" and "differ" in row["note"]
    assert "MISMATCH" in bench._row_summary(row)


def test_exports_unavailable_without_hub_export(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "hub_export", None)  # makes `import hub_export` raise ImportError
    exports = bench.prepare_exports(bench.TINY_ARCH, tmp_path, [32])
    assert "error" in exports
    spec = bench.CaseSpec("saved_model", "inference", **TINY)
    row = bench._run_one(bench.Options(isolation="inprocess"), spec, exports)
    assert row["status"] == "unavailable" and "hub_export" in row["note"]


def test_timm_rows_unavailable_without_torch(monkeypatch):
    monkeypatch.setattr(bench, "timm_available", lambda python=None: False)
    plan = [s for s in bench.build_plan(bench.Options(quick=True)) if s.case == bench.TIMM_CASE]
    assert {(s.mode, s.image_size, s.batch_size) for s in plan} >= {("train", 224, 8), ("inference", 224, 8), ("train", 128, 16)}
    rows = [bench._run_one(bench.Options(), s, {}) for s in plan]
    assert all(r["status"] == "unavailable" and "pip install" in r["note"] for r in rows)


def test_timm_peer_interpreter_is_named_when_it_cannot_run(tmp_path):
    missing = str(tmp_path / "no-such-venv" / "bin" / "python")
    spec = bench.CaseSpec(bench.TIMM_CASE, "train", **{**TINY, "arch": "R50x1"})
    row = bench._run_one(bench.Options(peer_python=missing), spec, {})
    assert row["status"] == "unavailable" and missing in row["note"] and "--peer-python" in row["note"]
    assert "error" in bench.timm_versions(missing)


def test_timm_peer_script_runs_without_tensorflow():
    """timm_peer.py must run in a PyTorch-only environment: it may not import TensorFlow or bit_keras."""
    code = ("import sys, runpy; sys.modules['tensorflow'] = sys.modules['keras'] = sys.modules['bit_keras'] = None; "
            f"sys.path.insert(0, {str(REPO / 'benchmarks' / 'bench')!r}); sys.argv = ['timm_peer.py', '--versions']; "
            f"runpy.run_path({str(REPO / 'benchmarks' / 'bench' / 'timm_peer.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "tensorflow" not in proc.stderr.lower(), proc.stderr
    import json

    versions = json.loads(proc.stdout.strip().splitlines()[-1])
    # torch/timm are optional: either their versions, or the reason they are missing
    assert set(versions) == {"torch", "timm"} or "No module named" in versions["error"], versions


def test_worker_subprocess_row():
    spec = bench.CaseSpec("bit_keras", "inference", **TINY)
    row = bench.run_isolated(spec, timeout=300)
    assert row["status"] == "ok", row
    assert row["images_per_s"] > 0 and row["peak_mem_mb"] > 0
    assert row["mem_kind"] in ("rss_hwm_delta", "ru_maxrss_delta")


def test_worker_reports_errors_as_rows():
    row = bench.run_isolated(bench.CaseSpec("no_such_case", "inference", **TINY), timeout=300)
    assert row["status"] == "error" and "unknown case" in row["note"]


def test_plans():
    quick = bench.build_plan(bench.Options(quick=True))
    bit = [s for s in quick if s.case == "bit_keras"]
    assert {s.mode for s in bit} == {"inference", "train"}
    assert {s.variant for s in bit} == {"function", "xla", "remat"}
    assert {s.precision for s in bit} == {"float32", "mixed_bfloat16"}
    assert {s.image_size for s in bit} == {128, 224}
    # the rows the targets are read from: tf.function, both precisions; inference at 224, training at both
    assert {(s.mode, s.precision, s.image_size) for s in bit if s.variant == "function"} == {
        (m, p, z) for m, z in (("inference", 224), ("train", 224), ("train", 128))
        for p in ("float32", "mixed_bfloat16")}
    assert [(s.mode, s.precision, s.image_size) for s in bit if s.variant == "xla"] == [("inference", "float32", 224)]
    assert [(s.mode, s.precision, s.image_size) for s in bit if s.variant == "remat"] == [("train", "float32", 224)]
    # every bit_keras row has its baseline counterpart
    keys = {(s.mode, s.variant, s.precision, s.image_size, s.batch_size) for s in quick if s.case == "baseline_resnet50v2"}
    assert all((s.mode, s.variant, s.precision, s.image_size, s.batch_size) in keys for s in bit if s.variant != "remat")
    assert not any(s.variant == "remat" for s in quick if s.case == "baseline_resnet50v2")  # it has no units
    full = bench.build_plan(bench.Options())
    assert len({(s.image_size, s.batch_size) for s in full if s.case == "bit_keras"}) == 7  # 6 + serving
    for plan in (quick, full):  # serving one image: Keras model, baseline, plain and folded SavedModel
        assert {s.case for s in plan if (s.image_size, s.batch_size) == (224, 1)} == {
            "bit_keras", "baseline_resnet50v2", "saved_model", "saved_model_folded"}
    assert {s.variant for s in full if s.case == "bit_keras"} == {"eager", "function", "xla", "remat"}
    assert {"diag_plain_conv", "diag_no_norm", "diag_plain_conv_no_norm"} <= {s.case for s in full}
    gpu = bench.build_plan(bench.Options(quick=True), gpu=True)
    assert {s.arch for s in gpu if s.case == "bit_keras"} == {"R50x1", "R101x3"}
    assert "mixed_float16" in {s.precision for s in gpu} and all(s.device == "gpu" for s in gpu)
    assert not [s for s in gpu if s.case == "baseline_resnet50v2" and s.arch != "R50x1"]
    only = bench.build_plan(bench.Options(quick=True, cases=("input_pipeline",)))
    assert {s.case for s in only} == {"input_pipeline"}


def test_diagnostic_models_replace_layers():
    from bit_keras.models.layers import GroupNorm, StandardizedConv2D

    spec = bench.CaseSpec("diag_plain_conv", "inference", **TINY)
    model = bench.build_model(spec)
    assert not any(isinstance(layer, StandardizedConv2D) for layer in model.layers)
    assert any(isinstance(layer, GroupNorm) for layer in model.layers)
    model = bench.build_model(bench.CaseSpec("diag_no_norm", "inference", **TINY))
    assert not any(isinstance(layer, GroupNorm) for layer in model.layers)
    assert model(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 1000)


def test_flop_count_of_r50x1():
    assert bench.resnet_v2_gflops((3, 4, 6, 3), 1, 224) == pytest.approx(8.2, abs=0.1)
    assert bench.case_gflops(bench.CaseSpec("bit_keras", "train")) == pytest.approx(3 * 8.2, abs=0.3)
    assert bench.case_gflops(bench.CaseSpec("input_pipeline", "train")) is None


def test_memory_probe_measures_growth():
    probe = bench.MemoryProbe()
    probe.start()
    block = np.ones(64 << 18, np.float32)  # 64 MiB, touched
    mb, kind = probe.peak_mb()
    del block
    assert mb > 50 and kind in ("rss_hwm_delta", "ru_maxrss_delta")


def test_bench_options_parse():
    parser = argparse.ArgumentParser(prog="bit-keras bench")
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--output", "out", "--cases", "input_pipeline", "--points", "64x4",
                              "--no-timm"])
    opts = bench.options_from_args(args)
    assert opts.quick and opts.output == "out" and opts.cases == ("input_pipeline",)
    assert opts.point_override == ((64, 4),) and not opts.check_timm
    with pytest.raises(SystemExit):
        bench.options_from_args(parser.parse_args(["--cases", "nope"]))


def test_cli_bench_runs_the_checkout_harness(tmp_path, monkeypatch, capsys):
    from bit_keras import cli

    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    assert cli.main(["bench", "--tiny", "--isolation", "inprocess", "--cases", "input_pipeline",
                     "--output", str(out)]) == 0
    assert [r["case"] for r in _read_csv(out / "bench.csv")] == ["input_pipeline"]
    monkeypatch.chdir(tmp_path)
    import bit_keras

    monkeypatch.setattr(bit_keras, "__file__", str(tmp_path / "site-packages" / "bit_keras" / "__init__.py"))
    assert cli.main(["bench", "--tiny"]) == 1
    assert "runs the benchmarks of a checkout" in capsys.readouterr().err


def test_run_script_from_repo_root(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--tiny", "--isolation", "inprocess", "--cases", "input_pipeline",
         "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| input_pipeline | train |" in proc.stdout
    assert [r["case"] for r in _read_csv(out / "bench.csv")] == ["input_pipeline"]


@pytest.mark.parametrize("name", ["benchmarks.bench.harness", "benchmarks.bench.cases", "benchmarks.bench.report",
                                  "benchmarks.bench.timing", "benchmarks.bench.timm_peer", "bit_keras.cli.bench"])
def test_docstring_examples(name):
    import importlib

    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_timm_ratios_compare_like_with_like():
    """ratio_to_timm: same mode, size, batch and precision; never for the input pipeline."""
    def row(case, mode, precision, ips, variant="function"):
        return {"case": case, "mode": mode, "image_size": 224, "batch_size": 8, "variant": variant,
                "precision": precision, "images_per_s": ips, "status": "ok", "arch": "R50x1"}

    rows = bench_report.add_ratios([
        row(bench.TIMM_CASE, "train", "float32", 5.0, "torch_eager"),
        row(bench.TIMM_CASE, "train", "mixed_bfloat16", 10.0, "torch_eager"),
        row("bit_keras", "train", "float32", 6.0), row("bit_keras", "train", "mixed_bfloat16", 8.0),
        row("bit_keras", "inference", "float32", 20.0), row("input_pipeline", "train", "float32", 900.0, "tf.data"),
    ])
    assert [r["ratio_to_timm"] for r in rows] == ["", "", 1.2, 0.8, "", ""]
    (train,) = [line for line in bench_report.summary_lines(rows, cores=2) if " train " in line]
    # the best setting (bf16, 8 img/s) against timm's float32 (the target) and against timm's own bf16
    assert "timm float32 5.00 (measured): 1.60x timm" in train
    assert "vs timm also in mixed_bfloat16 (10.00 img/s): 0.80x" in train


def test_serving_rows_are_not_held_to_the_batched_flop_target():
    rows = [{"case": "bit_keras", "mode": "inference", "image_size": 224, "batch_size": 1, "variant": "function",
             "precision": "float32", "images_per_s": 9.0, "status": "ok", "arch": "R50x1", "cpu_ms_per_image": 200}]
    (line,) = bench_report.summary_lines(rows, cores=2)
    assert "serving one image" in line and "NOT met" not in line


@pytest.mark.gpu
def test_gpu_mode_runs_on_the_gpu(tmp_path):
    """--device gpu: rows run on the GPU (allocator peak memory), mixed_float16 included, folded export checked."""
    rows = bench.run_benchmark(bench.Options(
        output=str(tmp_path), tiny=True, device="gpu", precisions=("float32", "mixed_float16"), verbose=False,
        cases=("bit_keras", "baseline_resnet50v2", "saved_model_folded"), work_dir=str(tmp_path / "work")))
    assert rows and all(r["status"] == "ok" for r in rows), [(r["case"], r.get("note")) for r in rows]
    assert {r["mem_kind"] for r in rows} == {"gpu_peak"}
    assert {"float32", "mixed_float16"} <= {r["precision"] for r in rows if r["case"] == "bit_keras"}
    assert all(float(r["max_abs_diff"]) <= bench.FOLD_TOLERANCE for r in rows if r["case"] == "saved_model_folded")
