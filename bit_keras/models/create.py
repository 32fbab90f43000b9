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

from bit_keras.errors import MissingFileError, WeightFileError, WeightsUnavailableError
from bit_keras.models.download import download, quarantine
from bit_keras.models.npz import check_weight_file, inspect_npz
from bit_keras.models.presets import ModelInfo, get_model_info
from bit_keras.models.resnet import resnet_v2
from bit_keras.models.weights import load_npz

_FROM_ENTRY = object()


def _model_name(info: ModelInfo) -> str:
    return info.name.lower().replace("-", "_")


def resolve_weights(info: ModelInfo, weights: str | os.PathLike, *, progress: bool = True) -> Path:
    """The local path of ``weights`` for entry ``info``: ``"pretrained"``, a URL or a local path.

    ``"pretrained"`` and URLs are downloaded into the cache (``$BIT_KERAS_HOME``) once, with resume and
    size checks; later calls use the cached file. The download is validated with
    :func:`bit_keras.models.npz.inspect_npz` before it is placed in the cache (and a cached file before it is
    returned), so a file that is not a well-formed ``.npz`` never stays there.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "w.npz"); open(p, "wb").close()
        >>> resolve_weights(get_model_info("BiT-S-R50x1"), p).name
        'w.npz'
    """
    weights = os.fspath(weights)
    if weights == "pretrained":
        if not info.has_weights:
            raise WeightsUnavailableError(
                f"{info.name}: BiT-L was trained on the internal JFT-300M data and its weights were never "
                f"published; use weights=None for the architecture, or BiT-M-{info.arch} (ImageNet-21k), "
                "the best published upstream weights"
            )
        weights = info.weights_url  # type: ignore[assignment]
    if weights.startswith(("http://", "https://")):
        known = weights == info.weights_url
        return download(weights, sha256=info.sha256 if known else None, expected_size=info.size if known else None,
                        progress=progress, validate=inspect_npz)
    path = Path(weights[len("file://"):] if weights.startswith("file://") else weights).expanduser()
    if not path.exists():
        raise MissingFileError(
            f"weights {weights!r} for {info.name}: no such file; pass weights='pretrained', a URL, "
            "or the path of an official .npz file"
        )
    return check_weight_file(path)  # a directory or a device: WeightFileError saying what to pass


def _is_download(weights: str | os.PathLike) -> bool:
    weights = os.fspath(weights)
    return weights == "pretrained" or weights.startswith(("http://", "https://"))


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
        if not (_is_download(weights) and getattr(err, "unreadable", False) and path.is_file()):
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
