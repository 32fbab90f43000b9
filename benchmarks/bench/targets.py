"""The targets of ``bit-keras bench`` and the machine figures of stored runs: data files, read here.

* ``benchmarks/targets.json``: the targets the rows are held to (training vs timm, share of the FLOP peak,
  the folded export's tolerance and speed), the ratio checks read on the interleaved comparisons
  (``ratio_checks``: :class:`RatioCheck`) and the stored runs that serve as references;
* a reference run (e.g. ``benchmarks/results/amd-epyc-2c-avx512bf16/``) is a measured run: its ``machine.json`` names the
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
    'benchmarks/results/amd-epyc-2c-avx512bf16 (AMD EPYC, 2 cores)'
    >>> ref.timm[("train", 224, 8, "float32")] > 0  # timm's img/s in that run's bench.csv
    True
    >>> reference_for({**ref.machine, "cores": 64}, targets) is None
    True
    >>> [(c.name, c.minimum) for c in targets.ratio_checks]
    [('vs_timm', 1.2), ('vs_baseline_inference', 0.85), ('vs_baseline_inference_folded', 0.85), ('vs_baseline_train', 0.9), ('bf16_vs_fp32', 1.5)]
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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
class RatioCheck:
    """One ratio target of ``targets.json``'s ``ratio_checks``: ``numerator`` rows (row fields that must match,
    e.g. ``{"case": "bit_keras"}``) over ``denominator`` rows with the same point (mode, image size, batch) and the
    same values of the fields in ``same``, at least ``minimum``; restricted to ``modes`` and ``arch`` when given,
    never for the ``exclude_variants`` of the numerator, and only on a CPU with one of ``requires_isa``
    (empty: any).

    Example:
        >>> check = RatioCheck("x", {"case": "a"}, {"case": "b"}, ("precision",), 1.2, modes=("train",))
        >>> check.applies_to({"case": "a", "mode": "train", "variant": "function", "arch": "R50x1"})
        True
        >>> check.pairs_with({"case": "a", "precision": "float32"}, {"case": "b", "precision": "float32"})
        True
    """

    name: str
    numerator: Mapping[str, Any]
    denominator: Mapping[str, Any]
    same: tuple[str, ...]
    minimum: float
    modes: tuple[str, ...] = ()
    arch: str = ""
    exclude_variants: tuple[str, ...] = ()
    requires_isa: tuple[str, ...] = ()
    about: str = ""

    def applies_to(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` is a numerator of this check."""
        return (all(row.get(k) == v for k, v in self.numerator.items())
                and (not self.modes or row.get("mode") in self.modes)
                and (not self.arch or row.get("arch") == self.arch)
                and row.get("variant") not in self.exclude_variants)

    def pairs_with(self, row: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
        """Whether ``other`` is the denominator of numerator ``row`` (the point is matched by the caller)."""
        return (all(other.get(k) == v for k, v in self.denominator.items())
                and all(row.get(k) == other.get(k) for k in self.same) and other is not row)


def _ratio_check(entry: Mapping[str, Any]) -> RatioCheck:
    return RatioCheck(entry["name"], dict(entry["numerator"]), dict(entry["denominator"]),
                      tuple(entry.get("same", ())), float(entry["min"]), tuple(entry.get("modes", ())),
                      entry.get("arch", ""), tuple(entry.get("exclude_variants", ())),
                      tuple(entry.get("requires_isa", ())), entry.get("about", ""))


@dataclass(frozen=True)
class Targets:
    """The targets of ``benchmarks/targets.json`` and the reference runs it lists (absolute paths)."""

    train_vs_timm: float
    inference_flop_peak_fraction: float
    folded_max_abs_diff: float
    folded_min_speed_ratio: float
    reference_runs: tuple[Path, ...]
    path: Path
    ratio_checks: tuple[RatioCheck, ...] = field(default_factory=tuple)

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
                   path, tuple(_ratio_check(entry) for entry in data.get("ratio_checks", ())))


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
