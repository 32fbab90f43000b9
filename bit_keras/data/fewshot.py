"""Few-shot sampling: exactly k examples of every class, drawn reproducibly from a seed.

Example:
    >>> import numpy as np
    >>> sample_few_shot(np.array([0, 0, 0, 1, 1, 1]), 2, seed=0).tolist()
    [1, 2, 3, 5]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bit_keras.errors import DataError


def sample_few_shot(
    labels: np.ndarray,
    examples_per_class: int,
    seed: int = 0,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Sorted indices of exactly ``examples_per_class`` examples of every class, drawn without replacement.

    Classes are those present in ``labels`` (or ``0..num_classes-1`` when given). The draw uses
    ``np.random.default_rng(seed)``: the same seed gives the same indices, another seed others.
    A class with fewer examples raises DataError naming it and its count.

    Example:
        >>> sample_few_shot(np.array([0, 0, 0, 1, 1, 1]), 2, seed=0).tolist()
        [1, 2, 3, 5]
    """
    labels = np.asarray(labels).reshape(-1)
    if examples_per_class < 1:
        raise DataError(f"examples_per_class must be >= 1, got {examples_per_class}")
    classes = np.arange(num_classes) if num_classes is not None else np.unique(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], classes, side="left")
    ends = np.searchsorted(labels[order], classes, side="right")
    rng = np.random.default_rng(seed)
    chosen = []
    for c, lo, hi in zip(classes, starts, ends):
        if hi - lo < examples_per_class:
            known = class_names is not None and int(c) < len(class_names)
            name = f"class {int(c)}" + (f" ({class_names[int(c)]!r})" if known else "")
            raise DataError(
                f"{name} has only {hi - lo} examples, fewer than examples_per_class={examples_per_class}: "
                "lower examples_per_class or add examples of that class"
            )
        chosen.append(rng.choice(order[lo:hi], examples_per_class, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros([0], np.int64)
