"""Model-construction context: the Keras dtype policy and reproducible initialisation, each for one block.

Example:
    >>> import keras
    >>> with dtype_policy("mixed_bfloat16"):
    ...     keras.layers.Dense(2).dtype_policy.name
    'mixed_bfloat16'
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import keras

MIXED_PRECISION_POLICIES = ("mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def dtype_policy(name: str | None) -> Iterator[None]:
    """Set the Keras global dtype policy inside the block and restore the previous one afterwards.

    Example:
        >>> with dtype_policy("mixed_bfloat16"):
        ...     keras.layers.Dense(2).dtype_policy.name
        'mixed_bfloat16'
        >>> keras.config.dtype_policy().name
        'float32'
    """
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Make Keras's unseeded initializers reproducible from ``seed`` inside the block.

    They draw their seeds from Python's ``random``; its global state is restored afterwards.

    Example:
        >>> import numpy as np
        >>> with seeded_init(1):
        ...     a = keras.layers.Dense(2); a.build((None, 3))
        >>> with seeded_init(1):
        ...     b = keras.layers.Dense(2); b.build((None, 3))
        >>> bool(np.array_equal(a.kernel.numpy(), b.kernel.numpy()))
        True
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)
