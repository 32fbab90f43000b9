"""The report of ``bit-keras bench``: ratios, ``bench.csv``, ``bench.md`` and the "where we stand" summary.

The targets and the figures this run cannot measure come from data files (:mod:`benchmarks.bench.targets`),
and the report names the file each one came from. Every ratio between two rows of one comparison group (the
same ``group`` in ``bench.csv``: run in interleaved rounds) is the median of the per-round ratios, with its
min-max (:func:`benchmarks.bench.interleave.ratio_stats`); rows of different groups or runs are compared by the
ratio of their medians and marked "not interleaved".

Example:
    >>> rows = [{"case": "baseline_resnet50v2", "mode": "train", "image_size": 128, "batch_size": 8,
    ...          "variant": "xla", "precision": "float32", "images_per_s": 20.0, "status": "ok"},
    ...         {"case": "bit_keras", "mode": "train", "image_size": 128, "batch_size": 8,
    ...          "variant": "xla", "precision": "float32", "images_per_s": 25.0, "status": "ok"}]
    >>> add_ratios(rows)[1]["ratio_to_baseline"]
    1.25
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from benchmarks.bench.cases import (BASELINE_CASE, BIT_CASE, FOLDED_CASE, KERAS_FOLDED_CASE, MODES, PEER_ARCH,
                                   PIPELINE_CASE, SAVED_MODEL_CASE, TIMM_CASE)
from benchmarks.bench.interleave import format_ratio, ratio_stats
from benchmarks.bench.machine import isa_summary, machine_slug, onednn_summary, start_load_warning
from benchmarks.bench.op_profile import format_shares, parse_shares_cell, shares_cell
from benchmarks.bench.targets import (MATCH_KEYS, RatioCheck, ReferenceRun, Targets, display_path, load_targets,
                                      reference_for)
from benchmarks.bench.timing import round_rates
from bit_keras.models.spec import ARCHS

CSV_COLUMNS = (
    "case", "mode", "variant", "precision", "arch", "image_size", "batch_size",
    "images_per_s", "peak_mem_mb", "ratio_to_baseline", "ratio_to_timm",
    "images_per_s_max", "cpu_ms_per_image", "gflop_per_s", "first_call_s", "steps", "seconds", "mem_kind",
    "max_abs_diff", "load1", "status", "note",
    "batch_split", "group", "rounds", "round_images_per_s", "ratio_to_baseline_spread", "ratio_to_timm_spread",
    "profile_shares",
)

def ok_row(row: dict[str, Any]) -> bool:
    """Whether a row has a measured images/s (``ok``, or ``mismatch``: measured, but the outputs differ)."""
    return row.get("status") in ("ok", "mismatch") and bool(row.get("images_per_s"))


def _key(row: dict[str, Any]) -> tuple:
    return (row["mode"], int(row["image_size"]), int(row["batch_size"]), row["variant"], row["precision"])


def _timm_key(row: dict[str, Any]) -> tuple:
    return (row["mode"], int(row["image_size"]), int(row["batch_size"]), row["precision"])


def _split(row: dict[str, Any]) -> int:
    return int(row.get("batch_split") or 1)


def pair_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """images/s of row ``a`` over row ``b``: the median and min-max of the per-round ratios when both ran in the
    same interleaved group (``interleaved: True``), else the ratio of their medians (``rounds: 0``).

    Example:
        >>> a = {"group": 1, "images_per_s": 6.0, "round_images_per_s": "6;5.5;6.6", "status": "ok"}
        >>> b = {"group": 1, "images_per_s": 5.0, "round_images_per_s": "5;5;6", "status": "ok"}
        >>> pair_stats(a, b)
        {'median': 1.1, 'min': 1.1, 'max': 1.2, 'rounds': 3, 'interleaved': True}
        >>> pair_stats(a, {**b, "group": 2})
        {'median': 1.2, 'min': 1.2, 'max': 1.2, 'rounds': 0, 'interleaved': False}
    """
    if not (ok_row(a) and ok_row(b)):
        return None
    ra, rb = round_rates(a.get("round_images_per_s")), round_rates(b.get("round_images_per_s"))
    if a.get("group") not in (None, "") and a.get("group") == b.get("group") and ra and len(ra) == len(rb):
        stats = ratio_stats(ra, rb)
        if stats:
            return {**stats, "interleaved": True}
    ratio = round(float(a["images_per_s"]) / float(b["images_per_s"]), 4)
    return {"median": ratio, "min": ratio, "max": ratio, "rounds": 0, "interleaved": False}


def describe_ratio(stats: dict[str, Any] | None) -> str:
    """``1.10x (1.00-1.20, 3 rounds)``, or ``1.20x (not interleaved)``.

    Example:
        >>> describe_ratio({"median": 1.2, "min": 1.2, "max": 1.2, "rounds": 0, "interleaved": False})
        '1.20x (not interleaved)'
    """
    if not stats:
        return ""
    if not stats.get("interleaved"):
        return f"{stats['median']:.2f}x (not interleaved)"
    return format_ratio(stats)


def _spread(stats: dict[str, Any] | None) -> str:
    return f"{stats['min']:.4g}-{stats['max']:.4g}" if stats and stats.get("interleaved") else ""


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill ``ratio_to_baseline`` (images/s over the baseline row with the same mode, image size, batch
    size, variant and precision) and ``ratio_to_timm`` (over timm's row with the same mode, size, batch
    and precision), each the median of the per-round ratios where the two ran interleaved (its min-max in
    ``ratio_to_baseline_spread`` / ``ratio_to_timm_spread``), else the ratio of the medians. Rows without a
    counterpart get an empty ratio.

    Example: see the module docstring.
    """
    base = {(_key(r), r.get("arch"), _split(r)): r for r in rows if r["case"] == BASELINE_CASE and ok_row(r)}
    timm = {(_timm_key(r), r.get("arch")): r for r in rows if r["case"] == TIMM_CASE and ok_row(r)}
    for r in rows:
        b = base.get((_key(r), r.get("arch"), _split(r))) if ok_row(r) else None
        stats = pair_stats(r, b) if b is not None else None
        r["ratio_to_baseline"] = stats["median"] if stats else ""
        r["ratio_to_baseline_spread"] = _spread(stats)
        t = timm.get((_timm_key(r), r.get("arch"))) if ok_row(r) and r["case"] not in (TIMM_CASE, PIPELINE_CASE) else None
        stats = pair_stats(r, t) if t is not None else None
        r["ratio_to_timm"] = stats["median"] if stats else ""
        r["ratio_to_timm_spread"] = _spread(stats)
    return rows


