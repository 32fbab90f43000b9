"""Plots people would rather look at than read: training curves of a run and the few-shot curve (PNG).

Example:
    >>> import tempfile, pathlib
    >>> p = plot_few_shot({"examples_per_class": [1, 5], "transfer": [0.7, 0.9], "scratch": [0.5, 0.8]},
    ...                   pathlib.Path(tempfile.mkdtemp()) / "fewshot.png")
    >>> p.stat().st_size > 1000
    True
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bit_keras.atomic import atomic_path
from bit_keras.errors import MissingFileError


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    finally:
        _pyplot().close(fig)
    return path


DEMO_SERIES = (("transfer", "BiT transfer (pre-trained upstream)", "tab:blue", "o-"),
               ("scratch", "from scratch, same budget", "tab:gray", "o-"),
               ("probe_upstream", "linear probe, upstream features", "tab:blue", "s--"),
               ("probe_random", "linear probe, random-init features", "tab:gray", "s--"))


def plot_few_shot(results: dict[str, Any], path: str | os.PathLike, *, title: str | None = None,
                  series: Sequence[tuple[str, str, str, str]] = DEMO_SERIES,
                  ylabel: str = "test top-1 accuracy") -> Path:
    """Accuracy against examples per class, one line per series, mean with a band of one std over seeds.

    ``results`` holds ``examples_per_class`` and, per series key, the means (``results[key]``) and optionally
    ``{key}_std`` (the layout of the demo's ``demo.json``). ``series``: ``(key, label, colour, line style)``
    for each line; a key missing from ``results`` is left out. The default draws the demo's transfer and
    scratch lines and, when present, its linear-probe lines.

    Example:
        >>> import tempfile, pathlib
        >>> p = plot_few_shot({"examples_per_class": [1, 5], "top1": [0.6, 0.8], "top1_std": [0.1, 0.0]},
        ...                   pathlib.Path(tempfile.mkdtemp()) / "probe.png", series=[("top1", "probe", "C0", "s--")])
        >>> p.stat().st_size > 1000
        True
    """
    plt = _pyplot()
    shots = results["examples_per_class"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for key, label, color, style in series:
        if key not in results:
            continue
        mean = results[key]
        ax.plot(shots, mean, style, color=color, label=label)
        std = results.get(f"{key}_std")
        if std:
            ax.fill_between(shots, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=color, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xticks(shots)
    ax.set_xticklabels([str(s) for s in shots])
    ax.set_xlabel("examples per class")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Few-shot transfer")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, Path(path))


def plot_run(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Training curves (loss, learning rate, validation top-1) of a transfer or pretrain run directory.

    Reads ``history.json`` (written by :func:`bit_keras.transfer`); writes ``curves.png`` in the run
    directory unless ``path`` is given.
    """
    run_dir = Path(run_dir)
    history_file = run_dir / "history.json"
    if not history_file.is_file():
        raise MissingFileError(f"{history_file} does not exist: pass the output directory of a transfer run")
    history = json.loads(history_file.read_text())
    plt = _pyplot()
    has_val = bool(history.get("val_step"))
    fig, axes = plt.subplots(1, 3 if has_val else 2, figsize=(12 if has_val else 8, 3.2))
    axes[0].plot(history["step"], history["loss"], color="tab:blue")
    axes[0].set_title("training loss")
    axes[1].plot(history["step"], history["lr"], color="tab:orange")
    axes[1].set_title("learning rate")
    if has_val:
        axes[2].plot(history["val_step"], history["val_top1"], "o-", label="top-1")
        axes[2].plot(history["val_step"], history["val_top5"], "s--", label="top-5")
        axes[2].set_title("validation accuracy")
        axes[2].legend()
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _save(fig, Path(path) if path else run_dir / "curves.png")


VTAB_COLORS = {"natural": "tab:green", "specialized": "tab:orange", "structured": "tab:purple"}


def plot_vtab(summary: dict[str, Any], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """A bar per finished VTAB task (test top-1, coloured by group) and a bar per group mean and the mean.

    ``summary`` is ``vtab.json``'s content (``tasks``: name -> ``{"group", "top1"}``, ``groups``, ``mean``).

    Example:
        >>> import tempfile, pathlib
        >>> s = {"tasks": {"dtd": {"group": "natural", "top1": 0.5}, "svhn": {"group": "natural", "top1": 0.25}},
        ...      "groups": {"natural": 0.375}, "mean": 0.375}
        >>> plot_vtab(s, pathlib.Path(tempfile.mkdtemp()) / "vtab.png").stat().st_size > 0
        True
    """
    plt = _pyplot()
    done = [(n, t) for n, t in summary.get("tasks", {}).items() if t.get("top1") is not None]
    groups = [(g, v) for g, v in summary.get("groups", {}).items() if v is not None]
    names = [n for n, _ in done] + [f"{g} mean" for g, _ in groups] + (["mean"] if summary.get("mean") is not None
                                                                        else [])
    values = [t["top1"] for _, t in done] + [v for _, v in groups] + ([summary["mean"]] if summary.get("mean")
                                                                       is not None else [])
    colors = ([VTAB_COLORS.get(t.get("group"), "tab:blue") for _, t in done]
              + [VTAB_COLORS.get(g, "tab:blue") for g, _ in groups] + ["black"] * (len(names) - len(done) - len(groups)))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names) + 1.5), 4.0))
    x = range(len(names))
    ax.bar(x, values, color=colors, edgecolor=["none"] * len(done) + ["black"] * (len(names) - len(done)))
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test top-1")
    ax.grid(axis="y", alpha=0.3)
    missing = summary.get("missing") or {}
    ax.set_title(title or "VTAB-1k" + (f" ({len(missing)} task(s) missing)" if missing else ""), fontsize=10)
    return _save(fig, Path(path))
