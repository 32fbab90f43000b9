"""One optimizer step on the JAX backend: :class:`JaxTrainStep`, the counterpart of
:class:`~bit_keras.train.step.TrainStep` (which is ``tf.function`` and ``tf.distribute``, TensorFlow-only).

The same step as on TensorFlow: softmax or sigmoid cross-entropy on (possibly mixed) one-hot labels summed over
the global batch and divided by its size (:func:`per_example_loss`), an optional L2 weight decay on the
convolution and dense kernels (:func:`~bit_keras.train.step.decayed_kernels`) added to the loss and, once per
global batch, to the gradients, gradients accumulated over ``batch_split`` micro-batches (``jax.lax.scan``),
then one ``optimizer.stateless_apply``. The whole step is one ``jax.jit`` program on ``model.stateless_call``
and ``jax.value_and_grad``; under ``keras.distribution.DataParallel`` the batch is sharded over the devices and
XLA sums the gradients across them. Mixed precision is Keras's (``mixed_bfloat16``; ``mixed_float16`` with the
``LossScaleOptimizer``'s dynamic loss scale). The Keras variables hold the state between steps, so the
learning rate, checkpoints, evaluation and ``model.keras`` read and write them as on TensorFlow.

Example (the loss runs on every backend; the step on JAX):
    >>> import numpy as np
    >>> logits, labels = np.array([[0.0, 0.0], [2.0, 0.0]], "float32"), np.array([[1, 0], [0.5, 0.5]], "float32")
    >>> np.round(np.asarray(per_example_loss(labels, logits, "softmax"), np.float64), 4).tolist()
    [0.6931, 1.1269]
    >>> np.round(np.asarray(per_example_loss(labels, logits, "sigmoid"), np.float64), 4).tolist()
    [1.3863, 1.8201]
    >>> import keras
    >>> if keras.backend.backend() == "jax":
    ...     from bit_keras.models.resnet import resnet_v2
    ...     from bit_keras.train.step import make_optimizer
    ...     model = resnet_v2("R14x0.25", num_classes=3)
    ...     step = JaxTrainStep(model, make_optimizer(model), None, batch_size=4, batch_split=2)
    ...     x, y = np.random.rand(4, 32, 32, 3).astype("float32"), np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    ...     assert float(step((x, y))) > 0
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from bit_keras.train.jax_distribute import put_batch, replicas, replicate
from bit_keras.train.step import check_step_settings, decayed_kernels


def per_example_loss(labels: Any, logits: Any, kind: str = "softmax") -> Any:
    """Cross-entropy per example in float32: ``"softmax"`` or ``"sigmoid"`` (summed over classes).

    The values and gradients of ``tf.nn.softmax_cross_entropy_with_logits`` (for labels that sum to 1, as one-hot
    and mixed-up labels do; TensorFlow's gradient ``softmax - labels`` assumes it) and of
    ``tf.nn.sigmoid_cross_entropy_with_logits``, written as TensorFlow writes it: with ``where`` rather than
    ``maximum``/``abs``, whose gradients at a logit of exactly 0 (every logit of a zero head) differ.
    """
    labels, logits = ops.cast(labels, "float32"), ops.cast(logits, "float32")
    if kind == "softmax":
        return -ops.sum(labels * ops.log_softmax(logits, axis=-1), axis=-1)
    positive = logits >= 0
    relu = ops.where(positive, logits, ops.zeros_like(logits))
    neg_abs = ops.where(positive, -logits, logits)
    return ops.sum(relu - logits * labels + ops.log1p(ops.exp(neg_abs)), axis=-1)


class JaxTrainStep:
    """One optimizer step on a global batch of NumPy arrays; calling it returns the global mean loss (a float32
    JAX scalar) and leaves the updated values in the model's and the optimizer's variables.

    Args mirror :class:`~bit_keras.train.step.TrainStep`: ``distribution`` is None (one device) or a
    ``keras.distribution.DataParallel``; each device's share of the batch is cut into ``batch_split``
    micro-batches, and micro-batch ``j`` is every device's ``j``-th piece (as each TensorFlow replica cuts its
    own share), so the update equals that of the full batch.
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        distribution: keras.distribution.DataParallel | None,
        *,
        batch_size: int,
        batch_split: int = 1,
        loss: str = "softmax",
        weight_decay: float = 0.0,
    ) -> None:
        import jax

        n = replicas(distribution)
        check_step_settings(batch_size, n, batch_split, loss, unit="devices")
        self.model, self.optimizer, self.strategy = model, optimizer, distribution
        self.batch_size, self.batch_split, self.replicas = batch_size, batch_split, n
        self.micro = batch_size // n // batch_split
        self.loss_kind, self.weight_decay = loss, float(weight_decay)
        self._decay_mask = decayed_kernels(model) if weight_decay else [False] * len(model.trainable_variables)
        replicate(distribution, [*model.variables, *optimizer.variables])
        self._step = jax.jit(self._pure_step)

    # ------------------------------------------------------------------ the pure function jax.jit compiles

    def _scale(self, value: Any, optimizer_values: list[Any]) -> Any:
        """``optimizer.scale_loss(value)`` with the optimizer's state taken from ``optimizer_values``."""
        with keras.StatelessScope(state_mapping=list(zip(self.optimizer.variables, optimizer_values))):
            return self.optimizer.scale_loss(value)

    def _micro_grads(self, trainable: list[Any], non_trainable: list[Any], optimizer_values: list[Any],
                     images: Any, labels: Any) -> tuple[Any, list[Any], list[Any]]:
        import jax

        def scaled_loss(weights: list[Any]) -> tuple[Any, tuple[Any, list[Any]]]:
            logits, state = self.model.stateless_call(weights, non_trainable, images, training=True)
            loss = ops.sum(per_example_loss(labels, logits, self.loss_kind)) / self.batch_size
            return self._scale(loss, optimizer_values), (loss, state)

        (_, (loss, non_trainable)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(trainable)
        return loss, grads, non_trainable

    def _micro_batches(self, x: Any) -> Any:
        """``[batch, ...]`` -> ``[batch_split, batch / batch_split, ...]``, micro-batch j made of every device's
        j-th piece of its share."""
        n, k, m = self.replicas, self.batch_split, self.micro
        x = ops.reshape(x, (n, k, m, *x.shape[1:]))
        x = ops.swapaxes(x, 0, 1)
        return ops.reshape(x, (k, n * m, *x.shape[3:]))

    def _pure_step(self, trainable: list[Any], non_trainable: list[Any], optimizer_values: list[Any],
                   images: Any, labels: Any) -> tuple[Any, list[Any], list[Any], list[Any]]:
        import jax

        if self.batch_split == 1:
            loss, grads, non_trainable = self._micro_grads(trainable, non_trainable, optimizer_values, images, labels)
        else:
            def body(carry: tuple[Any, list[Any], list[Any]], batch: tuple[Any, Any]) -> tuple[Any, None]:
                total, acc, state = carry
                loss, grads, state = self._micro_grads(trainable, state, optimizer_values, *batch)
                return (total + loss, [a + g for a, g in zip(acc, grads)], state), None

            start = (ops.zeros((), "float32"), [ops.zeros_like(w) for w in trainable], non_trainable)
            batches = (self._micro_batches(images), self._micro_batches(labels))
            (loss, grads, non_trainable), _ = jax.lax.scan(body, start, batches)
        if self.weight_decay:
            l2 = 0.0
            out = []
            for g, w, decay in zip(grads, trainable, self._decay_mask):
                if decay:
                    w = ops.cast(w, "float32")
                    g = g + ops.cast(self._scale(self.weight_decay * w, optimizer_values), g.dtype)
                    l2 = l2 + 0.5 * self.weight_decay * ops.sum(w * w)
                out.append(g)
            loss, grads = loss + l2, out
        trainable, optimizer_values = self.optimizer.stateless_apply(optimizer_values, grads, trainable)
        return loss, trainable, non_trainable, optimizer_values

    # ------------------------------------------------------------------ the step

    def __call__(self, batch: Any) -> Any:
        images, labels = put_batch(self.strategy, tuple(batch))
        model, optimizer = self.model, self.optimizer
        loss, trainable, non_trainable, optimizer_values = self._step(
            [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables], images, labels)
        for variables, values in ((model.trainable_variables, trainable),
                                  (model.non_trainable_variables, non_trainable),
                                  (optimizer.variables, optimizer_values)):
            for v, value in zip(variables, values):
                v.assign(value)
        return loss


_PREDICT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def predict_logits(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """``images -> float32 logits`` (NumPy) of ``model`` in inference mode, one ``jax.jit`` program per model
    reading its current variables (for evaluation during and after training)."""
    fn = _PREDICT.get(model)
    if fn is None:
        import jax

        forward = jax.jit(lambda weights, state, x: ops.cast(
            model.stateless_call(weights, state, x, training=False)[0], "float32"))

        def fn(images: np.ndarray) -> np.ndarray:
            return np.asarray(forward([v.value for v in model.trainable_variables],
                                      [v.value for v in model.non_trainable_variables], images))

        _PREDICT[model] = fn
    return fn
