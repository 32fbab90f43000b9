"""The BiT ResNet-v2 architecture: one builder for every depth and width.

Pre-activation bottleneck ResNet-v2 with weight-standardized convolutions and GroupNorm, exactly as in
google-research/big_transfer. Layer names mirror the official ``.npz`` keys with ``/`` replaced by ``.``
(``block1.unit01.a.group_norm`` holds ``resnet/block1/unit01/a/group_norm/{gamma,beta}``), so the weight
loader maps keys to layers by name.

Named feature layers (identity layers, free at run time) mark the multi-scale outputs: ``stem``
(stride 4), ``block1`` (4), ``block2`` (8), ``block3`` (16), ``block4`` (32), and ``pre_logits``.

Example:
    >>> from bit_keras.resnet import resnet_v2
    >>> model = resnet_v2((1, 1, 1, 1), width=0.5, num_classes=10)
    >>> model.output_shape
    (None, 10)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import keras

from bit_keras.errors import ConfigError
from bit_keras.layers import GN_GROUPS, GroupNorm, StandardizedConv2D

FEATURE_LAYERS = ("stem", "block1", "block2", "block3", "block4")
HEAD_NAME = "head"
PRE_LOGITS_NAME = "pre_logits"


@dataclass(frozen=True)
class ArchSpec:
    """Depths (units per block), width factor and GroupNorm groups of a BiT ResNet-v2.

    Example:
        >>> ARCHS["R50x1"].feature_dim
        2048
    """

    depths: tuple[int, int, int, int]
    width: float
    groups: int = GN_GROUPS

    @property
    def root_channels(self) -> int:
        return int(64 * self.width)

    def mid_channels(self, block: int) -> int:
        """Bottleneck width of block ``block`` (0-based)."""
        return int(64 * self.width) * 2**block

    @property
    def feature_dim(self) -> int:
        return 4 * self.mid_channels(3)


ARCHS: dict[str, ArchSpec] = {
    "R50x1": ArchSpec((3, 4, 6, 3), 1),
    "R50x3": ArchSpec((3, 4, 6, 3), 3),
    "R101x1": ArchSpec((3, 4, 23, 3), 1),
    "R101x3": ArchSpec((3, 4, 23, 3), 3),
    "R152x2": ArchSpec((3, 8, 36, 3), 2),
    "R152x4": ArchSpec((3, 8, 36, 3), 4),
}


def register_arch(name: str, spec: ArchSpec) -> ArchSpec:
    """Add a custom architecture under ``name`` (re-registering the same spec is a no-op).

    Example:
        >>> register_arch("R14x0.5", ArchSpec((1, 1, 1, 1), 0.5))
        ArchSpec(depths=(1, 1, 1, 1), width=0.5, groups=32)
    """
    known = ARCHS.get(name)
    if known is not None and known != spec:
        raise ConfigError(f"architecture {name!r} is already registered as {known}")
    ARCHS[name] = spec
    return spec


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


def _conv(filters: int, kernel: int, stride: int, name: str) -> StandardizedConv2D:
    return StandardizedConv2D(filters, kernel, strides=stride, padding="valid", name=name)


def _pad(x: keras.KerasTensor, amount: int, name: str) -> keras.KerasTensor:
    # Explicit symmetric zero padding + VALID: TF's SAME pads asymmetrically at stride 2.
    return keras.layers.ZeroPadding2D(amount, name=name)(x)


def _unit(x: keras.KerasTensor, mid: int, stride: int, groups: int, prefix: str) -> keras.KerasTensor:
    out_channels = 4 * mid
    p = GroupNorm(groups, name=f"{prefix}.a.group_norm")(x)
    p = keras.layers.ReLU(name=f"{prefix}.a.relu")(p)
    if stride > 1 or x.shape[-1] != out_channels:
        shortcut = _conv(out_channels, 1, stride, f"{prefix}.a.proj.standardized_conv2d")(p)
    else:
        shortcut = x
    y = _conv(mid, 1, 1, f"{prefix}.a.standardized_conv2d")(p)
    y = GroupNorm(groups, name=f"{prefix}.b.group_norm")(y)
    y = keras.layers.ReLU(name=f"{prefix}.b.relu")(y)
    y = _pad(y, 1, f"{prefix}.b.pad")
    y = _conv(mid, 3, stride, f"{prefix}.b.standardized_conv2d")(y)
    y = GroupNorm(groups, name=f"{prefix}.c.group_norm")(y)
    y = keras.layers.ReLU(name=f"{prefix}.c.relu")(y)
    y = _conv(out_channels, 1, 1, f"{prefix}.c.standardized_conv2d")(y)
    return keras.layers.Add(name=f"{prefix}.add")([shortcut, y])


def resnet_v2(
    depths: Sequence[int],
    width: float = 1,
    *,
    num_classes: int | None = 1000,
    input_range: Sequence[float] = (0.0, 1.0),
    groups: int = GN_GROUPS,
    name: str = "resnet",
) -> keras.Model:
    """Build a BiT ResNet-v2 with random weights (the zoo's single architecture entry point).

    Args:
        depths: units in each of the four blocks, e.g. ``(3, 4, 6, 3)`` for R50.
        width: width factor; the root has ``64 * width`` filters, block ``b`` a bottleneck width of
            ``64 * width * 2**b`` and ``4x`` that at its output.
        num_classes: size of the zero-initialised Dense head; ``None`` makes the model output the
            pre-logits feature (``2048 * width`` wide).
        input_range: the range of the float RGB input; the model maps it linearly to [-1, 1] inside.
            ``(-1, 1)`` adds no rescaling layer.
        groups: GroupNorm groups (32 in BiT; smaller for tiny test widths).
        name: the model's name.

    Example:
        >>> model = resnet_v2((1, 1, 1, 1), width=0.5, num_classes=None)
        >>> model.output_shape
        (None, 1024)
    """
    if len(depths) != 4 or min(depths) < 1:
        raise ConfigError(f"depths must be four positive unit counts, got {tuple(depths)}")
    spec = ArchSpec(tuple(int(d) for d in depths), width)  # type: ignore[arg-type]
    if spec.root_channels < 1:
        raise ConfigError(f"width {width} gives no root channels")

    images = keras.Input((None, None, 3), name="images")
    x = images
    scale, offset = input_scaling(input_range)
    if (scale, offset) != (1.0, 0.0):
        x = keras.layers.Rescaling(scale, offset, name="rescale_to_bit_range")(x)
    x = _pad(x, 3, "root_block.pad")
    x = _conv(spec.root_channels, 7, 2, "root_block.standardized_conv2d")(x)
    x = _pad(x, 1, "root_block.pool_pad")
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="root_block.pool")(x)
    x = keras.layers.Identity(name="stem")(x)
    for b, units in enumerate(spec.depths):
        for u in range(units):
            stride = 2 if (u == 0 and b > 0) else 1
            x = _unit(x, spec.mid_channels(b), stride, groups, f"block{b + 1}.unit{u + 1:02d}")
        x = keras.layers.Identity(name=f"block{b + 1}")(x)
    x = GroupNorm(groups, name="group_norm")(x)
    x = keras.layers.ReLU(name="pre_head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name=PRE_LOGITS_NAME)(x)
    if num_classes is not None:
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
