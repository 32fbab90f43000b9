"""The benchmark harness (benchmarks/bench): plan, the library code each row runs, CSV/Markdown output, ratios,
targets and reference figures read from data files, the timm peer and the export checks.

No timing assertions here: performance is measured by the benchmarks themselves, never in tests. The
runs use the zoo's tiny architecture at 32 px with one repeat.
"""

import argparse
import csv
import doctest
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench import cases, harness as bench, report as bench_report, rows, targets as bench_targets
from benchmarks.bench.cases import CaseSpec

REPO = Path(__file__).resolve().parents[1]
REQUIRED_COLUMNS = {"case", "mode", "image_size", "batch_size", "images_per_s", "peak_mem_mb", "ratio_to_baseline"}
TINY = dict(arch=cases.TINY_ARCH, image_size=32, batch_size=2, warmup=1, repeats=1, min_seconds=0.0, min_steps=1)


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
        result = bench.run_benchmark(bench.Options(output=str(out), tiny=True, isolation="inprocess", verbose=False,
                                                   work_dir=str(out / "work")))
    finally:
        bench.timm_available = original
    return out, result


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_tiny_run_writes_csv_with_required_columns(tiny_run):
    out, result = tiny_run
    table = _read_csv(out / "bench.csv")
    assert REQUIRED_COLUMNS <= set(table[0]) and {"variant", "precision"} <= set(table[0])
    assert len(table) == len(result)
    assert {r["case"] for r in table} >= {"bit_keras", "baseline_resnet50v2", "saved_model", "saved_model_folded",
                                          "input_pipeline", "timm_resnetv2_50x1_bit"}
    assert {r["mode"] for r in table} == {"inference", "train"}
    assert {r["arch"] for r in table if r["case"] == "bit_keras"} == {"R14x0.25"}  # the zoo's TINY_ARCH
    ok = [r for r in table if r["status"] == "ok"]
    assert {r["case"] for r in ok} >= {"bit_keras", "baseline_resnet50v2", "input_pipeline"}
    for r in ok:
        assert float(r["images_per_s"]) > 0 and float(r["peak_mem_mb"]) >= 0, r


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_ratios_are_images_per_s_over_the_baseline(tiny_run):
    out, _ = tiny_run
    table = _read_csv(out / "bench.csv")
    base = {(r["mode"], r["image_size"], r["batch_size"], r["variant"], r["precision"]): float(r["images_per_s"])
            for r in table if r["case"] == "baseline_resnet50v2" and r["status"] == "ok"}
    assert len(base) == 2, "the tiny run has inference and training baseline rows"
    checked = 0
    for r in table:
        key = (r["mode"], r["image_size"], r["batch_size"], r["variant"], r["precision"])
        if r["case"] == "bit_keras":
            assert math.isclose(float(r["ratio_to_baseline"]), float(r["images_per_s"]) / base[key], rel_tol=1e-3)
            checked += 1
        elif key not in base:
            assert r["ratio_to_baseline"] == "", r
    assert checked == 2


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_markdown_report_names_machine_sources_and_rows(tiny_run):
    out, _ = tiny_run
    text = (out / "bench.md").read_text(encoding="utf-8")
    assert "## Machine" in text and "TensorFlow" in text and "Keras" in text and "CPU:" in text
    assert "- targets: benchmarks/targets.json: training >= 1.2x timm's float32 step" in text
    assert "- figures not measured in this run: " in text
    assert bench_report.TABLE_HEADER in text
    assert "| bit_keras | train | function | float32 | R14x0.25 | 32 | 2 |" in text
    assert json.loads((out / "machine.json").read_text())["title"] == "bit-keras bench (--tiny)"


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_timm_unavailable_is_reported(tiny_run):
    out, _ = tiny_run
    timm_rows = [r for r in _read_csv(out / "bench.csv") if r["case"] == "timm_resnetv2_50x1_bit"]
    assert timm_rows and all(r["status"] == "unavailable" for r in timm_rows)
    assert all("timm" in r["note"] and r["images_per_s"] == "" for r in timm_rows)
    assert "timm peer: unavailable" in (out / "bench.md").read_text(encoding="utf-8")


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_exports_match_keras_within_tolerance(tiny_run):
    out, _ = tiny_run
    exported = {r["case"]: r for r in _read_csv(out / "bench.csv") if r["case"].startswith("saved_model")}
    assert set(exported) == {"saved_model", "saved_model_folded"}
    tolerance = bench_targets.load_targets().folded_max_abs_diff
    for r in exported.values():
        assert r["status"] == "ok", r
        assert float(r["max_abs_diff"]) <= tolerance
    metadata = json.loads((out / "work" / "saved_model_folded" / "metadata.json").read_text())
    assert metadata["kind"] == "classifier"  # written by hub_export.export
    assert "max abs diff vs Keras" in (out / "bench.md").read_text(encoding="utf-8")


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_folded_export_equality_is_checked(tiny_run, tmp_path):
    out, _ = tiny_run
    work = tmp_path / "work"
    shutil.copytree(out / "work", work)  # the tiny run's exports and reference outputs
    spec = CaseSpec("saved_model_folded", "inference", work_dir=str(work), **TINY)
    row = rows.run_case(spec)
    assert row["status"] == "ok" and row["max_abs_diff"] <= 1e-5
    reference = np.load(work / "reference_32.npy")
    np.save(work / "reference_32.npy", reference + 1e-3)
    row = rows.run_case(spec)
    assert row["status"] == "mismatch" and "differ" in row["note"]
    assert "MISMATCH" in bench._row_summary(row)


