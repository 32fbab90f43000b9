"""The tiny zoo entry and data the transfer tests use on every backend (tests/test_transfer.py in-process,
tests/jax_worker.py in a JAX subprocess): one copy, so the two backends are compared on the same things."""

from __future__ import annotations

import numpy as np

import bit_keras
from bit_keras.models.presets import ModelInfo
from bit_keras.models.spec import ArchSpec

TINY = "test-tiny"
# Small and fast: 16 px crops, batch 8, random init unless a test says otherwise.
FAST = dict(weights=None, batch_size=8, resize=20, crop=16, progress=False)


def register_tiny() -> None:
    """Register the ``test-tiny`` zoo entry (R(1,1,1,1) x 0.25, 8 groups)."""
    bit_keras.register_arch("tiny", ArchSpec((1, 1, 1, 1), 0.25, groups=8))
    bit_keras.register_model(ModelInfo(TINY, "tiny", "synthetic", 20, None, 32), overwrite=True)


def images(n: int = 48, classes: int = 4, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images whose mean colour depends on the class (learnable, cheap)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = rng.integers(0, 256, (classes, 3))
    data = base[labels][:, None, None, :] + rng.integers(-40, 41, (n, size, size, 3))
    return np.clip(data, 0, 255).astype(np.uint8), labels
