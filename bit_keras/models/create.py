"""``create_model``: the public entry point from a zoo name to a Keras model, with weights.

Example:
    >>> import numpy as np, bit_keras
    >>> model = bit_keras.create_model("BiT-S-R50x1", num_classes=5)   # random init, new 5-way head
    >>> model(np.zeros((1, 128, 128, 3), "float32")).shape
    TensorShape([1, 5])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import keras

from bit_keras.errors import WeightFileError
from bit_keras.models.download import quarantine
from bit_keras.models.fetch import is_download, resolve_weights
from bit_keras.models.presets import ModelInfo, get_model_info
from bit_keras.models.resnet import resnet_v2
from bit_keras.models.weights import load_npz

_FROM_ENTRY = object()


def _model_name(info: ModelInfo) -> str:
    return info.name.lower().replace("-", "_")


def load_weights(
    model: keras.Model,
    info: ModelInfo,
    weights: str | os.PathLike,
    *,
    load_head: bool | None = None,
    progress: bool = True,
) -> Path:
    """Resolve ``weights`` (:func:`resolve_weights`) and load them into ``model`` (:func:`load_npz`).

    A downloaded file (``"pretrained"`` or a URL) that cannot be read as an ``.npz`` is moved aside
    (``bit_keras.models.download.quarantine``: ``<name>.corrupt``) so that the next call downloads it again. A
    well-formed file that does not fit the model stays in the cache: fetching it again would not change it.
    A user's local file is never moved.

    Returns:
        The path the weights were loaded from.

    Example:
        >>> import os, tempfile
        >>> from bit_keras.models.weights import save_npz
        >>> model = create_model("BiT-tiny", num_classes=3)
        >>> path = save_npz(model, os.path.join(tempfile.mkdtemp(), "w.npz"))
        >>> load_weights(model, get_model_info("BiT-tiny"), path) == path
        True
    """
    path = resolve_weights(info, weights, progress=progress)
    try:
        load_npz(model, path, load_head=load_head)
    except WeightFileError as err:
        if not (is_download(weights) and getattr(err, "unreadable", False) and path.is_file()):
            raise
        moved = quarantine(path)
        problem = str(err).replace("; delete it and download it again", "")
        again = WeightFileError(
            f"{problem}; the cached download was moved aside to {moved} and the next call downloads it again"
        )
        again.unreadable = True  # type: ignore[attr-defined]
        raise again from err
    return path


def create_model(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = _FROM_ENTRY,  # type: ignore[assignment]
    input_range: Sequence[float] = (0.0, 1.0),
) -> keras.Model:
    """Build a BiT model from the zoo, optionally with its published weights.

    Args:
        name: a zoo name, e.g. ``"BiT-M-R50x1"`` (see :func:`bit_keras.list_models`).
        weights: None (random init), ``"pretrained"`` (download the entry's official file), a local path
            or a URL of an official-layout ``.npz``.
        num_classes: defaults to the entry's classes. Equal to the checkpoint's head: the head is loaded.
            Another int: a new Dense head initialised to zeros (the BiT transfer init). None: the model
            outputs the pre-logits feature (``2048 * width`` wide).
        input_range: the range of the float RGB images the model takes (NHWC, any resolution). The default
            ``(0, 1)`` is the TF Hub convention and is rescaled to BiT's [-1, 1] inside; ``(-1, 1)`` feeds
            the raw range; ``(0, 255)`` works too.

    Returns:
        A functional ``keras.Model`` whose layers mirror the official checkpoint structure.

    Raises:
        UnknownModelError: the name is not in the zoo (the closest names are listed).
        WeightsUnavailableError: ``"pretrained"`` for a BiT-L entry.
        WeightFileError: the file is not a well-formed ``.npz`` (corrupt, truncated, a ``.npy``, a directory)
            or does not fit the architecture (keys, shapes, dtypes and non-finite values named); nothing is
            assigned. A downloaded file that cannot be read is moved aside and downloaded again next time.

    Example:
        >>> features = create_model("BiT-M-R50x1", num_classes=None)
        >>> features.output_shape
        (None, 2048)
    """
    info = get_model_info(name)
    if num_classes is _FROM_ENTRY:
        num_classes = info.num_classes
    model = resnet_v2(info.spec, num_classes=num_classes, input_range=input_range, name=_model_name(info))
    if weights is not None:
        load_weights(model, info, weights)
    return model