def test_exports_unavailable_without_hub_export(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "hub_export", None)  # makes `import hub_export` raise ImportError
    exports = rows.prepare_exports(cases.TINY_ARCH, tmp_path, [32])
    assert "error" in exports
    row = bench._run_one(bench.Options(isolation="inprocess"), CaseSpec("saved_model", "inference", **TINY), exports)
    assert row["status"] == "unavailable" and "hub_export" in row["note"]


def test_training_rows_run_the_engines_train_step(monkeypatch):
    """Each training variant builds the engine's TrainStep with its option, and every timed step is its call."""
    from bit_keras.train.step import TrainStep

    built, calls = [], []
    init, call = TrainStep.__init__, TrainStep.__call__

    def spy_init(self, *args, **kwargs):
        built.append(kwargs)
        init(self, *args, **kwargs)

    def spy_call(self, batch):
        calls.append(self)
        return call(self, batch)

    monkeypatch.setattr(TrainStep, "__init__", spy_init)
    monkeypatch.setattr(TrainStep, "__call__", spy_call)
    row = rows.run_case(CaseSpec("bit_keras", "train", "function", **TINY))
    assert row["status"] == "ok", row
    assert len(calls) == row["steps"] + TINY["warmup"]  # the first (tracing) call, then the timed steps
    assert built[-1]["loss"] == "softmax" and built[-1]["batch_size"] == 2
    spec = CaseSpec("bit_keras", "train", **TINY)
    model, optimizer = rows.build_for(spec)
    for variant, option in (("xla", "jit_compile"), ("remat", "remat"), ("eager", "run_eagerly")):
        rows.train_step(model, optimizer, *rows.inputs(spec), variant)
        assert built[-1].get(option) is True, (variant, built[-1])
    assert float(optimizer.learning_rate) == pytest.approx(rows.LEARNING_RATE)  # make_optimizer starts at 0


def test_remat_of_a_model_without_units_is_the_engines_error():
    """The remat row goes through TrainStep(remat=True): a network without BiT units gets its ConfigError."""
    row = rows.run_case(CaseSpec("baseline_resnet50v2", "train", "remat", **TINY))
    assert row["status"] == "error" and row["note"].startswith("ConfigError: remat:"), row


def test_mixed_precision_rows_build_as_the_engine_does():
    spec = CaseSpec("bit_keras", "train", precision="mixed_float16", **TINY)
    model, optimizer = rows.build_for(spec)
    assert model.dtype_policy.name == "mixed_float16"
    assert type(optimizer).__name__ == "LossScaleOptimizer"  # make_optimizer(mixed_precision="mixed_float16")
    import keras

    assert keras.config.dtype_policy().name == "float32"  # dtype_policy restored the global policy


