"""tensorflow-datasets adapter for :func:`bit_keras.data.sources.load_dataset`, failing fast when offline.

A plain ``tfds.load`` of a dataset that is not prepared tries to download it, and with no network
urllib3 retries for about 200 s before it fails. Here the prepared data is tried first
(``download=False``); only if it is missing is a download attempted, with tfds's download retries
set to 0 for that call, so that an offline machine gets a clear :class:`~bit_keras.data.sources.DataError`
in well under a second. The (image, label) pair is the dataset's supervised keys, else its "image"
and "label" features; other image features (e.g. segmentation masks) are not decoded.

Example:
    >>> import tensorflow_datasets as tfds
    >>> from bit_keras.data.tfds import load_tfds, parse_tfds_source
    >>> parse_tfds_source("tfds:cifar10:train[:90%]", default_split="train")
    ('cifar10', 'train[:90%]')
    >>> with tfds.testing.mock_data(num_examples=4):
    ...     ds, meta = load_tfds("cifar10", "test")
    >>> meta.num_classes, meta.num_examples
    (10, 4)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from bit_keras.errors import TfdsError


@dataclass
class TfdsMeta:
    """What the tfds metadata tells about a split (None where it does not say) and its feature names."""

    name: str
    split: str
    num_examples: int | None
    num_classes: int | None
    class_names: list[str] | None
    image_key: str
    label_key: str
    image_features: list[str]


def parse_tfds_source(source: str, default_split: str) -> tuple[str, str]:
    """``"[tfds:]name[:split]"`` -> ``(name, split)``; the split in the string overrides ``default_split``.

    Example:
        >>> parse_tfds_source("cifar100", "test"), parse_tfds_source("tfds:mnist:train[:10]", "test")
        (('cifar100', 'test'), ('mnist', 'train[:10]'))
    """
    text = source[len("tfds:") :] if source.startswith("tfds:") else source
    name, _, split = text.partition(":")
    if not name:
        raise TfdsError(f"no dataset name in {source!r}: use e.g. 'cifar10' or 'tfds:cifar10:train[:90%]'")
    return name, split or default_split


@contextlib.contextmanager
def _no_download_retries() -> Iterator[None]:
    """Set tfds's urllib3 retry count to 0 for the duration, and restore it afterwards."""
    from tensorflow_datasets.core.download import downloader

    old = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = 0
    try:
        yield
    finally:
        downloader.MAX_RETRIES = old


def _unknown(name: str) -> TfdsError:
    return TfdsError(
        f"no folder and no tensorflow-datasets dataset named {name!r}: check the spelling "
        "(tfds.list_builders() lists the datasets) or pass the path of an image folder"
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _load(name: str, split: str, data_dir: str | None, **kwargs: Any) -> tuple[tf.data.Dataset, Any]:
    """``tfds.load`` that tries the prepared data first and a retry-free download second."""
    import tensorflow_datasets as tfds

    args = dict(split=split, data_dir=data_dir, with_info=True, **kwargs)
    try:
        return tfds.load(name, download=False, **args)
    except tfds.core.DatasetNotFoundError as err:
        raise _unknown(name) from err
    except Exception as err:  # noqa: BLE001 - tfds raises AssertionError when the data is not prepared
        try:
            prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
        except Exception:  # noqa: BLE001
            prepared = False
        if prepared:  # prepared, so something else is wrong (typically the split)
            raise TfdsError(f"tfds dataset {name!r}, split {split!r}: {_first_line(err)}") from err
    try:
        with _no_download_retries():
            return tfds.load(name, download=True, **args)
    except Exception as err:  # noqa: BLE001
        where = f" in {data_dir}" if data_dir else ""
        raise TfdsError(
            f"tfds dataset {name!r} is not downloaded{where} and cannot be fetched (offline?): {_first_line(err)}. "
            f"Fix: run `tfds build {name}` on a machine with network and copy its data folder here "
            "(pass data_dir= if it is not ~/tensorflow_datasets), or pass an image folder instead"
        ) from err


def _keys(name: str, data_dir: str | None) -> tuple[str, str, list[str]]:
    """(image feature, label feature, all top-level Image features) from the builder's metadata.

    The pair is the supervised keys, else the features named "image" and "label".
    """
    import tensorflow_datasets as tfds

    try:
        info = tfds.builder(name, data_dir=data_dir).info
    except tfds.core.DatasetNotFoundError as err:
        raise _unknown(name) from err
    images = [k for k, f in info.features.items() if isinstance(f, tfds.features.Image)]
    keys = info.supervised_keys
    if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        return keys[0], keys[1], images
    if "image" in info.features and "label" in info.features:
        return "image", "label", images
    raise TfdsError(
        f"tfds dataset {name!r} has no (image, label) supervised keys and no 'image'/'label' features "
        f"(features: {', '.join(info.features)}): it is not an image classification dataset"
    )


def _skip(features: list[str]) -> dict[str, Any]:
    """Decoders that leave these image features encoded (e.g. segmentation masks we do not use)."""
    import tensorflow_datasets as tfds

    return {k: tfds.decode.SkipDecoding() for k in features}


def load_tfds(name: str, split: str, data_dir: str | None = None) -> tuple[tf.data.Dataset, TfdsMeta]:
    """The split as an ``(image, label)`` dataset (decoded images) plus its metadata.

    Example:
        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=3):
        ...     ds, meta = load_tfds("mnist", "train")
        >>> ds.element_spec[0].shape.as_list(), meta.class_names[:2]
        ([28, 28, 1], ['0', '1'])
    """
    image_key, label_key, images = _keys(name, data_dir)
    ds, info = _load(name, split, data_dir, decoders=_skip([k for k in images if k != image_key]))
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=tf.data.AUTOTUNE)
    label = info.features[label_key]
    names = list(getattr(label, "names", None) or []) or None
    num_classes = getattr(label, "num_classes", None)
    num_examples: int | None = int(ds.cardinality())
    if num_examples < 0:
        try:
            num_examples = int(info.splits[split].num_examples)
        except Exception:  # noqa: BLE001 - no split metadata (e.g. under tfds.testing.mock_data)
            num_examples = None
    meta = TfdsMeta(name, split, num_examples, num_classes, names, image_key, label_key, images)
    return ds, meta


def tfds_labels(meta: TfdsMeta, data_dir: str | None = None) -> np.ndarray:
    """All labels of the split in order, reading the records without decoding the images.

    Example:
        >>> import tensorflow_datasets as tfds
        >>> with tfds.testing.mock_data(num_examples=5):
        ...     _, meta = load_tfds("cifar10", "train")
        ...     labels = tfds_labels(meta)
        >>> labels.shape, labels.dtype
        ((5,), dtype('int64'))
    """
    ds, _ = _load(meta.name, meta.split, data_dir, decoders=_skip(meta.image_features))
    labels = ds.map(lambda ex: tf.cast(ex[meta.label_key], tf.int64), num_parallel_calls=tf.data.AUTOTUNE)
    parts = list(labels.batch(8192).as_numpy_iterator())
    return np.concatenate(parts) if parts else np.zeros([0], np.int64)
