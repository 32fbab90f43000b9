"""Where a model's weight file comes from: the published file (downloaded once), a URL, or a local path.

No TensorFlow: ``bit-keras download`` uses it alone. A download is checked as an ``.npz`` (headers only,
:func:`bit_keras.models.npz.inspect_npz`) before it is placed in the cache, and a cached file before it is used.

Example:
    >>> import os, tempfile
    >>> from bit_keras.models.presets import get_model_info
    >>> p = os.path.join(tempfile.mkdtemp(), "w.npz"); open(p, "wb").close()
    >>> resolve_weights(get_model_info("BiT-S-R50x1"), p).name
    'w.npz'
"""

from __future__ import annotations

import os
from pathlib import Path

from bit_keras.errors import MissingFileError, WeightsUnavailableError
from bit_keras.models.download import download
from bit_keras.models.npz import check_weight_file, inspect_npz
from bit_keras.models.presets import ModelInfo


def resolve_weights(info: ModelInfo, weights: str | os.PathLike, *, progress: bool = True) -> Path:
    """The local path of ``weights`` for entry ``info``: ``"pretrained"``, a URL or a local path.

    ``"pretrained"`` and URLs are downloaded into the cache (``$BIT_KERAS_HOME``) once, with resume and
    size checks; later calls use the cached file. The download is validated with
    :func:`bit_keras.models.npz.inspect_npz` before it is placed in the cache (and a cached file before it is
    returned), so a file that is not a well-formed ``.npz`` never stays there.

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


def is_download(weights: str | os.PathLike) -> bool:
    """Whether ``weights`` is fetched over the network (``"pretrained"`` or a URL) rather than a local file."""
    weights = os.fspath(weights)
    return weights == "pretrained" or weights.startswith(("http://", "https://"))