def test_diagnostic_models_are_built_by_resnet_v2_with_the_given_layers(monkeypatch):
    import keras

    from bit_keras.models import resnet
    from bit_keras.models.layers import GroupNorm, StandardizedConv2D

    seen = []
    builder = resnet.resnet_v2

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return builder(*args, **kwargs)

    monkeypatch.setattr(resnet, "resnet_v2", spy)
    bit = cases.build_model(CaseSpec("bit_keras", "inference", **TINY))
    plain = cases.build_model(CaseSpec("diag_plain_conv", "inference", **TINY))
    no_norm = cases.build_model(CaseSpec("diag_no_norm", "inference", **TINY))
    neither = cases.build_model(CaseSpec("diag_plain_conv_no_norm", "inference", **TINY))
    assert len(seen) == 4 and "conv_layer" not in seen[0] and "norm_layer" not in seen[0]
    assert seen[1]["conv_layer"] is keras.layers.Conv2D and "norm_layer" not in seen[1]
    assert seen[2]["norm_layer"] is cases.identity_norm and seen[3]["conv_layer"] is keras.layers.Conv2D

    def kinds(model):
        return {type(layer) for layer in model.layers}

    assert StandardizedConv2D not in kinds(plain) and keras.layers.Conv2D in kinds(plain) and GroupNorm in kinds(plain)
    assert GroupNorm not in kinds(no_norm) and StandardizedConv2D in kinds(no_norm)
    assert not kinds(neither) & {GroupNorm, StandardizedConv2D}
    # the same network: every layer of the BiT model, by name, in each diagnostic
    names = [layer.name for layer in bit.layers]
    assert all([layer.name for layer in m.layers] == names for m in (plain, no_norm, neither))
    assert no_norm(np.zeros((1, 32, 32, 3), "float32")).shape == (1, 1000)


def test_input_pipeline_row_runs_the_librarys_pipeline(monkeypatch):
    from bit_keras.data import pipelines, sources

    used = {}
    load, pipeline = sources.load_dataset, pipelines.train_pipeline

    def spy_load(source, **kwargs):
        ds, info = load(source, **kwargs)
        used["info"] = info
        return ds, info

    def spy_pipeline(ds, info, **kwargs):
        used["pipeline"] = kwargs
        return pipeline(ds, info, **kwargs)

    monkeypatch.setattr(sources, "load_dataset", spy_load)
    monkeypatch.setattr(pipelines, "train_pipeline", spy_pipeline)
    row = rows.run_case(CaseSpec("input_pipeline", "train", "tf.data", **{**TINY, "arch": "-"}))
    assert row["status"] == "ok" and row["images_per_s"] > 0, row
    assert used["info"].num_examples == 16 and used["info"].num_classes == rows.PIPELINE_CLASSES
    assert used["pipeline"] == {"resize": 37, "crop": 32, "batch_size": 2, "cache": False}


def test_timm_rows_unavailable_without_torch(monkeypatch):
    monkeypatch.setattr(bench, "timm_available", lambda python=None: False)
    plan = [s for s in bench.build_plan(bench.Options(quick=True)) if s.case == cases.TIMM_CASE]
    assert {(s.mode, s.image_size, s.batch_size) for s in plan} == {
        ("train", 224, 8), ("inference", 224, 8), ("train", 128, 16)}
    result = [bench._run_one(bench.Options(), s, {}) for s in plan]
    assert all(r["status"] == "unavailable" and "pip install" in r["note"] for r in result)