# --------------------------------------------------------------------------- comparisons and target checks

# The comparisons every report shows (no minimum: the targets are targets.json's ratio_checks).
COMPARISONS = (
    RatioCheck("bit_keras / baseline", {"case": BIT_CASE}, {"case": BASELINE_CASE}, ("variant", "precision"), 0.0),
    RatioCheck("bit_keras / timm", {"case": BIT_CASE}, {"case": TIMM_CASE}, ("precision",), 0.0),
    RatioCheck("bf16 / float32", {"case": BIT_CASE, "precision": "mixed_bfloat16"},
               {"case": BIT_CASE, "precision": "float32"}, ("variant",), 0.0),
    RatioCheck("remat / function", {"case": BIT_CASE, "variant": "remat"}, {"case": BIT_CASE, "variant": "function"},
               ("precision",), 0.0),
    *(RatioCheck(f"{case} / bit_keras", {"case": case}, {"case": BIT_CASE}, ("variant", "precision"), 0.0)
      for case in (KERAS_FOLDED_CASE, FOLDED_CASE, SAVED_MODEL_CASE)),
)


def _point(row: dict[str, Any]) -> tuple:
    return (row.get("arch"), row["mode"], int(row["image_size"]), int(row["batch_size"]), _split(row))


def pairs(rows: Sequence[dict[str, Any]], check: RatioCheck) -> list[tuple[dict[str, Any], dict[str, Any], dict]]:
    """(numerator row, denominator row, :func:`pair_stats`) for every pair of measured rows ``check`` compares:
    same architecture, mode, image size, batch size and batch split, and the check's ``same`` fields.

    Example:
        >>> rows = [{"case": "bit_keras", "mode": "train", "image_size": 128, "batch_size": 16, "arch": "R50x1",
        ...          "variant": "function", "precision": p, "images_per_s": v, "status": "ok", "group": 1,
        ...          "round_images_per_s": r} for p, v, r in (("float32", 10.0, "10;9"), ("mixed_bfloat16", 16.0, "16;18"))]
        >>> [(n["precision"], d["precision"], describe_ratio(s)) for n, d, s in pairs(rows, COMPARISONS[2])]
        [('mixed_bfloat16', 'float32', '1.80x (1.60-2.00, 2 rounds)')]
    """
    out = []
    for row in rows:
        if not (ok_row(row) and check.applies_to(row)):
            continue
        for other in rows:
            if ok_row(other) and _point(other) == _point(row) and check.pairs_with(row, other):
                stats = pair_stats(row, other)
                if stats:
                    out.append((row, other, stats))
    return out


