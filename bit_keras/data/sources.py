"""Data for fine-tuning and pre-training: load any image source, validate and measure it, sample few-shot.

* :func:`load_dataset` reads a ``tf.data.Dataset``, ``(images, labels)`` arrays, an image folder
  (one sub-folder per class) or a tensorflow-datasets name, validates it and returns an unbatched
  ``(image uint8 [H, W, 3], label int64)`` dataset plus a :class:`DatasetInfo` measured from the data
  (number of examples and classes, median image size) for the BiT-HyperRule.
* the input pipelines that turn it into batches are in :mod:`bit_keras.data.pipelines`.

Example:
    >>> import numpy as np
    >>> from bit_keras.data.sources import load_dataset
    >>> images = np.random.randint(0, 256, (20, 32, 32, 3), np.uint8)
    >>> ds, info = load_dataset((images, np.arange(20) % 4), examples_per_class=2)
    >>> info.num_examples, info.num_classes, info.image_size
    (8, 4, (32, 32))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from bit_keras.data.fewshot import sample_few_shot
from bit_keras.data.images import (
    Scan,
    class_folders,
    decode_files,
    list_images,
    printable,
    raise_bad_files,
    scan_files,
)
from bit_keras.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
SIZE_SAMPLE = 1000
SKIPPED_RECORD_LIMIT = 1000  # skipped items written to hyperparams.json / upstream.json


@dataclass
class DatasetInfo:
    """What :func:`load_dataset` measured about the data it returns."""

    num_examples: int
    num_classes: int
    image_size: tuple[int, int]
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, why), printable (see printable)
    source: str = ""

    def skipped_record(self, limit: int = SKIPPED_RECORD_LIMIT) -> dict[str, Any]:
        """What was skipped, for a JSON record: the count and the first ``limit`` items with their reasons.

        Example:
            >>> DatasetInfo(9, 2, (8, 8), skipped=[("data/cat/x.jpg", "truncated")]).skipped_record()
            {'skipped': 1, 'skipped_items': [{'item': 'data/cat/x.jpg', 'reason': 'truncated'}]}
        """
        items = [{"item": printable(item), "reason": printable(why)} for item, why in self.skipped[:limit]]
        return {"skipped": len(self.skipped), "skipped_items": items}


# ----------------------------------------------------------------------------------------------- helpers


def _as_image_label(*element: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """(image, label) from a (image, label) tuple or an {"image", "label"} dict."""
    el = element[0] if len(element) == 1 else element
    if isinstance(el, dict):
        if "image" not in el or "label" not in el:
            raise DataError(f"dataset dicts need 'image' and 'label' keys; got {sorted(el)}")
        return el["image"], el["label"]
    if isinstance(el, (tuple, list)) and len(el) == 2:
        return el[0], el[1]
    raise DataError("dataset elements must be (image, label) pairs or dicts with 'image' and 'label' keys")


def _to_rgb_uint8(image: tf.Tensor) -> tf.Tensor:
    """Encoded bytes, [H, W] or [H, W, 1|3|4], uint8 or float in [0, 1] -> uint8 [H, W, 3]."""
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    if image.shape.rank == 2:
        image = image[..., None]
    if image.dtype.is_floating:
        image = tf.cast(tf.round(tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 1.0) * 255.0), tf.uint8)
    elif image.dtype != tf.uint8:
        image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
    channels = image.shape[-1]
    if channels == 1:
        image = tf.tile(image, [1, 1, 3])
    elif channels is None or channels != 3:
        image = tf.cond(tf.shape(image)[-1] < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    image.set_shape(image.shape[:2].concatenate([3]))
    return image


def standardize(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Map a dataset of pairs/dicts to (uint8 RGB image, int64 label) unless it already is."""
    spec = ds.element_spec
    if (
        isinstance(spec, tuple)
        and len(spec) == 2
        and spec[0].dtype == tf.uint8
        and spec[0].shape.rank == 3
        and spec[0].shape[-1] == 3
        and spec[1].dtype == tf.int64
    ):
        return ds
    return ds.map(lambda *el: _pair(*el), num_parallel_calls=AUTOTUNE)


def _pair(*el: Any) -> tuple[tf.Tensor, tf.Tensor]:
    image, label = _as_image_label(*el)
    return _to_rgb_uint8(image), tf.cast(label, tf.int64)


