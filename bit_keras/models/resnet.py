"""The BiT ResNet-v2 builder: one function for every depth and width, with the layers passed in.

Pre-activation bottleneck ResNet-v2 with weight-standardized convolutions and GroupNorm, exactly as in
google-research/big_transfer. The network is walked from its :class:`~bit_keras.models.spec.ArchSpec`
(:meth:`~bit_keras.models.spec.ArchSpec.units`), and the layers are passed in, as in timm: ``conv_layer``
(default :class:`StandardizedConv2D`; a plain ``Conv2D`` gives the folded serving network) and
``norm_layer`` (default :class:`GroupNorm`). Layer names mirror the official ``.npz`` keys with ``-`` for
``/`` (``block1-unit01-a-group_norm`` holds ``resnet/block1/unit01/a/group_norm/{gamma,beta}``), so weights
map to layers by name whatever the layers are. (Not ``.``, as bit-keras 0.2 wrote: Keras on PyTorch registers
variables as torch parameters by layer name, and torch refuses a ``.`` in a parameter name. Models from
``.keras`` files of 0.2 still load their weights by name.)

Named feature layers (identity layers, free at run time) mark the multi-scale outputs: ``stem``
(stride 4), ``block1`` (4), ``block2`` (8), ``block3`` (16), ``block4`` (32), and ``pre_logits``.

Example:
    >>> from bit_keras.models.resnet import resnet_v2
    >>> resnet_v2("R14x0.25", num_classes=10).output_shape
    (None, 10)
    >>> resnet_v2((1, 1, 1, 1), width=0.5, num_classes=None).output_shape
    (None, 1024)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

from bit_keras.errors import ConfigError
from bit_keras.models.layers import GroupNorm, StandardizedConv2D
from bit_keras.models.spec import GN_GROUPS, ArchSpec, UnitSpec, get_arch

FEATURE_LAYERS = ("stem", "block1", "block2", "block3", "block4")
HEAD_NAME = "head"
PRE_LOGITS_NAME = "pre_logits"
RESCALE_NAME = "rescale_to_bit_range"

ConvLayer = Callable[..., keras.layers.Layer]  # (filters, kernel_size, *, strides, padding, use_bias, name)
NormLayer = Callable[..., keras.layers.Layer]  # (groups, *, name)


def input_scaling(input_range: Sequence[float]) -> tuple[float, float]:
    """(scale, offset) mapping ``input_range`` linearly onto BiT's [-1, 1].

    Example:
        >>> input_scaling((0, 1))
        (2.0, -1.0)
    """
    lo, hi = (float(v) for v in input_range)
    if not hi > lo:
        raise ConfigError(f"input_range must be (low, high) with high > low, got {tuple(input_range)}")
    scale = 2.0 / (hi - lo)
    return scale, -1.0 - lo * scale


def model_input_range(model: keras.Model) -> tuple[float, float]:
    """The input range a BiT model takes, read from its ``rescale_to_bit_range`` layer ((-1, 1) without one).

    Example:
        >>> model_input_range(resnet_v2("R14x0.25", input_range=(0, 255)))
        (0.0, 255.0)
    """
    try:
        layer = model.get_layer(RESCALE_NAME)
    except ValueError:
        return (-1.0, 1.0)
    scale, offset = float(layer.scale), float(layer.offset)
    lo = (-1.0 - offset) / scale
    return (round(lo, 6), round(lo + 2.0 / scale, 6))


class _Layers:
    """Makes the named layers of one network from the ``conv_layer`` / ``norm_layer`` it was given."""

    def __init__(self, conv_layer: ConvLayer, norm_layer: NormLayer, groups: int) -> None:
        self.conv_layer, self.norm_layer, self.groups = conv_layer, norm_layer, groups

    def conv(self, x: Any, filters: int, kernel: int, stride: int, name: str) -> Any:
        if kernel > 1:  # explicit symmetric zero padding + VALID: TF's SAME pads asymmetrically at stride 2
            x = keras.layers.ZeroPadding2D((kernel - 1) // 2, name=name.replace("standardized_conv2d", "pad"))(x)
        return self.conv_layer(filters, kernel, strides=stride, padding="valid", use_bias=False, name=name)(x)

    def norm_relu(self, x: Any, prefix: str, relu: str | None = None) -> Any:
        if isinstance(self.norm_layer, type) and issubclass(self.norm_layer, GroupNorm):
            # One layer: on TensorFlow's CPU the ReLU runs inside the GroupNorm kernel (bit_keras.models.native).
            return self.norm_layer(self.groups, activation="relu", name=f"{prefix}group_norm")(x)
        x = self.norm_layer(self.groups, name=f"{prefix}group_norm")(x)
        return keras.layers.ReLU(name=relu or f"{prefix}relu")(x)

    def unit(self, x: Any, u: UnitSpec) -> Any:
        p = self.norm_relu(x, f"{u.name}-a-")
        shortcut = self.conv(p, u.out_channels, 1, u.stride, f"{u.name}-a-proj-standardized_conv2d") \
            if u.has_projection else x
        y = self.conv(p, u.mid_channels, 1, 1, f"{u.name}-a-standardized_conv2d")
        y = self.conv(self.norm_relu(y, f"{u.name}-b-"), u.mid_channels, 3, u.stride, f"{u.name}-b-standardized_conv2d")
        y = self.conv(self.norm_relu(y, f"{u.name}-c-"), u.out_channels, 1, 1, f"{u.name}-c-standardized_conv2d")
        return keras.layers.Add(name=f"{u.name}-add")([shortcut, y])


def resnet_v2(
    arch: ArchSpec | str | Sequence[int],
    width: float = 1,
    *,
    num_classes: int | None = 1000,
    input_range: Sequence[float] = (0.0, 1.0),
    groups: int = GN_GROUPS,
    conv_layer: ConvLayer = StandardizedConv2D,
    norm_layer: NormLayer = GroupNorm,
    name: str = "resnet",
) -> keras.Model:
    """Build a BiT ResNet-v2 with random weights (the zoo's single architecture entry point).

    Args:
        arch: an :class:`~bit_keras.models.spec.ArchSpec`, a registered name (``"R50x1"``), or the four block
            depths, e.g. ``(3, 4, 6, 3)`` for R50, with ``width`` and ``groups``.
        width: width factor for depths; the root has ``64 * width`` filters, block ``b`` a bottleneck width of
            ``64 * width * 2**b`` and ``4x`` that at its output.
        num_classes: size of the zero-initialised Dense head; ``None`` makes the model output the
            pre-logits feature (``2048 * width`` wide).
        input_range: the range of the float RGB input; the model maps it linearly to [-1, 1] inside.
            ``(-1, 1)`` adds no rescaling layer.
        groups: GroupNorm groups for depths (32 in BiT; smaller for tiny test widths).
        conv_layer: makes each convolution: ``conv_layer(filters, kernel_size, strides=, padding="valid",
            use_bias=False, name=)``. ``keras.layers.Conv2D`` builds the same network without weight
            standardization (the folded serving form; the benchmark's diagnostics).
        norm_layer: makes each normalization: ``norm_layer(groups, name=)``, followed by a ``ReLU`` layer;
            :class:`GroupNorm` (or a subclass) is made with ``activation="relu"`` instead, one layer that fuses both.
        name: the model's name.

    Example:
        >>> plain = resnet_v2("R14x0.25", conv_layer=keras.layers.Conv2D)
        >>> sorted({type(layer).__name__ for layer in plain.layers} & {"Conv2D", "StandardizedConv2D"})
        ['Conv2D']
    """
    spec = get_arch(arch, width, groups)
    layers = _Layers(conv_layer, norm_layer, spec.groups)
    images = keras.Input((None, None, 3), name="images")
    x = images
    scale, offset = input_scaling(input_range)
    if (scale, offset) != (1.0, 0.0):
        x = keras.layers.Rescaling(scale, offset, name=RESCALE_NAME)(x)
    x = layers.conv(x, spec.root_channels, 7, 2, "root_block-standardized_conv2d")
    x = keras.layers.ZeroPadding2D(1, name="root_block-pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="root_block-pool")(x)
    x = keras.layers.Identity(name="stem")(x)
    for u in spec.units():
        x = layers.unit(x, u)
        if u.unit == spec.depths[u.block - 1]:
            x = keras.layers.Identity(name=f"block{u.block}")(x)
    x = layers.norm_relu(x, "", relu="pre_head_relu")  # "group_norm": the checkpoint's resnet/group_norm
    x = keras.layers.GlobalAveragePooling2D(name=PRE_LOGITS_NAME)(x)
    if num_classes is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive int or None, got {num_classes!r}")
        x = keras.layers.Dense(num_classes, kernel_initializer="zeros", name=HEAD_NAME)(x)
    return keras.Model(images, x, name=name)


def feature_extractor(model: keras.Model, outputs: Sequence[str] = (*FEATURE_LAYERS, PRE_LOGITS_NAME)) -> keras.Model:
    """A model sharing ``model``'s layers that returns a dict of multi-scale features.

    ``outputs`` picks from ``stem`` (stride 4), ``block1`` (4), ``block2`` (8), ``block3`` (16),
    ``block4`` (32) and ``pre_logits``. Note that in a pre-activation ResNet the block outputs are
    un-normalized residual streams (the final GroupNorm comes after ``block4``).

    Example:
        >>> import numpy as np
        >>> feats = feature_extractor(resnet_v2((1, 1, 1, 1), 0.5), ["block2", "block4"])
        >>> {k: tuple(v.shape) for k, v in feats(np.zeros((1, 64, 64, 3), "float32")).items()}
        {'block2': (1, 8, 8, 256), 'block4': (1, 2, 2, 1024)}
    """
    known = (*FEATURE_LAYERS, PRE_LOGITS_NAME)
    unknown = [o for o in outputs if o not in known]
    if unknown:
        raise ConfigError(f"unknown feature output(s) {unknown}; choose from {list(known)}")
    return keras.Model(model.input, {o: model.get_layer(o).output for o in outputs}, name=f"{model.name}_features")