def test_timm_peer_interpreter_is_named_when_it_cannot_run(tmp_path):
    missing = str(tmp_path / "no-such-venv" / "bin" / "python")
    spec = CaseSpec(cases.TIMM_CASE, "train", **{**TINY, "arch": "R50x1"})
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
    versions = json.loads(proc.stdout.strip().splitlines()[-1])
    # torch/timm are optional: either their versions, or the reason they are missing
    assert set(versions) == {"torch", "timm"} or "No module named" in versions["error"], versions


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_worker_subprocess_row_finds_the_checkout_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the worker finds benchmarks/ through _worker_env's PYTHONPATH, not the cwd
    monkeypatch.delenv("PYTHONPATH", raising=False)
    row = bench.run_isolated(CaseSpec("bit_keras", "inference", **TINY), timeout=300)
    assert row["status"] == "ok", row
    assert row["images_per_s"] > 0 and row["peak_mem_mb"] > 0
    assert row["mem_kind"] in ("rss_hwm_delta", "ru_maxrss_delta")
    row = bench.run_isolated(CaseSpec("no_such_case", "inference", **TINY), timeout=300)
    assert row["status"] == "error" and "unknown case" in row["note"]


def test_plans():
    quick = bench.build_plan(bench.Options(quick=True))
    bit = [s for s in quick if s.case == "bit_keras"]
    assert {s.mode for s in bit} == {"inference", "train"}
    assert {s.variant for s in bit} == {"function", "xla", "remat"}
    assert {s.precision for s in bit} == {"float32", "mixed_bfloat16"}
    assert {s.image_size for s in bit} == {128, 224}
    # the rows the targets are read from: tf.function, both precisions; inference at 224, training at both
    assert {(s.mode, s.precision, s.image_size) for s in bit if s.variant == "function" and s.batch_size > 1} == {
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
    assert {(s.image_size, s.batch_size) for s in full if s.case == cases.TIMM_CASE} == {(224, 8), (128, 16)}
    gpu = bench.build_plan(bench.Options(quick=True), gpu=True)
    assert {s.arch for s in gpu if s.case == "bit_keras"} == {"R50x1", "R101x3"}
    assert "mixed_float16" in {s.precision for s in gpu} and all(s.device == "gpu" for s in gpu)
    assert not [s for s in gpu if s.case == "baseline_resnet50v2" and s.arch != "R50x1"]
    tiny = bench.build_plan(bench.Options(tiny=True))
    assert {s.arch for s in tiny if s.case in cases.MODEL_CASES} == {"R14x0.25"} and all(s.repeats == 1 for s in tiny)
    only = bench.build_plan(bench.Options(quick=True, cases=("input_pipeline",)))
    assert {s.case for s in only} == {"input_pipeline"}
    diag = bench.build_plan(bench.Options(tiny=True, diagnostics=True, variants=("remat",)))
    assert {(s.case, s.mode) for s in diag if s.case.startswith("diag")} == {(c, "train") for c in cases.DIAG_CASES}


def test_flops_come_from_the_arch_spec():
    from bit_keras.models.spec import ARCHS

    assert cases.case_gflops(CaseSpec("bit_keras", "inference")) == pytest.approx(8.2, abs=0.05)
    assert cases.case_gflops(CaseSpec("bit_keras", "train", arch="R101x3", image_size=128)) == pytest.approx(
        3 * ARCHS["R101x3"].gflops(128))
    tiny = cases.case_gflops(CaseSpec("diag_no_norm", "inference", **TINY))
    assert tiny == pytest.approx(ARCHS["R14x0.25"].gflops(32)) and tiny < 0.1
    timm = CaseSpec(cases.TIMM_CASE, "inference", arch="-", image_size=128)
    assert cases.case_gflops(timm) == pytest.approx(ARCHS["R50x1"].gflops(128))
    assert cases.case_gflops(CaseSpec("input_pipeline", "train")) is None


def test_memory_probe_measures_growth():
    from benchmarks.bench.timing import MemoryProbe

    probe = MemoryProbe()
    probe.start()
    block = np.ones(64 << 18, np.float32)  # 64 MiB, touched
    mb, kind = probe.peak_mb()
    del block
    assert mb > 50 and kind in ("rss_hwm_delta", "ru_maxrss_delta")


def test_bench_options_parse():
    parser = argparse.ArgumentParser(prog="bit-keras bench")
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--output", "out", "--cases", "input_pipeline", "--points", "64x4",
                              "--no-timm", "--peer-python", "/x/python"])
    opts = bench.options_from_args(args)
    assert opts.quick and opts.output == "out" and opts.cases == ("input_pipeline",)
    assert opts.point_override == ((64, 4),) and not opts.check_timm and opts.peer_python == "/x/python"
    assert opts.target_points() == [(64, 4)]
    with pytest.raises(SystemExit, match="unknown case"):
        bench.options_from_args(parser.parse_args(["--cases", "nope"]))