def _median_size(heights: Sequence[int] | np.ndarray, widths: Sequence[int] | np.ndarray) -> tuple[int, int]:
    if len(heights) == 0:
        raise DataError("no examples left to measure: the source is empty (or every example was skipped)")
    return int(round(float(np.median(heights)))), int(round(float(np.median(widths))))


def image_size_of(ds_or_info: tf.data.Dataset | DatasetInfo, limit: int = SIZE_SAMPLE) -> tuple[int, int]:
    """Representative (h, w): ``info.image_size``, the static shape, or the median of up to ``limit`` images.

    Example:
        >>> image_size_of(tf.data.Dataset.from_tensor_slices((np.zeros((3, 20, 30, 3), np.uint8), [0, 1, 2])))
        (20, 30)
    """
    if isinstance(ds_or_info, DatasetInfo):
        return ds_or_info.image_size
    ds = standardize(ds_or_info)
    shape = ds.element_spec[0].shape
    if shape[0] is not None and shape[1] is not None:
        return int(shape[0]), int(shape[1])
    sizes = np.array([s for s in ds.take(limit).map(lambda x, y: tf.shape(x)[:2]).as_numpy_iterator()])
    return _median_size(sizes[:, 0] if len(sizes) else [], sizes[:, 1] if len(sizes) else [])


def _check_labels(
    labels: np.ndarray,
    num_classes: int | None,
    bad: np.ndarray,
    strict: bool,
    skipped: list[tuple[str, str]],
    item: Callable[[int], str],
) -> np.ndarray:
    """Keep-mask over examples; out-of-range labels (and ``bad`` reasons) raise (strict) or are skipped."""
    reasons = np.where(labels < 0, "negative label", "")
    if num_classes is not None:
        reasons = np.where(labels >= num_classes, f"label not in [0, {num_classes})", reasons)
    reasons = np.where(bad != "", bad, reasons)
    for i in np.flatnonzero(reasons != ""):
        msg = f"{item(int(i))} (label {int(labels[i])}): {reasons[i]}"
        if strict:
            fix = "fix the label or pass the right num_classes" if "label" in reasons[i] else "fix the data"
            raise DataError(f"bad example: {msg}. Fix: {fix}, or pass strict=False to skip such examples")
        skipped.append((item(int(i)), f"{reasons[i]} (label {int(labels[i])})"))
    return reasons == ""


def _report(skipped: list[tuple[str, str]], total: int) -> None:
    """Print the one-line summary of what was skipped."""
    if skipped:
        classes = sum(why.endswith("class dropped") for _, why in skipped)
        extra = f" and {classes} class folder(s)" if classes else ""
        more = f", ... ({len(skipped)} in all, listed in info.skipped)" if len(skipped) > 3 else ""
        shown = ", ".join(f"{item} ({why})" for item, why in skipped[:3]) + more
        print(f"skipped {len(skipped) - classes} of {total} images{extra}: {shown}")


# ----------------------------------------------------------------------------------------------- sources


@dataclass
class _Source:
    """A source reduced to what validation and few-shot sampling need; ``build(keep)`` makes the dataset."""

    labels: np.ndarray | None  # None: not read (a tfds split used whole)
    build: Callable[[np.ndarray | None], tf.data.Dataset]  # keep-mask (None: all) -> (image, label) dataset
    description: str
    total: int | None
    bad: np.ndarray | None = None  # per example: why it is unusable, or ""
    sizes: np.ndarray | None = None  # per example (h, w); None: measure the built dataset
    item: Callable[[int], str] = lambda i: f"example {i}"
    class_names: list[str] | None = None
    num_classes: int | None = None  # what the source itself says


