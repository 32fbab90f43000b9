"""The BiT input pipelines: what turns a :func:`~bit_keras.data.sources.load_dataset` dataset into batches.

* :func:`train_pipeline`: the reference's training preprocessing: resize, random crop, random flip,
  batch, mixup (stateless, so a seed reproduces the stream exactly and a resumed run sees the same batches);
* :func:`eval_pipeline`: resize straight to the crop size, batch;
* :func:`upstream_pipeline`: the upstream (pre-training) augmentation: inception crop, flip, one-hot labels;
* :func:`mixup`: one ``Beta(alpha, alpha)`` mix of a batch with its reverse.

Example:
    >>> import numpy as np
    >>> from bit_keras.data.sources import load_dataset
    >>> images = np.random.randint(0, 256, (20, 32, 32, 3), np.uint8)
    >>> ds, info = load_dataset((images, np.arange(20) % 4), examples_per_class=2)
    >>> x, y = next(iter(train_pipeline(ds, info, resize=40, crop=32, batch_size=4, mixup_alpha=0.1)))
    >>> x.shape, y.shape
    (TensorShape([4, 32, 32, 3]), TensorShape([4, 4]))
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from bit_keras.data.sources import DatasetInfo, standardize

AUTOTUNE = tf.data.AUTOTUNE
CACHE_LIMIT_BYTES = 1 << 30  # cache the decoded training data in memory below this size


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed: Any = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix a batch with its reverse: ``lam * x + (1 - lam) * x[::-1]``, one ``lam ~ Beta(alpha, alpha)``.

    Images and (one-hot, float) labels are mixed with the same ``lam``; ``alpha <= 0`` returns them
    unchanged. ``lam`` is ``g1 / (g1 + g2)`` of two Gamma(alpha) draws; ``seed`` (an int or a shape-[2]
    tensor) makes the draw stateless and reproducible.

    Example:
        >>> x, y = mixup(tf.constant([[0.0], [1.0]]), tf.constant([[1.0, 0.0], [0.0, 1.0]]), 0.2, seed=1)
        >>> bool(tf.reduce_all(tf.abs(tf.reduce_sum(y, axis=1) - 1.0) < 1e-6))
        True
    """
    if alpha <= 0:
        return images, labels
    if seed is None:
        g = tf.random.gamma([2], alpha, dtype=tf.float64)
    else:
        seed = tf.stack([seed, 0]) if isinstance(seed, int) else seed
        g = tf.random.stateless_gamma([2], seed=tf.cast(seed, tf.int64), alpha=alpha, dtype=tf.float64)
    total = g[0] + g[1]
    lam = tf.where(total > 0, g[0] / tf.where(total > 0, total, 1.0), 1.0)
    mix_x = lambda t: tf.cast(lam, t.dtype) * t + tf.cast(1.0 - lam, t.dtype) * tf.reverse(t, axis=[0])  # noqa: E731
    return mix_x(images), mix_x(labels)


def _scale(image: tf.Tensor, input_range: tuple[float, float]) -> tf.Tensor:
    lo, hi = input_range
    return tf.clip_by_value(image, 0.0, 255.0) * ((hi - lo) / 255.0) + lo


