"""VTAB-1k in one call: every task fine-tuned with the BiT-HyperRule (or linear-probed), one summary.

:func:`vtab` runs the tasks of :mod:`bit_keras.evals.vtab_tasks` one after another, each in its own run
directory ``output_dir/<task>/``; a task whose ``result.json`` exists is not run again, so an interrupted
call resumes task by task (and a fine-tuning run inside a task resumes from its checkpoint). The protocol:

* fine-tuning (default): ``transfer(model, train800val200)`` with the HyperRule (its schedule for a
  1000-example dataset), scored once on the task's test split. The train800/val200 split is not used for
  choices: the HyperRule makes none.
* ``probe=True``: the closed-form least-squares probe (:mod:`bit_keras.evals.lsr`) on the frozen pre-logits
  (features cached under ``output_dir/features``): the L2 strength is chosen by fitting on train800 and
  scoring val200, then the probe is fitted on train800val200 with it and scored on test.

Tasks whose tfds data is not prepared are not downloaded: each is listed under ``missing`` with the command
that prepares it, and the others run. The summary (``vtab.json``, ``vtab.md``, ``vtab.png``) holds per-task
test top-1, the mean of each group (natural, specialized, structured) over its finished tasks and the mean
over all finished tasks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bit_keras.atomic import write_json, write_text
from bit_keras.errors import ConfigError
from bit_keras.evals.lsr import L2_GRID, RidgePath
from bit_keras.evals.vtab_tasks import GROUPS, TaskSpec, load_task, missing_reason, prepare_command, resolve_tasks

RESULTS_FILE = "vtab.json"
TABLE_FILE = "vtab.md"
PLOT_FILE = "vtab.png"
TASK_RESULT_FILE = "result.json"


@dataclass
class VtabResult:
    """What :func:`vtab` returns (``summary`` is ``vtab.json``).

    Attributes:
        tasks: per finished task, its record (``top1``, ``group``, ``protocol``...).
        groups: per group, the mean test top-1 of its finished tasks (None with none finished).
        mean: the mean over all finished tasks. missing: task -> how to prepare its data.
        failed: task -> the error (not recorded as done: the next call tries again).
        ran: the tasks this call computed (the others were read back from their result files).
    """

    tasks: dict[str, dict[str, Any]]
    groups: dict[str, float | None]
    mean: float | None
    missing: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None


def summarize(records: dict[str, dict[str, Any]], missing: dict[str, str], failed: dict[str, str],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary: per-task top-1, the group means (over finished tasks), the overall mean.

    Example:
        >>> s = summarize({"dtd": {"group": "natural", "top1": 0.5}, "dmlab": {"group": "structured", "top1": 0.25}},
        ...               {"sun397": "tfds build sun397/tfds"}, {})
        >>> s["groups"], s["mean"], s["missing"]
        ({'natural': 0.5, 'specialized': None, 'structured': 0.25}, 0.375, {'sun397': 'tfds build sun397/tfds'})
    """
    groups: dict[str, float | None] = {}
    for group in GROUPS:
        values = [r["top1"] for r in records.values() if r["group"] == group]
        groups[group] = float(np.mean(values)) if values else None
    values = [r["top1"] for r in records.values()]
    return {**(extra or {}), "tasks": records, "groups": groups,
            "mean": float(np.mean(values)) if values else None,
            "finished": len(records), "missing": missing, "failed": failed}


def format_table(summary: dict[str, Any]) -> str:
    """The summary as Markdown: one row per task (missing and failed ones say so), the group means, the mean.

    Example:
        >>> s = summarize({"dtd": {"group": "natural", "top1": 0.5}}, {"svhn": "tfds build svhn_cropped"}, {})
        >>> print(format_table(s))
        | group | task | test top-1 |
        |---|---|---:|
        | natural | dtd | 0.500 |
        | natural | svhn | missing: `tfds build svhn_cropped` |
        | **natural** | mean of 1 | **0.500** |
        | **all** | mean of 1 | **0.500** |
    """
    lines = ["| group | task | test top-1 |", "|---|---|---:|"]
    tasks, missing, failed = summary["tasks"], summary.get("missing", {}), summary.get("failed", {})
    for group, names in GROUPS.items():
        for name in names:
            if name in tasks:
                lines.append(f"| {group} | {name} | {tasks[name]['top1']:.3f} |")
            elif name in missing:
                lines.append(f"| {group} | {name} | missing: `{missing[name]}` |")
            elif name in failed:
                lines.append(f"| {group} | {name} | failed: {failed[name].splitlines()[0][:80]} |")
    for group in GROUPS:
        n = sum(1 for t in tasks.values() if t["group"] == group)
        if n:
            lines.append(f"| **{group}** | mean of {n} | **{summary['groups'][group]:.3f}** |")
    if summary.get("mean") is not None:
        lines.append(f"| **all** | mean of {len(tasks)} | **{summary['mean']:.3f}** |")
    return "\n".join(lines)