def _folder_source(root: str, strict: bool, skipped: list[tuple[str, str]]) -> _Source:
    class_dirs = class_folders(root)
    listed = {c: list_images(os.path.join(root, c)) for c in class_dirs}
    scanned = iter(scan_files([p for c in class_dirs for p in listed[c][0]]))
    scans = {c: [next(scanned) for _ in listed[c][0]] for c in class_dirs}
    bad = [(p, why) for c in class_dirs for p, why in [*listed[c][1], *((s.path, s.problem) for s in scans[c])] if why]
    empty = [c for c in class_dirs if not listed[c][0] and not listed[c][1]]
    if strict and empty:
        where = printable(os.path.join(root, empty[0]))
        raise DataError(f"class folder {where} is empty: add images or remove the folder")
    if strict and bad:
        raise_bad_files(root, bad)
    skipped += [(printable(p), why) for p, why in bad]
    names: list[str] = []
    good: list[Scan] = []
    labels: list[int] = []
    for c in class_dirs:
        ok = [s for s in scans[c] if s.problem is None]
        if not ok:
            why = "empty class folder" if c in empty else "no readable images"
            skipped.append((printable(os.path.join(root, c)), f"{why}: class dropped"))
            continue
        good += ok
        labels += [len(names)] * len(ok)
        names.append(printable(c))
    if not names:
        raise DataError(f"folder {printable(root)} has no readable images in any class sub-folder")
    paths = np.array([os.fsencode(s.path) for s in good])  # bytes: any file name reaches TensorFlow intact
    shown = [printable(s.path) for s in good]
    routes, label_arr = np.array([s.route for s in good], np.int32), np.array(labels, np.int64)

    def build(keep: np.ndarray | None) -> tf.data.Dataset:
        keep = np.ones(len(good), bool) if keep is None else keep
        return decode_files(paths[keep], [s for s, k in zip(shown, keep) if k], routes[keep], label_arr[keep])

    return _Source(
        label_arr,
        build,
        f"folder {printable(root)} ({len(names)} classes)",
        sum(len(listed[c][0]) for c in class_dirs),
        sizes=np.array([s.size for s in good]),
        item=lambda i: shown[i],
        class_names=names,
        num_classes=len(names),
    )


def _array_source(images: Any, labels: Any, strict: bool, skipped: list[tuple[str, str]]) -> _Source:
    images, labels = np.asarray(images), np.asarray(labels)
    total = len(images)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise DataError(f"images must be an array (N, H, W), (N, H, W, 1) or (N, H, W, 3); got shape {images.shape}")
    integral = labels.dtype.kind in "iu" or (labels.dtype.kind == "f" and bool(np.all(np.mod(labels, 1) == 0)))
    if labels.ndim != 1 or not integral:
        raise DataError(f"labels must be N integer class indices; got shape {labels.shape}, dtype {labels.dtype}")
    if len(images) != len(labels):
        msg = f"{len(images)} images but {len(labels)} labels"
        if strict:
            raise DataError(f"{msg}: pass exactly one label per image (or strict=False to drop the unmatched ones)")
        n = min(len(images), len(labels))
        kind, other = ("image", "label") if len(images) > n else ("label", "image")
        skipped += [(f"{kind} {i}", f"no matching {other} ({msg})") for i in range(n, max(len(images), len(labels)))]
        images, labels = images[:n], labels[:n]
    flat = images.reshape(len(images), -1)
    if images.dtype.kind == "f":
        lo, hi = flat.min(axis=1, initial=0.0), flat.max(axis=1, initial=0.0)
        bad = np.where((lo >= 0) & (hi <= 1), "", "float image values not in [0, 1]")
    elif images.dtype.kind in "iu":
        lo, hi = flat.min(axis=1, initial=0), flat.max(axis=1, initial=0)
        bad = np.where((lo >= 0) & (hi <= 255), "", "integer image values not in [0, 255]")
    else:
        raise DataError(f"images must be uint8 or float in [0, 1]; got dtype {images.dtype}")
    labels = labels.astype(np.int64)

    def build(keep: np.ndarray | None) -> tf.data.Dataset:
        return standardize(tf.data.Dataset.from_tensor_slices((images[keep], labels[keep])))

    h, w = images.shape[1:3]
    return _Source(
        labels, build, f"arrays ({len(images)} images {h}x{w})", total, bad=bad, sizes=np.tile([h, w], (len(images), 1))
    )


def _dataset_source(ds: tf.data.Dataset) -> _Source:
    """One pass over a user dataset: labels, image sizes and float-range problems."""
    spec = ds.element_spec
    _, label_spec = _as_image_label(*(spec if isinstance(spec, tuple) else (spec,)))
    if label_spec.shape.rank not in (0, None) or not (label_spec.dtype.is_integer or label_spec.dtype.is_floating):
        raise DataError(f"labels must be integer scalars (class indices); got {label_spec}")

    def stats(*el: Any) -> tuple[tf.Tensor, ...]:
        image, label = _as_image_label(*el)
        ok = tf.constant(True)
        if image.dtype.is_floating:
            ok = tf.logical_and(tf.reduce_min(image) >= 0, tf.reduce_max(image) <= 1)
        return tf.cast(tf.reshape(label, []), tf.int64), tf.shape(_to_rgb_uint8(image))[:2], ok

    parts = list(ds.map(stats, num_parallel_calls=AUTOTUNE).batch(4096).as_numpy_iterator())
    if not parts:
        raise DataError("the tf.data.Dataset source is empty")
    labels, sizes, ok = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return _Source(
        labels,
        lambda keep: _select(standardize(ds), keep, labels),
        "tf.data.Dataset",
        len(labels),
        bad=np.where(ok, "", "float image values not in [0, 1]"),
        sizes=sizes,
    )


