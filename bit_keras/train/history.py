"""A run's history: per-step loss, learning rate and speed, and per-evaluation metrics, as equal-length lists.

Example:
    >>> h = new_history()
    >>> record_eval(h, None, 10, {"top1": 0.5, "top5": 1.0, "loss": 0.7})
    >>> record_eval(h, None, 10, {"top1": 0.6, "top5": 1.0, "loss": 0.6})  # the same step again: replaced
    >>> h["val_step"], h["val_top1"]
    ([10], [0.6])
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

STEP_KEYS = ("step", "loss", "lr", "images_per_s")
EVAL_KEYS = ("val_step", "val_top1", "val_top5", "val_loss")


def new_history() -> dict[str, list]:
    """An empty history: per-step ``step, loss, lr, images_per_s`` and per-evaluation ``val_*`` lists."""
    return {k: [] for k in (*STEP_KEYS, *EVAL_KEYS)}


def truncate_history(history: dict[str, list], step: int) -> dict[str, list]:
    """The entries of a saved history up to and including ``step`` (for a resumed run).

    Example:
        >>> truncate_history({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]}, 2)["loss"]
        [3.0, 2.0]
    """
    out = new_history()
    for keys, step_key in ((STEP_KEYS, "step"), (EVAL_KEYS, "val_step")):
        keep = [i for i, s in enumerate(history.get(step_key, [])) if s <= step]
        for key in keys:
            if key in history:
                out[key] = [history[key][i] for i in keep]
    return out


def record_eval(history: dict[str, list], writer: Any, step: int, metrics: dict[str, float]) -> None:
    """Append evaluation metrics at ``step`` to ``history`` (dropping any recorded at or after it, as when a
    finished run is started again) and to TensorBoard (``val/top1``...)."""
    while history["val_step"] and history["val_step"][-1] >= step:
        for key in EVAL_KEYS:
            history[key].pop()
    history["val_step"].append(step)
    for key in ("top1", "top5", "loss"):
        history[f"val_{key}"].append(metrics[key])
    if writer is not None:
        with writer.as_default(step=step):
            for key in ("top1", "top5", "loss"):
                tf.summary.scalar(f"val/{key}", metrics[key])
        writer.flush()
