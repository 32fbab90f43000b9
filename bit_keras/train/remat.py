"""Rematerialisation of residual units: trade compute for activation memory in training.

:func:`remat_forward` cuts a BiT ResNet-v2 (any functional model whose units are named like
``block1-unit01-*``) into one sub-model per residual unit, sharing the model's layers and weights, and runs
each under ``tf.recompute_grad``: the backward pass recomputes a unit's activations from its input instead
of keeping them from the forward pass. A training step then holds the unit boundaries (one tensor each)
plus one unit's internals at a time, instead of every GroupNorm, ReLU and convolution output of the
network, for about one more forward pass of compute (~1.3x a training step).

Keras' own ``keras.RematScope`` does not serve here: on the TensorFlow backend it passes keyword arguments
to ``tf.custom_gradient``, which refuses them inside a ``tf.function`` ("keyword arguments only when
eager"), i.e. in every real training step.

Example:
    >>> import numpy as np, tensorflow as tf
    >>> from bit_keras.models.resnet import resnet_v2
    >>> model = resnet_v2((1, 1, 1, 1), width=0.25, num_classes=3, groups=8)
    >>> forward = remat_forward(model)
    >>> len(forward.units)
    4
    >>> x = np.random.rand(2, 32, 32, 3).astype("float32")
    >>> bool(np.allclose(forward(x, training=True), model(x, training=True), atol=1e-6))
    True
"""

from __future__ import annotations

import re
from typing import Any

import keras
import tensorflow as tf

from bit_keras.errors import ConfigError

UNIT_START = re.compile(r"^(block\d+[-.]unit\d+)([-.])a[-.]group_norm$")  # "." in models of bit-keras 0.2


class RematForward:
    """``model``'s forward pass with each residual unit recomputed in the backward pass.

    Calling it returns what ``model(images, training=...)`` returns; the variables are ``model``'s own
    (use ``model.trainable_variables`` for the gradients). Build it once, outside ``tf.function``.
    """

    def __init__(self, model: keras.Model):
        starts = [(m.group(1), m.group(2)) for m in (UNIT_START.match(layer.name) for layer in model.layers) if m]
        if not starts:
            raise ConfigError(
                f"remat: model {model.name!r} has no residual units named 'blockN-unitNN-a-group_norm' to "
                "rematerialise (a hub.KerasLayer or another architecture); train it with remat=False."
            )
        self.model = model
        segments: list[tuple[str, keras.Model]] = []
        boundary = model.inputs[0]
        for prefix, sep in starts:
            unit_in = model.get_layer(f"{prefix}{sep}a{sep}group_norm").input
            unit_out = model.get_layer(f"{prefix}{sep}add").output
            if unit_in is not boundary:
                segments.append(("glue", keras.Model(boundary, unit_in, name=f"{prefix}_before")))
            segments.append(("unit", keras.Model(unit_in, unit_out, name=f"{prefix}_remat")))
            boundary = unit_out
        segments.append(("glue", keras.Model(boundary, model.outputs[0], name=f"{model.name}_after_units")))
        self.segments = segments
        self.units = [m for kind, m in segments if kind == "unit"]

    def __call__(self, images: Any, training: bool = False) -> Any:
        x = images
        for kind, sub in self.segments:
            if kind == "unit":
                # A closure, not keyword arguments: tf.custom_gradient accepts only positional tensors
                # inside a tf.function. The default argument pins `sub` for the recomputation.
                x = tf.recompute_grad(lambda t, sub=sub: sub(t, training=training))(x)
            else:
                x = sub(x, training=training)
        return x


def remat_forward(model: keras.Model) -> RematForward:
    """The rematerialising forward pass of ``model`` (see the module docstring).

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
        >>> [u.name for u in remat_forward(resnet_v2((1, 2, 1, 1), 0.25, groups=8)).units][:3]
        ['block1-unit01_remat', 'block2-unit01_remat', 'block2-unit02_remat']
    """
    return RematForward(model)