def _tfds_source(source: str, split: str, few_shot: bool, num_classes: int | None, data_dir: str | None) -> _Source:
    try:
        from bit_keras.data import tfds as tfds_source
    except ImportError as err:  # tensorflow_datasets missing
        raise DataError(
            f"{source!r} looks like a tfds name but tensorflow-datasets is not installed: "
            "pip install tensorflow-datasets, or pass a folder"
        ) from err
    try:
        name, split = tfds_source.parse_tfds_source(source, split)
        ds, meta = tfds_source.load_tfds(name, split, data_dir)
        labels = None  # read them (records only, no image decoding) only when the metadata is not enough
        narrower = num_classes is not None and meta.num_classes is not None and num_classes < meta.num_classes
        if few_shot or narrower or meta.num_classes is None or meta.num_examples is None:
            labels = tfds_source.tfds_labels(meta, data_dir)
    except tfds_source.TfdsError as err:
        raise DataError(str(err)) from err
    return _Source(
        labels,
        lambda keep: _select(standardize(ds), keep, labels),
        f"tfds {name} split {split}",
        meta.num_examples if labels is None else len(labels),
        class_names=meta.class_names,
        num_classes=meta.num_classes,
    )


def _select(ds: tf.data.Dataset, keep: np.ndarray | None, labels: np.ndarray | None) -> tf.data.Dataset:
    """Keep the examples whose index is set in ``keep``, checking the source order did not change."""
    if keep is None or labels is None or keep.all():
        return ds
    keep_t, labels_t = tf.constant(keep), tf.constant(labels)

    def checked(i: tf.Tensor, xy: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        same = tf.debugging.assert_equal(
            xy[1],
            tf.gather(labels_t, i),
            message="the source dataset yields a different order on each pass: pass a deterministic (unshuffled) one",
        )
        with tf.control_dependencies([same]):
            return tf.identity(xy[0]), xy[1]

    ds = ds.enumerate().filter(lambda i, xy: tf.gather(keep_t, i)).map(checked, num_parallel_calls=AUTOTUNE)
    return ds.apply(tf.data.experimental.assert_cardinality(int(keep.sum())))


def _finish(
    labels: np.ndarray, keep: np.ndarray, k: int | None, seed: int, num_classes: int | None, names: list[str] | None
) -> tuple[np.ndarray, int]:
    """Final keep-mask after few-shot sampling, and the number of classes."""
    if not keep.any():
        raise DataError("no examples left: the source is empty or every example was skipped")
    n_cls = num_classes if num_classes is not None else int(labels[keep].max()) + 1
    if k is not None:
        kept = np.flatnonzero(keep)
        chosen = kept[sample_few_shot(labels[kept], k, seed, num_classes=n_cls, class_names=names)]
        keep = np.zeros_like(keep)
        keep[chosen] = True
    return keep, n_cls


def _is_path(source: str) -> bool:
    """Folder path or tfds name? Existing paths and explicit paths are paths; anything else is a name."""
    if source.startswith("tfds:"):
        return False
    return os.path.exists(os.path.expanduser(source)) or source.startswith(("/", "./", "../", "~", "\\"))


def _open(
    source: Any,
    split: str,
    few_shot: bool,
    num_classes: int | None,
    strict: bool,
    skipped: list[tuple[str, str]],
    data_dir: str | None,
) -> _Source:
    if isinstance(source, tf.data.Dataset):
        return _dataset_source(source)
    if isinstance(source, tuple) and len(source) == 2:
        return _array_source(source[0], source[1], strict, skipped)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _is_path(source)):
        return _folder_source(os.path.expanduser(os.fsdecode(source)), strict, skipped)
    if isinstance(source, str):
        return _tfds_source(source, split, few_shot, num_classes, data_dir)
    raise DataError(
        f"unsupported source of type {type(source).__name__}: pass a tf.data.Dataset, an (images, labels) "
        "tuple of arrays, a folder path or a tensorflow-datasets name"
    )


# ----------------------------------------------------------------------------------------------- loading


