"""Evaluation of a classifier on batches: top-1, top-5 and loss; and the weights' finiteness check.

On TensorFlow the batch statistics are one ``tf.function``; on JAX the ``tf.data`` batches are read as NumPy,
the logits come from one ``jax.jit`` forward pass (:func:`bit_keras.train.jax_step.predict_logits`) and the
ranks and losses are computed in NumPy (:func:`rank_and_loss`), with the same tie rule.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from bit_keras.models.resnet import resnet_v2
    >>> m = resnet_v2("R14x0.25", num_classes=3)
    >>> weights_finite(m)
    True
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from bit_keras.backend import backend
from bit_keras.errors import DataError


def rank_and_loss(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per example: the rank of the true class (classes ahead of it, ties towards the lower index) and the
    softmax cross-entropy, in NumPy.

    Example:
        >>> rank, loss = rank_and_loss(np.array([[0.0, 0.0, 0.0], [1.0, 3.0, 2.0]]), np.array([1, 2]))
        >>> rank.tolist(), np.round(loss, 4).tolist()
        ([1, 1], [1.0986, 1.4076])
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels).astype(np.int64)
    true = np.take_along_axis(logits, labels[:, None], axis=1)
    index = np.arange(logits.shape[1])[None, :]
    rank = np.sum((logits > true) | ((logits == true) & (index < labels[:, None])), axis=1)
    top = logits.max(axis=1, keepdims=True)
    loss = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)) - true)[:, 0]
    return rank, loss


def evaluate_model(
    model: keras.Model, dataset: tf.data.Dataset, *, num_classes: int | None = None, jit_compile: bool = False
) -> dict[str, float]:
    """Top-1, top-5 (``min(5, classes)``) accuracy and mean cross-entropy over ``(images, int labels)`` batches.

    Ties are broken towards the lower class index (as ``argmax``), so an untrained zero head scores chance,
    not 100%.

    Example:
        >>> import numpy as np
        >>> from bit_keras.models.resnet import resnet_v2
        >>> m = resnet_v2((1, 1, 1, 1), 0.25, num_classes=3, groups=8)
        >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((6, 32, 32, 3), "float32"), [0, 1, 2, 0, 1, 2])).batch(4)
        >>> r = evaluate_model(m, ds)
        >>> round(r["top1"], 3), r["top5"], r["num_examples"], round(r["loss"], 4)
        (0.333, 1.0, 6, 1.0986)
    """
    if backend() == "jax":
        from bit_keras.train.jax_step import predict_logits

        predict = predict_logits(model)
        ranks, losses = [], []
        for images, labels in dataset.as_numpy_iterator():
            logits = predict(images)
            rank, loss = rank_and_loss(logits, labels)
            ranks.append(rank)
            losses.append(loss)
            classes = logits.shape[1]
        return _summary(ranks, losses, num_classes if not ranks else classes)

    @tf.function(jit_compile=jit_compile, autograph=False)
    def batch_stats(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        logits = tf.cast(model(images, training=False), tf.float32)
        labels = tf.cast(labels, tf.int32)
        true = tf.gather(logits, labels, axis=1, batch_dims=1)[:, None]
        index = tf.range(tf.shape(logits)[1])[None, :]
        ahead = tf.logical_or(logits > true, tf.logical_and(logits == true, index < labels[:, None]))
        rank = tf.reduce_sum(tf.cast(ahead, tf.int32), axis=1)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return rank, loss, tf.shape(logits)[1]

    ranks, losses, classes = [], [], num_classes
    for images, labels in dataset:
        rank, loss, c = batch_stats(images, labels)
        ranks.append(rank.numpy())
        losses.append(loss.numpy())
        classes = int(c)
    return _summary(ranks, losses, classes)


def _summary(ranks: list[np.ndarray], losses: list[np.ndarray], classes: int | None) -> dict[str, float]:
    if not ranks:
        raise DataError("the evaluation dataset is empty: pass a validation source with at least one example")
    rank, loss = np.concatenate(ranks), np.concatenate(losses)
    k = min(5, classes or 5)
    return {
        "top1": float(np.mean(rank < 1)),
        "top5": float(np.mean(rank < k)),
        "loss": float(np.mean(loss)),
        "num_examples": int(rank.size),
    }


def weights_finite(model: keras.Model) -> bool:
    """Whether every weight of ``model`` is finite."""
    return all(bool(np.all(np.isfinite(np.asarray(v.numpy(), np.float64)))) for v in model.weights)
