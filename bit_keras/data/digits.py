"""The demo's embedded data: scikit-learn's 1,797 real 8x8 handwritten digits, split BiT-style.

Upstream gets some classes (digits 0-4 by default), downstream the held-out ones (5-9): a pool to draw
k-shot training sets from and a fixed test set. To give the upstream task the size and variety BiT relies
on, each upstream digit also appears rotated by 90, 180 and 270 degrees as classes of their own (20 upstream
classes from 5 digits), which forces features of strokes and their orientation rather than of 5 templates.

Example:
    >>> data = load_digits_split(size=16)
    >>> data.upstream_images.shape[1:], data.num_upstream_classes
    ((16, 16, 3), 20)
    >>> sorted(set(data.downstream_test_labels.tolist()))
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class DigitsSplit:
    """Upstream and downstream parts of the digits (uint8 RGB images, int labels from 0)."""

    upstream_images: np.ndarray
    upstream_labels: np.ndarray
    downstream_pool_images: np.ndarray
    downstream_pool_labels: np.ndarray
    downstream_test_images: np.ndarray
    downstream_test_labels: np.ndarray
    upstream_digits: tuple[int, ...]
    downstream_digits: tuple[int, ...]

    @property
    def num_upstream_classes(self) -> int:
        return int(self.upstream_labels.max()) + 1

    @property
    def num_downstream_classes(self) -> int:
        return len(self.downstream_digits)


def _to_rgb(images8: np.ndarray, size: int) -> np.ndarray:
    """8x8 digits (0..16) to ``size`` x ``size`` uint8 RGB, bilinear, as a scanner would give them."""
    import tensorflow as tf

    x = tf.convert_to_tensor(images8[..., None] * (255.0 / 16.0), tf.float32)
    x = tf.image.resize(x, (size, size), method="bilinear")
    x = tf.clip_by_value(tf.round(x), 0, 255)
    return np.repeat(np.asarray(x, np.uint8), 3, axis=-1)


def load_digits_split(
    upstream_digits: Sequence[int] = (0, 1, 2, 3, 4),
    downstream_digits: Sequence[int] = (5, 6, 7, 8, 9),
    *,
    size: int = 32,
    rotations: bool = True,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> DigitsSplit:
    """Split scikit-learn's digits into an upstream set and a downstream pool / test set.

    Args:
        upstream_digits / downstream_digits: disjoint digit classes.
        size: output side in pixels.
        rotations: add the 90/180/270-degree rotations of each upstream digit as extra classes.
        test_fraction: share of each downstream class held out for testing (stratified, seeded).
        seed: the pool/test split.
    """
    from sklearn.datasets import load_digits

    if set(upstream_digits) & set(downstream_digits):
        raise ValueError("upstream and downstream digits must be disjoint")
    digits = load_digits()
    images, labels = digits.images, digits.target

    up = np.isin(labels, upstream_digits)
    up_images = images[up]
    up_labels = np.searchsorted(np.array(sorted(upstream_digits)), labels[up])
    if rotations:
        rotated = [np.rot90(up_images, k, axes=(1, 2)) for k in range(4)]
        up_labels = np.concatenate([up_labels + k * len(upstream_digits) for k in range(4)])
        up_images = np.concatenate(rotated)

    rng = np.random.default_rng(seed)
    pool_idx, test_idx = [], []
    down_sorted = sorted(downstream_digits)
    for digit in down_sorted:
        idx = rng.permutation(np.flatnonzero(labels == digit))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.extend(idx[:n_test])
        pool_idx.extend(idx[n_test:])
    pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
    remap = {d: i for i, d in enumerate(down_sorted)}
    return DigitsSplit(
        upstream_images=_to_rgb(up_images, size),
        upstream_labels=up_labels.astype(np.int64),
        downstream_pool_images=_to_rgb(images[pool_idx], size),
        downstream_pool_labels=np.array([remap[d] for d in labels[pool_idx]], np.int64),
        downstream_test_images=_to_rgb(images[test_idx], size),
        downstream_test_labels=np.array([remap[d] for d in labels[test_idx]], np.int64),
        upstream_digits=tuple(sorted(upstream_digits)),
        downstream_digits=tuple(down_sorted),
    )