def test_cli_bench_runs_the_checkout_harness(tmp_path, monkeypatch, capsys):
    from bit_keras import cli

    monkeypatch.chdir(REPO)
    out = tmp_path / "out"
    assert cli.main(["bench", "--tiny", "--isolation", "inprocess", "--cases", "input_pipeline",
                     "--output", str(out)]) == 0
    assert [r["case"] for r in _read_csv(out / "bench.csv")] == ["input_pipeline"]
    (out / "bench.md").unlink()
    assert cli.main(["bench", "--report-only", "--output", str(out)]) == 0
    assert "| input_pipeline | train |" in (out / "bench.md").read_text(encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    import bit_keras

    monkeypatch.setattr(bit_keras, "__file__", str(tmp_path / "site-packages" / "bit_keras" / "__init__.py"))
    assert cli.main(["bench", "--tiny"]) == 1
    assert "runs the benchmarks of a checkout" in capsys.readouterr().err


@pytest.mark.slow  # a whole tiny benchmark run or a fresh process
def test_run_script_from_repo_root(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--tiny", "--isolation", "inprocess", "--cases", "input_pipeline",
         "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| input_pipeline | train |" in proc.stdout
    assert [r["case"] for r in _read_csv(out / "bench.csv")] == ["input_pipeline"]


@pytest.mark.parametrize("name", ["benchmarks.bench.harness", "benchmarks.bench.cases", "benchmarks.bench.rows",
                                  "benchmarks.bench.report", "benchmarks.bench.targets", "benchmarks.bench.timing",
                                  "benchmarks.bench.timm_peer", "bit_keras.cli.bench"])
def test_docstring_examples(name):
    import importlib

    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- the report, targets and figures


def _row(case, mode, precision, ips, variant="function", size=224, batch=8, **extra):
    return {"case": case, "mode": mode, "image_size": size, "batch_size": batch, "variant": variant,
            "precision": precision, "images_per_s": ips, "status": "ok", "arch": "R50x1", **extra}


def _figures(**kwargs):
    return bench_report.Figures(bench_targets.load_targets(), **kwargs)


def test_timm_ratios_compare_like_with_like():
    """ratio_to_timm: same mode, size, batch and precision; never for the input pipeline."""
    result = bench_report.add_ratios([
        _row(cases.TIMM_CASE, "train", "float32", 5.0, "torch_eager"),
        _row(cases.TIMM_CASE, "train", "mixed_bfloat16", 10.0, "torch_eager"),
        _row("bit_keras", "train", "float32", 6.0), _row("bit_keras", "train", "mixed_bfloat16", 8.0),
        _row("bit_keras", "inference", "float32", 20.0), _row("input_pipeline", "train", "float32", 900.0, "tf.data"),
    ])
    assert [r["ratio_to_timm"] for r in result] == ["", "", 1.2, 0.8, "", ""]
    (train,) = [line for line in bench_report.summary_lines(result, _figures(cores=2)) if " train " in line]
    # the best setting (bf16, 8 img/s) against timm's float32 (the target) and against timm's own bf16
    assert "timm float32 5.00 (measured in this run): 1.60x timm, target 1.2x = 6.0 img/s: met" in train
    assert "vs timm also in mixed_bfloat16 (10.00 img/s, measured in this run): 0.80x" in train


def test_serving_rows_are_not_held_to_the_batched_flop_target():
    result = [_row("bit_keras", "inference", "float32", 9.0, batch=1, cpu_ms_per_image=200)]
    (line,) = bench_report.summary_lines(result, _figures(cores=2))
    assert "serving one image" in line and "NOT met" not in line and "FLOP peak recorded" not in line


def test_reference_figures_stand_in_on_the_same_kind_of_machine_only():
    """timm's rates and the FLOP peak come from benchmarks/results/cpu-quick only where the machine matches."""
    targets = bench_targets.load_targets()
    reference = bench_targets.load_reference(REPO / "benchmarks" / "results" / "cpu-quick")
    assert bench_targets.reference_for(reference.machine, targets) == reference
    ours = [_row("bit_keras", "train", "float32", 6.0, cpu_ms_per_image=300),
            _row("bit_keras", "inference", "float32", 20.0, cpu_ms_per_image=100)]
    same = bench_report.summary_lines(ours, bench_report.Figures(targets, 2, reference))
    train = next(line for line in same if " train " in line)
    assert "timm float32 4.98 (from benchmarks/results/cpu-quick (AMD EPYC, 2 cores)): 1.21x timm, target 1.2x = 6.0 img/s: met" in train
    inference = next(line for line in same if " inference " in line)
    assert "of ~294 GFLOP/s fp32 peak (2 x 147 per core from benchmarks/results/cpu-quick" in inference
    assert "target 50% of the peak = 18.0 img/s: met" in inference
    other = {**reference.machine, "cpu": "Some Other CPU"}
    assert bench_targets.reference_for(other, targets) is None
    elsewhere = bench_report.summary_lines(ours, bench_report.Figures(targets, 2, None))
    assert not any("timm" in line for line in elsewhere)
    assert "no fp32 FLOP peak recorded for this machine" in next(line for line in elsewhere if " inference " in line)
    text = bench_report.render_markdown(ours, other, targets=targets)
    assert "figures not measured in this run: none" in text


def test_targets_are_read_from_the_targets_file(tmp_path):
    data = json.loads(bench_targets.TARGETS_FILE.read_text())
    data["targets"]["train_vs_timm"]["value"] = 2.0
    data["targets"]["folded_min_speed_ratio"]["value"] = 1.5
    data["reference_runs"] = [str(REPO / "benchmarks" / "results" / "cpu-quick")]
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(data))
    targets = bench_targets.load_targets(path)
    result = [_row(cases.TIMM_CASE, "train", "float32", 5.0, "torch_eager"), _row("bit_keras", "train", "float32", 6.0),
              _row("bit_keras", "inference", "float32", 10.0),
              _row("saved_model_folded", "inference", "float32", 12.0, max_abs_diff=1e-6)]
    lines = bench_report.summary_lines(result, bench_report.Figures(targets, 2))
    assert "target 2x = 10.0 img/s: NOT met" in next(line for line in lines if " train " in line)
    assert "1.20x the Keras model (slower)" in next(line for line in lines if "folded" in line)
    reference = bench_targets.load_reference(REPO / "benchmarks" / "results" / "cpu-quick")
    text = bench_report.render_markdown(result, reference.machine, targets=targets)
    assert f"- targets: {path}: training >= 2x timm's float32 step" in text
    assert "- figures not measured in this run: benchmarks/results/cpu-quick (AMD EPYC, 2 cores)" in text


@pytest.mark.gpu
def test_gpu_mode_runs_on_the_gpu(tmp_path):
    """--device gpu: rows run on the GPU (allocator peak memory), mixed_float16 included, folded export checked."""
    result = bench.run_benchmark(bench.Options(
        output=str(tmp_path), tiny=True, device="gpu", precisions=("float32", "mixed_float16"), verbose=False,
        cases=("bit_keras", "baseline_resnet50v2", "saved_model_folded"), work_dir=str(tmp_path / "work")))
    assert result and all(r["status"] == "ok" for r in result), [(r["case"], r.get("note")) for r in result]
    assert {r["mem_kind"] for r in result} == {"gpu_peak"}
    assert {"float32", "mixed_float16"} <= {r["precision"] for r in result if r["case"] == "bit_keras"}
    tolerance = bench_targets.load_targets().folded_max_abs_diff
    assert all(float(r["max_abs_diff"]) <= tolerance for r in result if r["case"] == "saved_model_folded")