def _name(row: dict[str, Any]) -> str:
    return f"{row['case']} {row['variant']} {row['precision']}"


def _where(row: dict[str, Any]) -> str:
    split = f" split {_split(row)}" if _split(row) > 1 else ""
    return f"{row.get('arch')} {row['mode']} {row['image_size']} px b{row['batch_size']}{split}"


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """The :data:`COMPARISONS` found among the rows, as a Markdown table (ratio: median of the per-round
    ratios, min-max, rounds)."""
    lines = ["| point | rows | ratio (images/s) | min-max | rounds | CPU ms/img |", "|---|---|---|---|---|---|"]
    for check in COMPARISONS:
        for num, den, stats in pairs(rows, check):
            spread = f"{stats['min']:.2f}-{stats['max']:.2f}" if stats["interleaved"] else "not interleaved"
            cpu = f"{_fmt(num.get('cpu_ms_per_image'), 1)} / {_fmt(den.get('cpu_ms_per_image'), 1)}"
            lines.append(f"| {_where(num)} | {_name(num)} / {_name(den)} | {stats['median']:.2f}x | {spread} | "
                         f"{stats['rounds'] or ''} | {cpu} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def verdict(value: float, minimum: float) -> str:
    """``met`` or ``NOT met, short by N%`` (how far the ratio is below the target, as a share of the target) and
    the speed-up it needs.

    Example:
        >>> verdict(1.25, 1.2), verdict(1.056, 1.2)
        ('met', 'NOT met, short by 12% (needs 1.14x)')
    """
    if value >= minimum:
        return "met"
    return f"NOT met, short by {1 - value / minimum:.0%} (needs {minimum / value:.2f}x)"


def _profile_of(rows: Sequence[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The profiled bit_keras training row to explain a missed target with: same precision (and point) first."""
    profiled = [r for r in rows if r["case"] == BIT_CASE and r["mode"] == "train" and _shares(r)]
    profiled.sort(key=lambda r: (r["precision"] != row["precision"], _point(r)[1:] != _point(row)[1:]))
    return profiled[0] if profiled else None


def _shares(row: dict[str, Any]) -> dict[str, float]:
    profile = row.get("profile")
    if isinstance(profile, dict) and profile.get("categories"):
        return dict(profile["categories"])
    return parse_shares_cell(row.get("profile_shares"))


def target_check_lines(rows: Sequence[dict[str, Any]], machine: dict[str, Any], targets: Targets) -> list[str]:
    """One line per target of ``targets.json``'s ``ratio_checks`` and pair of rows it applies to: the ratio
    (median of the per-round ratios and its spread), the target, ``met`` or by how much it is short, and for a
    miss what the op profile of a training step shows is left (its shares by category).

    Example:
        >>> rows = [{"case": c, "mode": "train", "image_size": 224, "batch_size": 8, "arch": "R50x1",
        ...          "variant": v, "precision": "float32", "images_per_s": ips, "status": "ok", "group": 1,
        ...          "round_images_per_s": r} for c, v, ips, r in (("bit_keras", "function", 5.3, "5.3;5.2;5.4"),
        ...          ("timm_resnetv2_50x1_bit", "torch_eager", 5.0, "5;5;5"))]
        >>> rows[0]["profile_shares"] = "convolution=50;group_norm=25;weight_standardization=5;cast=0;other=20"
        >>> print(target_check_lines(rows, {"cpu_flags": []}, load_targets())[0])
        - vs_timm: R50x1 train 224 px b8, bit_keras function float32 / timm_resnetv2_50x1_bit torch_eager float32: 1.06x (1.04-1.08, 3 rounds), target >= 1.2x: NOT met, short by 12% (needs 1.13x); training-step profile (bit_keras float32 224 px): convolutions 50%, GroupNorm 25%, weight standardization 5%, casts 0%, other 20%
    """
    lines = []
    for check in targets.ratio_checks:
        if check.requires_isa and not (machine.get("gpus") or any(f in (machine.get("cpu_flags") or ())
                                                                   for f in check.requires_isa)):
            if any(check.applies_to(r) for r in rows if ok_row(r)):
                lines.append(f"- {check.name}: not checked here: the CPU has none of {', '.join(check.requires_isa)}")
            continue
        for num, den, stats in pairs(rows, check):
            text = (f"- {check.name}: {_where(num)}, {_name(num)} / {_name(den)}: {describe_ratio(stats)}, "
                    f"target >= {check.minimum:g}x: {verdict(stats['median'], check.minimum)}")
            if stats["median"] < check.minimum:
                profiled = _profile_of(rows, num)
                if profiled is not None:
                    text += (f"; training-step profile ({profiled['case']} {profiled['precision']} "
                             f"{profiled['image_size']} px): {format_shares(_shares(profiled))}")
                else:
                    text += "; no training-step profile in this run (--profile)"
            lines.append(text)
    return lines


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write the rows with :data:`CSV_COLUMNS` (floats to 6 significant digits)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            r = {**r, "profile_shares": shares_cell(_shares(r)) or r.get("profile_shares", "")}
            writer.writerow({k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in r.items()})
    return path


def _machine_lines(machine: dict[str, Any]) -> list[str]:
    gpus = ", ".join(machine.get("gpus") or []) or "none"
    lines = [
        f"- CPU: {machine.get('cpu')} ({machine.get('cores')} cores available; "
        f"{', '.join(machine.get('cpu_flags') or []) or 'no AVX-512'}), {machine.get('memory_gb')} GiB memory",
        f"- ISA: {isa_summary(machine)}; " + (onednn_summary(machine["onednn_verbose"])
                                               if "onednn_verbose" in machine else "oneDNN: not probed"),
        f"- machine kind: `{machine.get('slug') or machine_slug(machine)}` (its stored runs: "
        f"`benchmarks/results/{machine.get('slug') or machine_slug(machine)}/`)",
        f"- GPU: {gpus}",
        f"- TensorFlow {machine.get('tensorflow')}, Keras {machine.get('keras')}, Python {machine.get('python')}, "
        f"oneDNN {machine.get('onednn')}" + (f", torch {machine['torch']}, timm {machine['timm']}"
                                             if machine.get("timm") else ""),
        f"- load average at start {machine.get('load_avg')}, at end {machine.get('load_avg_end')}",
    ]
    warning = start_load_warning(machine)
    if warning:
        lines.append(f"- **{warning}**")
    return lines


TABLE_HEADER = ("| case | mode | variant | precision | arch | px | batch | img/s | peak MB | "
                "x baseline | x timm | CPU ms/img | GFLOP/s | note |")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (img/s is the median of the repeats; peak MB as measured).

    Example:
        >>> print(markdown_table([{"case": "bit_keras", "mode": "train", "variant": "xla", "precision": "float32",
        ...       "arch": "R50x1", "image_size": 224, "batch_size": 8, "images_per_s": 7.5, "status": "ok"}])
        ...       .splitlines()[2])
        | bit_keras | train | xla | float32 | R50x1 | 224 | 8 | 7.50 |  |  |  |  |  |  |
    """
    lines = [TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    for r in rows:
        note = r.get("note") or ""
        if r.get("status") not in ("ok", None):
            note = f"**{r.get('status')}** {note}".strip()
        if r.get("max_abs_diff") not in (None, ""):
            note = f"max abs diff vs Keras {float(r['max_abs_diff']):.1e}; {note}".strip("; ")
        cells = [r["case"], r["mode"], r["variant"], r["precision"], r.get("arch", ""), r["image_size"],
                 r["batch_size"], _fmt(r.get("images_per_s")), _fmt(r.get("peak_mem_mb"), 0),
                 _fmt(r.get("ratio_to_baseline")), _fmt(r.get("ratio_to_timm")), _fmt(r.get("cpu_ms_per_image"), 1),
                 _fmt(r.get("gflop_per_s"), 1),
                 note.replace("|", "/")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _best(rows: Sequence[dict[str, Any]], case: str, mode: str, size: int, batch: int,
          arch: str | None = None) -> dict[str, Any] | None:
    found = [r for r in rows if r["case"] == case and r["mode"] == mode and ok_row(r)
             and int(r["image_size"]) == size and int(r["batch_size"]) == batch
             and (arch is None or r.get("arch") == arch)]
    return max(found, key=lambda r: float(r["images_per_s"]), default=None)


@dataclass(frozen=True)
class Figures:
    """What the summary holds the rows to: the targets, and the timm rates and FLOP peak, measured in this run or
    else taken from a reference run of the same kind of machine (each with where it came from)."""

    targets: Targets
    cores: int = 1
    reference: ReferenceRun | None = None
    measured_timm: dict[tuple[str, int, int, str], float] = field(default_factory=dict)

    def timm(self, mode: str, size: int, batch: int, precision: str) -> tuple[float, str] | None:
        """timm's images/s for a row's setting and where it came from, or None.

        Example:
            >>> Figures(load_targets(), measured_timm={("train", 224, 8, "float32"): 5.0}).timm("train", 224, 8, "float32")
            (5.0, 'measured in this run')
        """
        key = (mode, size, batch, precision)
        if key in self.measured_timm:
            return self.measured_timm[key], "measured in this run"
        if self.reference is not None and key in self.reference.timm:
            return self.reference.timm[key], f"from {self.reference.describe()}"
        return None

    def fp32_peak(self) -> tuple[float, str] | None:
        """This machine's fp32 FLOP peak in GFLOP/s and where it came from, or None where none is recorded."""
        if self.reference is None or not self.reference.fp32_peak_per_core:
            return None
        per_core = self.reference.fp32_peak_per_core
        return self.cores * per_core, f"{self.cores} x {per_core:g} per core from {self.reference.describe()}"


def summary_lines(rows: Sequence[dict[str, Any]], figures: Figures) -> list[str]:
    """Where bit_keras stands against the targets: training vs timm, batched inference vs the FLOP peak, the
    folded export as fast as the Keras model (and equal within the tolerance), pipeline headroom.

    The "CPU-time bound" is ``figures.cores`` divided by the process CPU time per image: what the row would reach
    with the cores to itself (the wall-clock rate falls below it when other processes share the machine).

    Example:
        >>> summary_lines([], Figures(load_targets()))
        []
    """
    figures = Figures(figures.targets, figures.cores, figures.reference,
                      {_timm_key(r): float(r["images_per_s"]) for r in rows if r["case"] == TIMM_CASE and ok_row(r)})
    points = sorted({(int(r["image_size"]), int(r["batch_size"])) for r in rows if r["case"] == BIT_CASE},
                    reverse=True)
    out = [line for size, batch in points for mode in MODES
           if (line := _standing_line(rows, mode, size, batch, figures))]
    out += [_folded_line(rows, r, figures.targets) for r in rows if r["case"] == FOLDED_CASE and ok_row(r)]
    out += [_pipeline_line(rows, r) for r in rows if r["case"] == PIPELINE_CASE and ok_row(r)]
    unavailable = next((r for r in rows if r["case"] == TIMM_CASE and r.get("status") == "unavailable"), None)
    if unavailable is not None:
        out.append(f"- timm peer: unavailable ({unavailable.get('note')})")
    return out


def _folded_line(rows: Sequence[dict[str, Any]], r: dict[str, Any], targets: Targets) -> str:
    keras_row = next((k for k in rows if k["case"] == BIT_CASE and ok_row(k) and k["mode"] == "inference"
                      and k["precision"] == "float32" and k["variant"] == r["variant"]
                      and int(k["image_size"]) == int(r["image_size"])
                      and int(k["batch_size"]) == int(r["batch_size"])), None)
    diff = float(r["max_abs_diff"])
    text = (f"- folded export {r['image_size']} px batch {r['batch_size']} ({r['variant']}): "
            f"{float(r['images_per_s']):.2f} img/s, max abs diff vs Keras {diff:.1e} "
            f"({'within' if diff <= targets.folded_max_abs_diff else 'NOT within'} {targets.folded_max_abs_diff:g})")
    if keras_row:
        ratio = float(r["images_per_s"]) / float(keras_row["images_per_s"])
        fast = "as fast or faster" if ratio >= targets.folded_min_speed_ratio else "slower"
        text += f"; {ratio:.2f}x the Keras model ({fast})"
    return text


def _pipeline_line(rows: Sequence[dict[str, Any]], r: dict[str, Any]) -> str:
    train = _best(rows, BIT_CASE, "train", int(r["image_size"]), int(r["batch_size"]))
    text = f"- input pipeline {r['image_size']} px: {float(r['images_per_s']):.0f} img/s alone"
    if train:
        share = float(train["images_per_s"]) / float(r["images_per_s"])
        text += f", {share:.1%} of its capacity at the best training rate ({float(train['images_per_s']):.2f} img/s)"
    return text


def _cpu_bound(row: dict[str, Any], cores: int) -> float:
    """Images/s the row would reach with ``cores`` to itself: cores / process CPU time per image."""
    cpu = row.get("cpu_ms_per_image")
    return cores * 1000.0 / float(cpu) if cpu not in (None, "", 0) else 0.0


def _standing_line(rows: Sequence[dict[str, Any]], mode: str, size: int, batch: int, figures: Figures) -> str | None:
    """One "where we stand" line: best bit_keras row (wall clock and CPU-time bound) vs baseline, timm, targets."""
    found = [r for r in rows if r["case"] == BIT_CASE and r["mode"] == mode and ok_row(r)
             and r.get("arch") == PEER_ARCH and int(r["image_size"]) == size and int(r["batch_size"]) == batch]
    if not found:
        return None
    cores = figures.cores
    best = max(found, key=lambda r: float(r["images_per_s"]))
    bound_row = max(found, key=lambda r: _cpu_bound(r, cores))
    ips, bound = float(best["images_per_s"]), _cpu_bound(bound_row, cores)
    text = (f"- {PEER_ARCH} {mode} {size} px batch {batch}: best bit_keras {ips:.2f} img/s ({best['variant']}/"
            f"{best['precision']}); best CPU-time bound {bound:.1f} img/s ({bound_row['variant']}/"
            f"{bound_row['precision']})")
    base_rows = [r for r in rows if r["case"] == BASELINE_CASE and r["mode"] == mode and ok_row(r)
                 and int(r["image_size"]) == size and int(r["batch_size"]) == batch]
    if base_rows:
        base = max(base_rows, key=lambda r: float(r["images_per_s"]))
        text += (f"; best baseline {float(base['images_per_s']):.2f} img/s ({base['variant']}/{base['precision']}), "
                 f"bound {max(_cpu_bound(r, cores) for r in base_rows):.1f}")
    text += _timm_text(mode, size, batch, ips, bound, best["precision"], figures)
    if mode == "inference" and batch == 1:
        text += "; serving one image at a time (the FLOP-peak target is for batched inference)"
    elif mode == "inference":
        text += _peak_text(size, ips, bound, figures)
    return text


def _timm_text(mode: str, size: int, batch: int, ips: float, bound: float, precision: str, figures: Figures) -> str:
    """timm's float32 rate (the target's reference) and, when ours is another precision, timm's in that one."""
    text = ""
    timm = figures.timm(mode, size, batch, "float32")
    if timm and mode == "train":
        need = figures.targets.train_vs_timm * timm[0]
        text += (f"; timm float32 {timm[0]:.2f} ({timm[1]}): {ips / timm[0]:.2f}x timm, target "
                 f"{figures.targets.train_vs_timm:g}x = {need:.1f} img/s: {_met(ips, need)} (bound: {_met(bound, need)})")
    elif timm:
        text += f"; timm float32 {timm[0]:.2f} ({timm[1]}): {ips / timm[0]:.2f}x timm"
    same = figures.timm(mode, size, batch, precision) if precision != "float32" else None
    if same:
        text += f"; vs timm also in {precision} ({same[0]:.2f} img/s, {same[1]}): {ips / same[0]:.2f}x"
    return text


def _peak_text(size: int, ips: float, bound: float, figures: Figures) -> str:
    """Batched inference against the share of the fp32 FLOP peak the targets ask for."""
    gflops = ARCHS[PEER_ARCH].gflops(size)
    peak = figures.fp32_peak()
    if peak is None:
        return f"; {ips * gflops:.0f} GFLOP/s (no fp32 FLOP peak recorded for this machine: target not checked)"
    fraction = figures.targets.inference_flop_peak_fraction
    need = fraction * peak[0] / gflops
    return (f"; {ips * gflops:.0f} GFLOP/s = {ips * gflops / peak[0]:.0%} of ~{peak[0]:.0f} GFLOP/s fp32 peak "
            f"({peak[1]}), target {fraction:.0%} of the peak = {need:.1f} img/s: {_met(ips, need)} "
            f"(bound: {_met(bound, need)})")


def _met(value: float, target: float) -> str:
    return "met" if value >= target else "NOT met"


def source_lines(figures: Figures) -> list[str]:
    """Where the targets and the figures not measured in this run come from.

    Example:
        >>> print(source_lines(Figures(load_targets()))[1])
        - figures not measured in this run: none (no run in benchmarks/targets.json's reference_runs was measured on this kind of machine: same cpu, cores, cpu_flags, gpus)
    """
    lines = [f"- targets: {figures.targets.describe()}"]
    ref = figures.reference
    if ref is None:
        lines.append(f"- figures not measured in this run: none (no run in {display_path(figures.targets.path)}'s reference_runs "
                     f"was measured on this kind of machine: same {', '.join(MATCH_KEYS)})")
        return lines
    text = f"- figures not measured in this run: {ref.describe()}: timm's rows of its bench.csv"
    if ref.fp32_peak_per_core:
        text += f"; fp32 FLOP peak {ref.fp32_peak_per_core:g} GFLOP/s per core (its machine_figures.json: {ref.peak_from})"
    return lines + [text]


def render_markdown(rows: Sequence[dict[str, Any]], machine: dict[str, Any], title: str = "bit-keras bench",
                    targets: Targets | None = None) -> str:
    """The report: machine, where the targets and figures come from, where we stand, and the table of all rows."""
    targets = targets or load_targets()
    figures = Figures(targets, int(machine.get("cores") or 1), reference_for(machine, targets))
    parts = [f"# {title}", "", "## Machine", "", *_machine_lines(machine), "",
             "## Sources", "", *source_lines(figures), "",
             "## Target checks (interleaved ratios)", "",
             "Each ratio: images/s of the two rows in the same interleaved rounds, the median of the per-round "
             "ratios (min-max, rounds); the targets are `ratio_checks` of " + display_path(targets.path) + ".", "",
             *(target_check_lines(rows, machine, targets) or ["- no row pair to check"]), "",
             "## Interleaved comparisons", "", comparison_table(rows) or "none", "",
             "## Where we stand", "", *(summary_lines(rows, figures) or ["- no rows"]), "",
             "## All rows", "",
             "img/s: median over the rounds. peak MB: " + _mem_note(rows) + ". x baseline: images/s over "
             "the BatchNorm baseline with the same mode, size, batch, variant and precision. x timm: over "
             "timm's row with the same mode, size, batch and precision. CPU ms/img: process CPU time (all threads) per image, "
             "the measure least disturbed by other processes on a shared machine.", "", markdown_table(rows), ""]
    return "\n".join(parts)


def render_profiles(rows: Sequence[dict[str, Any]]) -> str:
    """``profile.md``: for each profiled row, the shares by category (convolutions, GroupNorm, weight
    standardization, casts, other) and the top op types (ms per step, summed over threads).

    Example:
        >>> print(render_profiles([{"case": "bit_keras", "mode": "train", "variant": "function",
        ...       "precision": "float32", "image_size": 128, "batch_size": 16,
        ...       "profile": {"op_types": [["Conv2D", 12.5]], "categories": {"convolution": 100.0}}}]))
        # Op profile (ms per step, summed over threads)
        <BLANKLINE>
        ## bit_keras train function float32 128 px batch 16
        <BLANKLINE>
        By category: convolutions 100%
        <BLANKLINE>
        | op type | ms/step | share |
        |---|---|---|
        | Conv2D | 12.5 | 100% |
        <BLANKLINE>
    """
    parts = ["# Op profile (ms per step, summed over threads)", ""]
    for r in rows:
        profile = r.get("profile")
        if not profile:
            continue
        op_types = profile.get("op_types", []) if isinstance(profile, dict) else profile
        total = sum(ms for _, ms in op_types) or 1.0
        parts += [f"## {r['case']} {r['mode']} {r['variant']} {r['precision']} {r['image_size']} px batch "
                  f"{r['batch_size']}", ""]
        if _shares(r):
            parts += [f"By category: {format_shares(_shares(r))}", ""]
        parts += ["| op type | ms/step | share |", "|---|---|---|"]
        parts += [f"| {name} | {ms:.1f} | {ms / total:.0%} |" for name, ms in op_types]
        parts.append("")
    return "\n".join(parts)


def _mem_note(rows: Sequence[dict[str, Any]]) -> str:
    kinds = {r.get("mem_kind") for r in rows if r.get("mem_kind")}
    notes = {
        "rss_hwm_delta": "growth of the process RSS high-water mark from after `import tensorflow` to the end "
                         "of the row (weights, optimizer state, activations, compiled code, allocator caches)",
        "ru_maxrss_delta": "ru_maxrss at the end minus RSS at the start of the row",
        "gpu_peak": "GPU allocator peak (tf.config.experimental.get_memory_info)",
    }
    return "; ".join(notes[k] for k in sorted(kinds) if k in notes) or "not measured"


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``bench.csv`` with numbers as floats/ints (empty cells stay ``""``).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "bench.csv")
        >>> _ = write_csv([{"case": "bit_keras", "mode": "train", "image_size": 128, "batch_size": 8,
        ...                 "images_per_s": 2.5}], p)
        >>> read_csv(p)[0]["images_per_s"], read_csv(p)[0]["ratio_to_baseline"]
        (2.5, '')
    """
    ints = {"image_size", "batch_size", "steps", "batch_split", "group", "rounds"}
    text = {"case", "mode", "variant", "precision", "arch", "mem_kind", "status", "note", "round_images_per_s",
            "ratio_to_baseline_spread", "ratio_to_timm_spread", "profile_shares"}
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key in text or value == "":
                    row[key] = value
                else:
                    row[key] = int(float(value)) if key in ints else float(value)
            rows.append(row)
    return rows


def rerender(out_dir: str | os.PathLike) -> str:
    """Re-write ``bench.md`` from ``bench.csv`` and ``machine.json`` in ``out_dir`` (e.g. after editing
    the report code, or after merging CSVs of several runs); returns the report."""
    out = Path(out_dir)
    rows = add_ratios(read_csv(out / "bench.csv"))
    machine = json.loads((out / "machine.json").read_text(encoding="utf-8"))
    report = render_markdown(rows, machine, title=machine.get("title", "bit-keras bench"))
    (out / "bench.md").write_text(report, encoding="utf-8")
    return report