def _best_alpha(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], num_classes: int,
                grid: Sequence[float]) -> tuple[float, list[float]]:
    """The strength with the best val200 top-1 when fitted on train800 (ties: the stronger)."""
    if len(grid) == 1:
        return float(grid[0]), []
    scores = RidgePath(train[0], train[1], num_classes).accuracies(val[0], val[1], list(grid))
    best = max(range(len(grid)), key=lambda i: (scores[i], float(grid[i])))
    return float(grid[best]), [float(s) for s in scores]


class _Prober:
    """The frozen feature model, built once for all tasks, and the feature store of each preprocessing."""

    def __init__(self, model: Any, weights: Any, cache: Path | None, batch_size: int, input_range: Sequence[float],
                 seed: int, progress: bool):
        from bit_keras.evals.features import feature_model

        self.extractor, self.zoo = feature_model(model, weights=weights, input_range=input_range, seed=seed,
                                                 progress=progress)
        self.cache, self.batch_size, self.input_range, self.progress = cache, batch_size, input_range, progress

    def run(self, spec: TaskSpec, data_dir: str | None, grid: Sequence[float]) -> dict[str, Any]:
        from bit_keras.evals.features import FeatureStore, extract_features, preprocessing_for

        splits = {s: load_task(spec, s, data_dir) for s in ("train800", "val200", "test")}
        size = next(iter(splits["train800"].take(1)))[0].shape[:2]
        prep = preprocessing_for(self.zoo, input_range=self.input_range, image_size=tuple(int(v) for v in size))
        store = FeatureStore(self.extractor, prep, self.cache)
        got = {s: extract_features(self.extractor, ds, prep, store, batch_size=self.batch_size, progress=self.progress)
               for s, ds in splits.items()}
        for s, (_, labels, _) in got.items():
            if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
                raise ConfigError(f"{spec.name} {s}: labels outside [0, {spec.num_classes})")
        alpha, scores = _best_alpha(got["train800"][:2], got["val200"][:2], spec.num_classes, grid)
        x = np.concatenate([got["train800"][0], got["val200"][0]])
        y = np.concatenate([got["train800"][1], got["val200"][1]])
        top1 = RidgePath(x, y, spec.num_classes).probe(alpha).accuracy(got["test"][0], got["test"][1])
        return {"top1": float(top1), "protocol": "linear probe (closed-form least squares) on frozen pre-logits: "
                "L2 chosen on train800 -> val200, fitted on train800val200, scored on test",
                "alpha": alpha, "val200_by_alpha": scores, "l2_grid": [float(a) for a in grid],
                "examples": {s: int(len(v[1])) for s, v in got.items()},
                "features_computed": int(sum(v[2] for v in got.values())), "preprocessing": prep.to_dict()}


def _finetune(spec: TaskSpec, model: Any, weights: Any, run_dir: Path, data_dir: str | None,
              overrides: dict[str, Any]) -> dict[str, Any]:
    from bit_keras.recipes.transfer import transfer

    train = load_task(spec, "train800val200", data_dir)
    test = load_task(spec, "test", data_dir)
    result = transfer(model, train, validation=test, weights=weights, output_dir=run_dir, **overrides)
    n_cls = result.dataset_info.num_classes if result.dataset_info else None
    return {"top1": float(result.metrics["top1"]), "top5": result.metrics.get("top5"),
            "protocol": "BiT-HyperRule fine-tuning on train800val200, scored on test",
            "steps": result.metrics.get("steps"), "test_examples": result.metrics.get("val_examples"),
            "train_classes_seen": n_cls, "run_dir": os.fspath(run_dir)}


def _run_task(spec: TaskSpec, *, probe: bool, model: Any, weights: Any, task_dir: Path, data_dir: str | None,
              prober: Any, grid: Sequence[float], overrides: dict[str, Any]) -> dict[str, Any]:
    """One task's record (tests count calls of this function)."""
    if probe:
        return prober().run(spec, data_dir, grid)
    return _finetune(spec, model, weights, task_dir / "run", data_dir, overrides)


