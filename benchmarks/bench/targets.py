"""The targets of ``bit-keras bench`` and the machine figures of stored runs: data files, read here.

* ``benchmarks/targets.json``: the targets the rows are held to (training vs timm, share of the FLOP peak,
  the folded export's tolerance and speed) and the stored runs that serve as references;
* a reference run (e.g. ``benchmarks/results/cpu-quick/``) is a measured run: its ``machine.json`` names the
  machine, its ``bench.csv`` holds the timm rows measured there, and ``machine_figures.json`` the figures the
  benchmark cannot measure (the fp32 FLOP peak per core). It stands in only on a machine of the same kind
  (same cpu, cores, cpu_flags and gpus).

Nothing about a machine or a target is written in code.

Example:
    >>> targets = load_targets()
    >>> targets.train_vs_timm, targets.folded_max_abs_diff, display_path(targets.path)
    (1.2, 1e-05, 'benchmarks/targets.json')
    >>> ref = load_reference(targets.reference_runs[0])
    >>> ref.describe()
    'benchmarks/results/cpu-quick (AMD EPYC, 2 cores)'
    >>> ref.timm[("train", 224, 8, "float32")]  # timm's row of that run's bench.csv
    4.97808
    >>> reference_for({**ref.machine, "cores": 64}, targets) is None
    True
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench.cases import TIMM_CASE

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO = BENCH_DIR.parent
TARGETS_FILE = BENCH_DIR / "targets.json"
MACHINE_FILE = "machine.json"
CSV_FILE = "bench.csv"
FIGURES_FILE = "machine_figures.json"
MATCH_KEYS = ("cpu", "cores", "cpu_flags", "gpus")  # what makes two machines "the same kind"


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the checkout when inside it (as the report names its sources).

    Example:
        >>> display_path(REPO / "benchmarks" / "targets.json"), display_path("/elsewhere/x.json")
        ('benchmarks/targets.json', '/elsewhere/x.json')
    """
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Targets:
    """The targets of ``benchmarks/targets.json`` and the reference runs it lists (absolute paths)."""

    train_vs_timm: float
    inference_flop_peak_fraction: float
    folded_max_abs_diff: float
    folded_min_speed_ratio: float
    reference_runs: tuple[Path, ...]
    path: Path

    def describe(self) -> str:
        """One line naming the file and what it asks for."""
        return (f"{display_path(self.path)}: training >= {self.train_vs_timm:g}x timm's float32 step; batched "
                f"inference >= {self.inference_flop_peak_fraction:.0%} of the fp32 FLOP peak; SavedModels within "
                f"{self.folded_max_abs_diff:g} of the Keras outputs, the folded one >= "
                f"{self.folded_min_speed_ratio:g}x the Keras model's speed")


def load_targets(path: str | os.PathLike = TARGETS_FILE) -> Targets:
    """Read a targets file (``benchmarks/targets.json`` by default)."""
    path = Path(path).resolve()
    data = json.loads(path.read_text(encoding="utf-8"))
    value = {name: float(entry["value"]) for name, entry in data["targets"].items()}
    return Targets(value["train_vs_timm"], value["inference_flop_peak_fraction"], value["folded_max_abs_diff"],
                   value["folded_min_speed_ratio"], tuple(path.parent / run for run in data.get("reference_runs", ())),
                   path)


@dataclass(frozen=True)
class ReferenceRun:
    """A stored measured run: its machine, its timm rows and the machine figures recorded beside them."""

    path: Path
    machine: dict[str, Any]
    timm: dict[tuple[str, int, int, str], float]  # (mode, image size, batch, precision) -> images/s
    fp32_peak_per_core: float | None  # GFLOP/s
    peak_from: str

    def describe(self) -> str:
        """Where the figures come from: the run's folder and its machine."""
        return f"{display_path(self.path)} ({self.machine.get('cpu')}, {self.machine.get('cores')} cores)"


def _timm_rows(csv_path: Path) -> dict[tuple[str, int, int, str], float]:
    if not csv_path.is_file():
        return {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        return {(r["mode"], int(r["image_size"]), int(r["batch_size"]), r["precision"]): float(r["images_per_s"])
                for r in csv.DictReader(f) if r["case"] == TIMM_CASE and r["status"] == "ok" and r["images_per_s"]}


def load_reference(run_dir: str | os.PathLike) -> ReferenceRun:
    """Read a stored run: ``machine.json``, the timm rows of ``bench.csv``, ``machine_figures.json`` if any."""
    run = Path(run_dir)
    machine = json.loads((run / MACHINE_FILE).read_text(encoding="utf-8"))
    figures_file = run / FIGURES_FILE
    figures = json.loads(figures_file.read_text(encoding="utf-8")) if figures_file.is_file() else {}
    peak = figures.get("fp32_peak_gflop_per_s_per_core")
    return ReferenceRun(run, machine, _timm_rows(run / CSV_FILE), float(peak) if peak else None,
                        str(figures.get("fp32_peak_from", "")))


def same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two ``machine.json`` records describe the same kind of machine (:data:`MATCH_KEYS`).

    Example:
        >>> same_machine({"cpu": "X", "cores": 2, "cpu_flags": ["avx2"], "gpus": []},
        ...              {"cpu": "X", "cores": 2, "cpu_flags": ["avx2"], "gpus": [], "load_avg": [3.0]})
        True
    """
    return all(a.get(key) == b.get(key) for key in MATCH_KEYS)


def reference_for(machine: dict[str, Any], targets: Targets) -> ReferenceRun | None:
    """The first reference run of ``targets`` measured on the same kind of machine, or None."""
    for run in targets.reference_runs:
        if (run / MACHINE_FILE).is_file():
            reference = load_reference(run)
            if same_machine(reference.machine, machine):
                return reference
    return None
