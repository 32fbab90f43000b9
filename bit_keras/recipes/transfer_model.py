"""The model :func:`bit_keras.recipes.transfer.transfer` fine-tunes: a zoo name, a ``keras.Model`` or a hub handle,
turned into a classifier with a zero-initialised head of the right size.

Example:
    >>> from bit_keras.models.resnet import resnet_v2
    >>> with_head(resnet_v2((1, 1, 1, 1), 0.25, num_classes=None, groups=8), 3).output_shape
    (None, 3)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from bit_keras.errors import ConfigError
from bit_keras.models.policy import seeded_init
from bit_keras.models.resnet import HEAD_NAME


def with_head(model: keras.Model, num_classes: int) -> keras.Model:
    """``model`` with a zero-initialised ``num_classes`` head (the BiT transfer init).

    A Dense layer named "head" of another size is replaced (a same-size one is kept); a feature model
    (one output ``[batch, features]``) gets one added.

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
        >>> m = with_head(resnet_v2((1, 1, 1, 1), 0.25, num_classes=10, groups=8), 4)
        >>> m.get_layer("head").units, float(abs(m.get_layer("head").kernel.numpy()).sum())
        (4, 0.0)
    """
    try:
        head = model.get_layer(HEAD_NAME)
    except ValueError:
        head = None
    if isinstance(head, keras.layers.Dense):
        if head.units == num_classes:
            return model
        features = head.input
    else:
        if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
            raise ConfigError(
                f"model {model.name!r} has no Dense layer named 'head' and its output is not a feature vector "
                f"[batch, features] (outputs: {[tuple(o.shape) for o in model.outputs]}): pass a classifier whose "
                "last layer is Dense(name='head'), or a model ending in pooled features"
            )
        features = model.outputs[0]
    logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", name=HEAD_NAME)(features)
    return keras.Model(model.inputs, logits, name=model.name)


def _hub_model(handle: str, num_classes: int, input_range: Sequence[float]) -> keras.Model:
    from hub_export import load as hub

    layer = hub.load_layer(handle, trainable=True)
    inputs = keras.Input((None, None, 3), name="images")
    lo, hi = (float(v) for v in input_range)
    x = inputs if (lo, hi) == (0.0, 1.0) else keras.layers.Rescaling(1.0 / (hi - lo), -lo / (hi - lo))(inputs)
    logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", name=HEAD_NAME)(layer(x))
    return keras.Model(inputs, logits, name="bit_hub_transfer")


def is_hub_handle(model: str) -> bool:
    """Whether ``model`` is a hub handle (``hub_export.load.is_handle``) rather than a zoo name.

    Example:
        >>> is_hub_handle("BiT-M-R50x1")
        False
    """
    try:
        from hub_export import load as hub
    except ImportError:  # pragma: no cover - hub support not installed
        return False
    return hub.is_handle(model)


def build_transfer_model(
    model: str | keras.Model,
    *,
    num_classes: int,
    weights: Any = "pretrained",
    input_range: Sequence[float] = (0.0, 1.0),
    zero_head: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> keras.Model:
    """The classifier to fine-tune; call it under ``strategy.scope()`` (and a dtype policy if wanted).

    * a zoo name: ``create_model`` with a zero ``num_classes`` head, random init seeded by ``seed``, then the
      backbone of ``weights`` (``"pretrained"``, a path or URL; None keeps the random init). With
      ``zero_head=False`` the checkpoint's head is loaded when it has ``num_classes`` classes.
    * a ``keras.Model``: :func:`with_head`; under a non-default strategy it is cloned so that its variables
      are created there. ``weights`` as a path loads a backbone into it; ``"pretrained"``/None keep its own.
    * a hub handle (``hub_export.load.is_handle``): the SavedModel layer (trainable) plus a zero head; images in
      ``input_range`` are mapped to the layer's [0, 1].

    Example:
        >>> from bit_keras.models.spec import ArchSpec, register_arch
        >>> from bit_keras.models.presets import ModelInfo, register_model
        >>> _ = register_arch("doc-tiny", ArchSpec((1, 1, 1, 1), 0.25, groups=8))
        >>> _ = register_model(ModelInfo("doc-tiny", "doc-tiny", "none", 10, None, 32), overwrite=True)
        >>> build_transfer_model("doc-tiny", num_classes=3, weights=None).output_shape
        (None, 3)
    """
    load_head = False if zero_head else None
    if isinstance(model, keras.Model):
        built = model
        if tf.distribute.has_strategy():  # inside a non-default strategy's scope: re-create the variables there
            built = keras.models.clone_model(model)
            built.set_weights(model.get_weights())
        built = with_head(built, num_classes)
        if weights not in (None, "pretrained"):
            from bit_keras.models.weights import load_npz

            load_npz(built, os.fspath(weights), load_head=load_head)
        return built
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str):
        raise ConfigError(f"model must be a zoo name, a hub handle or a keras.Model; got {type(model).__name__}")
    if is_hub_handle(model):
        return _hub_model(model, num_classes, input_range)
    from bit_keras.models.create import create_model, load_weights
    from bit_keras.models.presets import get_model_info

    info = get_model_info(model)
    with seeded_init(seed):
        built = create_model(info.name, weights=None, num_classes=num_classes, input_range=input_range)
    if weights is not None:
        load_weights(built, info, weights, load_head=load_head, progress=progress)
    return built