def load_dataset(
    source: Any,
    *,
    split: str = "train",
    num_classes: int | None = None,
    examples_per_class: int | None = None,
    seed: int = 0,
    strict: bool = True,
    data_dir: str | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Load, validate, measure and few-shot sample a labelled image source.

    Returns an unbatched dataset of ``(image uint8 [H, W, 3], label int64)`` (sizes may differ) and a
    :class:`DatasetInfo`. ``source`` is one of:

    * a ``tf.data.Dataset`` of ``(image, label)`` or of ``{"image", "label"}`` dicts (iterated once to
      count, validate and measure; it must yield the same order on every pass);
    * ``(images, labels)`` numpy arrays, images (N, H, W[, 1|3]) uint8 or float in [0, 1];
    * a folder (path, ``str`` or ``bytes``) with one sub-folder per class (class names: the sorted
      sub-folder names; images may sit in nested folders; hidden files, files directly in the folder and
      anything that is not a regular file (FIFOs, sockets, devices, broken symlinks) are ignored, never
      opened; symlinks to files and folders are followed, loops walked once; EXIF orientation is not
      applied, as in ``tf.io.decode_image``);
    * a tensorflow-datasets name, ``"cifar10"``, ``"cifar10:train[:90%]"`` or ``"tfds:cifar10"``
      (``name:split`` overrides ``split``); fails in seconds with DataError when the data is not
      prepared and cannot be downloaded. An existing folder of the same name wins over a tfds name.

    Bad examples (labels < 0 or >= ``num_classes``, float images outside [0, 1], empty class folders,
    images/labels count mismatch, and image files that do not fully decode: truncated, not an image,
    empty, a decompression bomb, unreadable) raise DataError naming them when ``strict``; otherwise
    they are skipped, listed in ``info.skipped`` as (item, reason) and summarised in one printed line.

    Every file of a folder is opened and fully decoded with PIL here, on a thread pool, so a bad file
    is found before training (this costs one decode of every image). The pipeline then decodes each
    file as PIL does: 8-bit JPEG, 8-bit PNG and plain GIFs (first frame) with TensorFlow's decoders
    (JPEG with the accurate IDCT, as PIL), anything else with PIL (first frame); high bit depths are
    scaled to 8 bits, never clipped: 16-bit values ``round(v / 257)``, 32-bit integer and float images
    by the range they span (float in [0, 1]: x 255; [0, 255]: as is; [0, 65535]: / 257; otherwise
    min-max onto [0, 255]); alpha is dropped. Should a file fail to decode in the pipeline all the
    same (changed since it was checked), iteration stops with an error naming it: nothing is dropped.
    File names may hold any bytes; names in messages, ``info.skipped`` and ``class_names`` show bytes
    that are not UTF-8 and control characters as backslash escapes.
    ``examples_per_class=k`` keeps exactly k examples of every class (:func:`sample_few_shot`, ``seed``).
    For ``tf.data`` and tfds sources it first reads every label into memory (tfds records are read
    without decoding their images); the examples themselves are then filtered lazily, so the source
    must yield the same order on every pass. A tfds split used whole is described by its metadata.

    Example:
        >>> import numpy as np
        >>> ds, info = load_dataset((np.zeros((6, 8, 8), np.uint8), [0, 1, 2, 0, 1, 2]), examples_per_class=1)
        >>> info.num_examples, info.num_classes, ds.element_spec[0].shape.as_list()
        (3, 3, [8, 8, 3])
    """
    skipped: list[tuple[str, str]] = []
    src = _open(source, split, examples_per_class is not None, num_classes, strict, skipped, data_dir)
    expected = num_classes if num_classes is not None else src.num_classes
    if src.labels is None:  # a whole tfds split: trust its metadata
        keep, n_cls, n = None, int(expected), int(src.total)
    else:
        bad = src.bad if src.bad is not None else np.full(len(src.labels), "")
        keep = _check_labels(src.labels, expected, bad, strict, skipped, src.item)
        keep, n_cls = _finish(src.labels, keep, examples_per_class, seed, expected, src.class_names)
        n = int(keep.sum())
    _report(skipped, src.total or 0)
    ds = src.build(keep)
    if src.sizes is not None:
        sizes = src.sizes if keep is None else src.sizes[keep]
        size = _median_size(sizes[:, 0], sizes[:, 1])
    else:
        size = image_size_of(ds)
    return ds, DatasetInfo(n, n_cls, size, src.class_names, skipped, src.description)