def vtab(
    model: Any,
    tasks: str | Sequence[str] = "vtab-1k",
    *,
    output_dir: str | os.PathLike,
    probe: bool = False,
    weights: str | os.PathLike | None = "pretrained",
    data_dir: str | None = None,
    l2_grid: Sequence[float] = L2_GRID,
    batch_size: int = 64,
    input_range: Sequence[float] = (0.0, 1.0),
    seed: int = 0,
    progress: bool = True,
    **overrides: Any,
) -> VtabResult:
    """Run VTAB-1k (or some of its tasks) on ``model``; write ``vtab.json``, ``vtab.md`` and ``vtab.png``.

    Args:
        model: a zoo name or a ``keras.Model`` (as ``transfer`` / ``fewshot_probe`` take).
        tasks: ``"vtab-1k"`` (all 19), a group (``"natural"``...), or task names (list or comma-separated).
        output_dir: one sub-folder per task (its ``result.json``; the fine-tuning run under ``run/``), the
            feature cache (``features/``, probe only) and the summary files.
        probe: linear probe on frozen pre-logits instead of fine-tuning.
        weights: ``"pretrained"``, a ``.npz`` path or URL, or None (random init seeded by ``seed``).
        data_dir: tensorflow-datasets data folder (default tfds's).
        l2_grid, batch_size: the probe's strengths and forward-pass batch.
        **overrides: passed to ``transfer`` (e.g. ``steps=500, batch_size=128``), fine-tuning only.

    Returns:
        A :class:`VtabResult`.
    """
    specs = resolve_tasks(tasks)
    if probe and overrides:
        raise ConfigError(f"{', '.join(overrides)}: transfer settings, but probe=True does not fine-tune")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not probe:
        overrides = {"seed": seed, "progress": progress, "input_range": tuple(input_range), **overrides}
    holder: dict[str, _Prober] = {}

    def prober() -> _Prober:
        if "p" not in holder:
            holder["p"] = _Prober(model, weights, out / "features", batch_size, input_range, seed, progress)
        return holder["p"]

    records: dict[str, dict[str, Any]] = {}
    missing: dict[str, str] = {}
    failed: dict[str, str] = {}
    ran: list[str] = []
    mode = "probe" if probe else "finetune"
    for spec in specs:
        task_dir = out / spec.name
        result_file = task_dir / TASK_RESULT_FILE
        if result_file.exists():
            records[spec.name] = json.loads(result_file.read_text())
            print(f"VTAB {spec.name}: done before (top-1 {records[spec.name]['top1']:.4f})")
            continue
        reason = missing_reason(spec, data_dir)
        if reason is not None:
            missing[spec.name] = prepare_command(spec)
            print(f"VTAB {spec.name}: missing ({reason}); prepare it with: {missing[spec.name]}")
            continue
        print(f"VTAB {spec.name} ({spec.group}, {spec.num_classes} classes, {spec.tfds_name}): {mode}")
        task_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        try:
            record = _run_task(spec, probe=probe, model=model, weights=weights, task_dir=task_dir, data_dir=data_dir,
                               prober=prober, grid=l2_grid, overrides=overrides)
        except Exception as err:  # noqa: BLE001 - one task's failure is reported; the others run
            text = str(err).strip().splitlines()
            failed[spec.name] = f"{type(err).__name__}: {text[0] if text else ''}"
            print(f"VTAB {spec.name}: failed: {failed[spec.name]}")
            continue
        record = {"task": spec.name, "group": spec.group, "tfds": spec.tfds_name, "splits": spec.splits,
                  "num_classes": spec.num_classes, "mode": mode, **record,
                  "wall_s": round(time.perf_counter() - t0, 1)}
        write_json(result_file, record)
        records[spec.name] = record
        ran.append(spec.name)
        print(f"VTAB {spec.name}: test top-1 {record['top1']:.4f}")

    ordered = {s.name: records[s.name] for s in specs if s.name in records}
    model_desc = model.name if hasattr(model, "name") and not isinstance(model, str) else os.fspath(model)
    summary = summarize(ordered, missing, failed, {
        "model": model_desc, "weights": None if weights is None else os.fspath(weights), "mode": mode,
        "tasks_requested": [s.name for s in specs], "wall_s": round(time.perf_counter() - started, 1)})
    write_json(out / RESULTS_FILE, summary)
    table = format_table(summary)
    write_text(out / TABLE_FILE, f"# VTAB-1k: {model_desc} ({mode})\n\n{table}\n")
    from bit_keras.plots import plot_vtab

    plot_vtab(summary, out / PLOT_FILE, title=f"VTAB-1k {mode}: {model_desc}")
    print(table)
    return VtabResult(ordered, summary["groups"], summary["mean"], missing, failed, ran, summary, out)