def train_pipeline(
    ds: tf.data.Dataset,
    info: DatasetInfo,
    *,
    resize: int,
    crop: int,
    batch_size: int,
    flip: bool = True,
    mixup_alpha: float = 0.0,
    input_range: tuple[float, float] = (0.0, 1.0),
    shuffle_buffer: int = 10_000,
    seed: int | None = 0,
    repeat: bool = True,
    cache: bool | None = None,
) -> tf.data.Dataset:
    """Training batches ``(float32 [B, crop, crop, 3] in input_range, float32 one-hot [B, num_classes])``.

    Cache (default: when the decoded data is under 1 GiB), shuffle, repeat, then per image: bilinear
    resize to (resize, resize), random crop, random left-right flip, scale; batch (dropping the
    remainder), mixup with one lambda per batch, prefetch. Random crops, flips and mixup use stateless
    ops seeded by ``seed`` and the element's position, so an int ``seed`` reproduces the stream exactly;
    ``seed=None`` draws a fresh one.

    Example:
        >>> import numpy as np
        >>> from bit_keras.data.sources import load_dataset
        >>> ds, info = load_dataset((np.zeros((8, 16, 16, 3), np.uint8), np.arange(8) % 2))
        >>> x, y = next(iter(train_pipeline(ds, info, resize=20, crop=16, batch_size=4, input_range=(-1, 1))))
        >>> x.shape.as_list(), y.shape.as_list(), float(tf.reduce_min(x))
        ([4, 16, 16, 3], [4, 2], -1.0)
    """
    h, w = info.image_size
    if cache is None:
        cache = info.num_examples * h * w * 3 < CACHE_LIMIT_BYTES
    base = seed if seed is not None else random.SystemRandom().randrange(2**31)
    ds = standardize(ds)
    if cache:
        ds = ds.cache()
    ds = ds.shuffle(max(1, min(shuffle_buffer, info.num_examples)), seed=base, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def augment(i: tf.Tensor, xy: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.image.resize(xy[0], (resize, resize), method="bilinear")
        image = tf.image.stateless_random_crop(image, [crop, crop, 3], seed=tf.stack([base, 3 * i]))
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=tf.stack([base, 3 * i + 1]))
        return _scale(image, input_range), tf.one_hot(xy[1], info.num_classes, dtype=tf.float32)

    ds = ds.enumerate().map(augment, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True)
    if mixup_alpha > 0:
        ds = ds.enumerate().map(
            lambda i, xy: mixup(xy[0], xy[1], mixup_alpha, seed=tf.stack([tf.constant(base, tf.int64), 3 * i + 2])),
            num_parallel_calls=AUTOTUNE,
        )
    return ds.prefetch(AUTOTUNE)


def eval_pipeline(
    ds: tf.data.Dataset,
    info: DatasetInfo,
    *,
    crop: int,
    batch_size: int,
    input_range: tuple[float, float] = (0.0, 1.0),
) -> tf.data.Dataset:
    """Evaluation batches ``(float32 [b, crop, crop, 3], int64 [b])``: resize straight to (crop, crop), no crop.

    Resizing directly to the crop size is the reference's choice; the last batch may be smaller, so no
    example is lost.

    Example:
        >>> import numpy as np
        >>> from bit_keras.data.sources import load_dataset
        >>> ds, info = load_dataset((np.zeros((5, 16, 16, 3), np.uint8), np.arange(5) % 2))
        >>> [int(x.shape[0]) for x, _ in eval_pipeline(ds, info, crop=8, batch_size=2)]
        [2, 2, 1]
    """
    del info  # kept for symmetry with train_pipeline
    ds = standardize(ds).map(
        lambda x, y: (_scale(tf.image.resize(x, (crop, crop), method="bilinear"), input_range), y),
        num_parallel_calls=AUTOTUNE,
    )
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def upstream_pipeline(ds: tf.data.Dataset, info: DatasetInfo, *, image_size: int, batch_size: int,
                      min_crop_area: float = 0.05, flip: bool = True, input_range: Sequence[float] = (0.0, 1.0),
                      seed: int = 0, repeat: bool = True) -> tf.data.Dataset:
    """Upstream training batches: inception-style crop (area 5-100%, aspect 3/4-4/3) resized to
    ``image_size``, random flip, scaled to ``input_range``; one-hot labels. Deterministic for a seed
    (stateless ops keyed by the element's position), so a resumed run sees the same batches. The shuffle
    order also depends on TensorFlow's global seed when one is set (``tf.random.set_seed``,
    ``keras.utils.set_random_seed``): resume under the same setting.

    Example:
        >>> import numpy as np
        >>> from bit_keras.data.sources import load_dataset
        >>> ds, info = load_dataset((np.zeros((8, 20, 20, 3), np.uint8), np.arange(8) % 2))
        >>> x, y = next(iter(upstream_pipeline(ds, info, image_size=16, batch_size=4)))
        >>> x.shape.as_list(), y.shape.as_list()
        ([4, 16, 16, 3], [4, 2])
    """
    lo, hi = (float(v) for v in input_range)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.uint8), tf.cast(y, tf.int64)), num_parallel_calls=AUTOTUNE).cache()
    ds = ds.shuffle(max(1, min(100_000, info.num_examples)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def augment(i: tf.Tensor, xy: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = xy
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=tf.stack([tf.constant(seed, tf.int64), 2 * i]), min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3), area_range=(min_crop_area, 1.0), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, size)
        image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size), method="bilinear")
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=tf.stack([tf.constant(seed, tf.int64),
                                                                                   2 * i + 1]))
        image = tf.clip_by_value(image, 0.0, 255.0) * ((hi - lo) / 255.0) + lo
        return image, tf.one_hot(label, info.num_classes, dtype=tf.float32)

    ds = ds.enumerate().map(augment, num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.batch(batch_size, drop_remainder=True).with_options(options).prefetch(AUTOTUNE)
