"""One optimizer step, the same for every recipe and for the benchmark: :class:`TrainStep`.

* :func:`make_optimizer`: SGD with momentum whose learning rate the engine sets each step (a
  ``LossScaleOptimizer`` around it for float16), built for the model's variables.
* :class:`TrainStep`: loss, gradients (accumulated over ``batch_split`` micro-batches), update; distributed
  over the strategy's replicas, optionally XLA-compiled and with rematerialised residual units. The loss is
  softmax or sigmoid cross-entropy on (possibly mixed) one-hot labels, averaged over the global batch, plus an
  optional L2 weight decay on the convolution and dense kernels.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from bit_keras.models.resnet import resnet_v2
    >>> model = resnet_v2("R14x0.25", num_classes=3)
    >>> step = TrainStep(model, make_optimizer(model), tf.distribute.get_strategy(), batch_size=4, batch_split=2)
    >>> x, y = np.random.rand(4, 32, 32, 3).astype("float32"), tf.one_hot([0, 1, 2, 0], 3)
    >>> float(step((x, y))) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from bit_keras.errors import ConfigError
from bit_keras.models.layers import StandardizedConv2D, precomputed_standardization
from bit_keras.train.remat import remat_forward

LOSSES = ("softmax", "sigmoid")


def make_optimizer(
    model: keras.Model, *, momentum: float = 0.9, weight_decay: float = 0.0, mixed_precision: str | None = None
) -> keras.optimizers.Optimizer:
    """SGD with momentum (learning rate 0 until the engine sets it), built for ``model``'s variables.

    ``weight_decay`` is the optimizer's decoupled decay (the HyperRule's; the upstream recipe's L2 decay is a
    loss term, :class:`TrainStep`'s ``weight_decay``). ``mixed_precision="mixed_float16"`` wraps it in a
    dynamic ``LossScaleOptimizer``. Call it under the strategy's scope: the optimizer must be built there
    before the first distributed step.

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
        >>> opt = make_optimizer(resnet_v2("R14x0.25", num_classes=2))
        >>> float(opt.learning_rate), len(opt.variables) > 2
        (0.0, True)
    """
    kwargs: dict[str, Any] = {"weight_decay": weight_decay} if weight_decay else {}
    optimizer: keras.optimizers.Optimizer = keras.optimizers.SGD(learning_rate=0.0, momentum=momentum, **kwargs)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def set_learning_rate(optimizer: keras.optimizers.Optimizer, lr: float) -> None:
    """Assign ``lr`` to the optimizer's learning-rate variable (the inner one under loss scaling)."""
    optimizer.learning_rate.assign(lr)


def decayed_kernels(model: keras.Model) -> list[bool]:
    """Per trainable variable: whether L2 weight decay applies (convolution and dense kernels, not norms/biases)."""
    kernels = {id(layer.kernel) for layer in model.layers
               if isinstance(layer, (StandardizedConv2D, keras.layers.Conv2D, keras.layers.Dense))}
    return [id(v) in kernels for v in model.trainable_variables]


def check_step_settings(batch_size: int, replicas: int, batch_split: int, loss: str, unit: str = "replicas") -> None:
    """The settings every training step needs (TensorFlow's and JAX's): ConfigError naming the fix.

    Example:
        >>> check_step_settings(8, 2, 2, "softmax")  # 8 = 2 replicas x 2 micro-batches x 2
        >>> check_step_settings(8, 1, 3, "softmax")
        Traceback (most recent call last):
        ...
        bit_keras.errors.ConfigError: batch_size 8 must be divisible by replicas (1) x batch_split (3) = 3: choose a batch_size that is a multiple of it
    """
    if batch_size % (replicas * batch_split):
        raise ConfigError(
            f"batch_size {batch_size} must be divisible by {unit} ({replicas}) x batch_split ({batch_split}) "
            f"= {replicas * batch_split}: choose a batch_size that is a multiple of it"
        )
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}, got {loss!r}")


