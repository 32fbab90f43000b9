"""Class names of a zoo entry's head: shipped with the entry, or the official label file (downloaded once).

A downloaded label file must be UTF-8 text with one non-empty line per class; one that is not never lands
in the cache (it is moved aside to ``<file>.corrupt`` and the next call downloads it again).

Example:
    >>> from bit_keras.models.labels import get_labels
    >>> get_labels("BiT-M-R50x1-CIFAR10")[:3]
    ['airplane', 'automobile', 'bird']
"""

from __future__ import annotations

from pathlib import Path

from bit_keras.errors import DownloadError, LabelFileError
from bit_keras.models.presets import ModelInfo, get_model_info


class _BadLabelFile(ValueError):
    """Raised by the label-file validator; its message says what is wrong with the file."""


def _read_label_file(path: Path, info: ModelInfo) -> list[str]:
    """The label names in ``path``: UTF-8 text with exactly one non-empty line per class of ``info``'s head."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = data[e.start:e.start + 1]
        raise _BadLabelFile(f"the label file is not UTF-8 text (byte {e.start} is {bad!r})") from None
    if "\0" in text:
        raise _BadLabelFile("the label file holds NUL bytes: it is not a text file")
    labels = text.splitlines()
    if len(labels) != info.num_classes:
        raise _BadLabelFile(f"the label file has {len(labels)} lines but {info.name} has {info.num_classes} classes")
    empty = next((i for i, label in enumerate(labels) if not label.strip()), None)
    if empty is not None:
        raise _BadLabelFile(f"line {empty + 1} of the label file is empty")
    return labels


def get_labels(name: str) -> list[str]:
    """The class names of zoo entry ``name``'s head, index i naming output i.

    ILSVRC-2012 and ImageNet-21k heads use the official WordNet lemma files, downloaded into the cache
    on first use; the file must be UTF-8 text with one non-empty line per class.

    Raises:
        LabelFileError: the downloaded file is not such a file; it was moved aside and the next call
            downloads it again.
        DownloadError: the download failed.

    Example:
        >>> len(get_labels("BiT-M-R50x1-CIFAR10"))
        10
    """
    info = get_model_info(name)
    if info.labels is not None:
        return list(info.labels)
    if info.labels_url is None:
        raise ValueError(f"{info.name} has no published label names ({info.num_classes} classes)")
    from bit_keras.models.download import download, quarantine

    try:
        path = download(info.labels_url, progress=False, validate=lambda p: _read_label_file(p, info))
    except DownloadError as e:
        if isinstance(e.__cause__, _BadLabelFile):  # the file was moved aside; the message says so
            raise LabelFileError(f"label file for {info.name}: {e}") from e.__cause__
        raise
    try:
        return _read_label_file(path, info)
    except _BadLabelFile as e:  # changed since download() checked it: never keep it in the cache
        if not info.labels_url.startswith(("http://", "https://")):
            raise LabelFileError(f"label file {path} for {info.name} is unusable: {e}") from e
        moved = quarantine(path)
        raise LabelFileError(
            f"label file {path} for {info.name} is unusable: {e}. Moved it to {moved}; the next call "
            f"downloads it again from {info.labels_url}"
        ) from e