class TrainStep:
    """One optimizer step on a global batch; calling it returns the global mean loss (float32 scalar tensor).

    With ``batch_split=k`` each replica's share is cut into k micro-batches whose gradients are summed before
    the one update, so the update equals that of the full batch; the kernels are then standardized once per step,
    not once per micro-batch (each micro-batch's gradient is taken with respect to the standardized kernels, and
    the sum goes back through the standardization once). ``jit_compile`` compiles the per-replica
    loss-and-gradient function with XLA (the update stays outside, as MirroredStrategy needs). ``remat``
    recomputes each residual unit in the backward pass. ``weight_decay`` adds ``wd / 2 * sum(w**2)`` of the
    kernels to the loss (its gradient added once per global batch). ``run_eagerly`` skips ``tf.function``
    (for the benchmark's eager rows).
    """

    def __init__(
        self,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        strategy: tf.distribute.Strategy,
        *,
        batch_size: int,
        batch_split: int = 1,
        jit_compile: bool = False,
        remat: bool = False,
        loss: str = "softmax",
        weight_decay: float = 0.0,
        run_eagerly: bool = False,
    ) -> None:
        replicas = strategy.num_replicas_in_sync
        check_step_settings(batch_size, replicas, batch_split, loss)
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.batch_size, self.batch_split = batch_size, batch_split
        self.micro = batch_size // replicas // batch_split
        self.loss_kind, self.weight_decay = loss, float(weight_decay)
        self._decay_mask = decayed_kernels(model) if weight_decay else []
        self.forward: Callable[..., Any] = remat_forward(model) if remat else model
        # Standardize once per step under batch_split (rematerialised units recompute their own convolutions).
        self._convs = [] if remat or batch_split == 1 else [
            layer for layer in model.layers if isinstance(layer, StandardizedConv2D) and layer.trainable]
        if run_eagerly:
            self._grads, self._step = self._loss_and_grads, self._distributed_step
        else:
            self._grads = tf.function(self._loss_and_grads, jit_compile=jit_compile, autograph=False)
            self._step = tf.function(self._distributed_step, autograph=False)

    def _per_example_loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(labels, tf.float32)
        if self.loss_kind == "softmax":
            return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1)

    def _micro_grads(self, images: tf.Tensor, labels: tf.Tensor, sources: list[Any] | None = None,
                     watched: tuple[tf.Tensor, ...] = ()) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """Loss and gradients of one micro-batch with respect to ``sources`` (default: the trainable variables)
        and then the ``watched`` tensors."""
        sources = self.model.trainable_variables if sources is None else sources
        with tf.GradientTape() as tape:
            tape.watch(watched)
            logits = tf.cast(self.forward(images, training=True), tf.float32)
            loss = tf.nn.compute_average_loss(self._per_example_loss(labels, logits), global_batch_size=self.batch_size)
            scaled = self.optimizer.scale_loss(loss)
        targets = [*sources, *watched]
        grads = tape.gradient(scaled, targets)
        return loss, [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, targets)]

    def _accumulated(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        k, m = self.batch_split, self.micro
        if k == 1:
            return self._micro_grads(images, labels)
        images = tf.reshape(images, tf.concat([[k, m], tf.shape(images)[1:]], 0))
        labels = tf.reshape(labels, tf.concat([[k, m], tf.shape(labels)[1:]], 0))
        variables = self.model.trainable_variables
        kernels = {id(layer.kernel) for layer in self._convs}
        others = [v for v in variables if id(v) not in kernels]
        with tf.GradientTape() as ws_tape:
            standardized = [layer.standardized_kernel() for layer in self._convs]
        zeros = [tf.zeros_like(v) for v in [*others, *standardized]]

        def body(i: tf.Tensor, loss: tf.Tensor, acc: list[tf.Tensor], *std: tf.Tensor) -> tuple[Any, ...]:
            with precomputed_standardization(self._convs, std):
                l, g = self._micro_grads(images[i], labels[i], others, std)
            return (i + 1, loss + l, [a + b for a, b in zip(acc, g)], *std)

        _, loss, grads, *_ = tf.while_loop(
            lambda i, *_: i < k, body, (tf.constant(0), tf.constant(0.0), zeros, *standardized), maximum_iterations=k
        )
        if not self._convs:
            return loss, grads
        by_id = dict(zip(map(id, others), grads[:len(others)]))
        kernel_grads = ws_tape.gradient(standardized, [layer.kernel for layer in self._convs],
                                        output_gradients=grads[len(others):])
        by_id.update(zip((id(layer.kernel) for layer in self._convs), kernel_grads))
        return loss, [by_id[id(v)] for v in variables]

    def _loss_and_grads(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        loss, grads = self._accumulated(images, labels)
        if not self.weight_decay:
            return loss, grads
        # Each replica adds its share, so the summed update carries the decay exactly once.
        share = self.weight_decay / self.strategy.num_replicas_in_sync
        out, l2 = [], 0.0
        for g, v, decay in zip(grads, self.model.trainable_variables, self._decay_mask):
            if decay:
                w = tf.cast(v, tf.float32)
                g = g + tf.cast(self.optimizer.scale_loss(share * w), g.dtype)
                l2 += 0.5 * share * tf.reduce_sum(w * w)
            out.append(g)
        return loss + l2, out

    def _replica_step(self, images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        loss, grads = self._grads(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss

    def _distributed_step(self, batch: Any) -> tf.Tensor:
        per_replica = self.strategy.run(self._replica_step, args=tuple(batch))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def __call__(self, batch: Any) -> tf.Tensor:
        return self._step(batch)
