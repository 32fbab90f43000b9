"""The BiT ResNet-v2 architecture as data: one description, :class:`ArchSpec`, and everything derived from it.

A BiT network is fixed by its four block depths, a width factor and the GroupNorm group count. From that one
description come the Keras builder's layers (:func:`bit_keras.models.resnet.resnet_v2` walks
:meth:`ArchSpec.units`), the official ``.npz`` weight layout (:meth:`ArchSpec.weight_shapes`), the parameter
count, the FLOPs, and the architecture a weight file holds (:func:`infer_spec`). Plain Python: no TensorFlow.

Example:
    >>> spec = ARCHS["R50x1"]
    >>> spec.feature_dim, spec.param_count(num_classes=1000)
    (2048, 25549352)
    >>> round(spec.gflops(224), 1)
    8.2
    >>> infer_spec(spec.weight_shapes(num_classes=None)) == spec
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from math import prod

from bit_keras.errors import ConfigError, WeightFileError

GN_GROUPS = 32
PREFIX = "resnet/"
ROOT_KERNEL = PREFIX + "root_block/standardized_conv2d/kernel"
HEAD_KERNEL = PREFIX + "head/conv2d/kernel"
HEAD_BIAS = PREFIX + "head/conv2d/bias"


@dataclass(frozen=True)
class UnitSpec:
    """One pre-activation bottleneck unit: where it sits, its channels and stride.

    ``name`` is the checkpoint's ``block{b}/unit{NN}`` with ``/`` as ``.`` (the Keras layer-name prefix).
    """

    block: int  # 1-based
    unit: int  # 1-based
    in_channels: int
    mid_channels: int
    out_channels: int
    stride: int

    @property
    def name(self) -> str:
        return f"block{self.block}-unit{self.unit:02d}"

    @property
    def has_projection(self) -> bool:
        return self.stride > 1 or self.in_channels != self.out_channels


@dataclass(frozen=True)
class ArchSpec:
    """Depths (units per block), width factor and GroupNorm groups of a BiT ResNet-v2.

    Example:
        >>> ArchSpec((1, 1, 1, 1), 0.25, groups=8).feature_dim
        512
    """

    depths: tuple[int, int, int, int]
    width: float
    groups: int = GN_GROUPS

    def __post_init__(self) -> None:
        depths = tuple(int(d) for d in self.depths)
        if len(depths) != 4 or min(depths) < 1:
            raise ConfigError(f"depths must be four positive unit counts, got {tuple(self.depths)}")
        object.__setattr__(self, "depths", depths)
        if self.width <= 0 or int(64 * self.width) < 1:
            raise ConfigError(f"width {self.width} gives no root channels: use a width of at least 1/64")
        bad = [c for c in self.channel_counts() if c % self.groups]
        if bad:
            raise ConfigError(
                f"GroupNorm({self.groups}) cannot split {bad[0]} channels of depths {self.depths}, width "
                f"{self.width}: pass groups=<a divisor of {self.root_channels}> (e.g. 8 for width 0.25)")

    @property
    def root_channels(self) -> int:
        return int(64 * self.width)

    def mid_channels(self, block: int) -> int:
        """Bottleneck width of block ``block`` (0-based)."""
        return self.root_channels * 2**block

    @property
    def feature_dim(self) -> int:
        """Width of the pre-logits feature (the last block's output)."""
        return 4 * self.mid_channels(3)

    def channel_counts(self) -> list[int]:
        """Every channel count a GroupNorm sees (unit inputs, bottleneck widths, the final norm)."""
        counts = {self.root_channels}
        for u in self.units():
            counts |= {u.in_channels, u.mid_channels}
        return sorted(counts | {self.feature_dim})

    def units(self) -> Iterator[UnitSpec]:
        """The residual units in order: the one walk over the architecture that everything else uses."""
        cin = self.root_channels
        for b, count in enumerate(self.depths):
            mid = self.mid_channels(b)
            for u in range(count):
                yield UnitSpec(b + 1, u + 1, cin, mid, 4 * mid, 2 if (u == 0 and b > 0) else 1)
                cin = 4 * mid

    def weight_shapes(self, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
        """The official ``.npz`` keys and shapes of this network (the head as a 1x1 conv, when ``num_classes``).

        Example:
            >>> shapes = ArchSpec((1, 1, 1, 1), 0.25, groups=8).weight_shapes(num_classes=10)
            >>> shapes["resnet/root_block/standardized_conv2d/kernel"], shapes["resnet/head/conv2d/kernel"]
            ((7, 7, 3, 16), (1, 1, 512, 10))
        """
        shapes: dict[str, tuple[int, ...]] = {ROOT_KERNEL: (7, 7, 3, self.root_channels)}
        for u in self.units():
            p = f"{PREFIX}block{u.block}/unit{u.unit:02d}/"
            norms = (("a", u.in_channels), ("b", u.mid_channels), ("c", u.mid_channels))
            convs = (("a", 1, u.in_channels, u.mid_channels), ("b", 3, u.mid_channels, u.mid_channels),
                     ("c", 1, u.mid_channels, u.out_channels))
            for (part, channels), (_, k, cin, cout) in zip(norms, convs):
                shapes[f"{p}{part}/group_norm/gamma"] = (channels,)
                shapes[f"{p}{part}/group_norm/beta"] = (channels,)
                if part == "a" and u.has_projection:
                    shapes[f"{p}a/proj/standardized_conv2d/kernel"] = (1, 1, u.in_channels, u.out_channels)
                shapes[f"{p}{part}/standardized_conv2d/kernel"] = (k, k, cin, cout)
        shapes[PREFIX + "group_norm/gamma"] = (self.feature_dim,)
        shapes[PREFIX + "group_norm/beta"] = (self.feature_dim,)
        if num_classes is not None:
            shapes[HEAD_KERNEL] = (1, 1, self.feature_dim, num_classes)
            shapes[HEAD_BIAS] = (num_classes,)
        return shapes

    def param_count(self, num_classes: int | None = None) -> int:
        """Number of weights, with a ``num_classes`` head (or without, for None)."""
        return sum(prod(s) for s in self.weight_shapes(num_classes).values())

    def gflops(self, image_size: int, num_classes: int | None = 1000) -> float:
        """Forward GFLOP (2 x multiply-adds of the convolutions and the head) for one square image.

        Example:
            >>> round(ARCHS["R50x1"].gflops(128), 2)
            2.67
        """
        h = _conv_out(image_size, 7, 2, 3)
        macs = h * h * 49 * 3 * self.root_channels
        h = _conv_out(h, 3, 2, 1)  # the max-pool
        for u in self.units():
            ho = _conv_out(h, 3, u.stride, 1)
            if u.has_projection:
                macs += ho * ho * u.in_channels * u.out_channels
            macs += h * h * u.in_channels * u.mid_channels + ho * ho * 9 * u.mid_channels ** 2
            macs += ho * ho * u.mid_channels * u.out_channels
            h = ho
        macs += self.feature_dim * (num_classes or 0)
        return 2 * macs / 1e9

    def describe(self) -> str:
        """The registered name of this spec, else its depths and width.

        Example:
            >>> ARCHS["R101x3"].describe(), ArchSpec((1, 2, 1, 1), 0.5).describe()
            ('R101x3', 'depths (1, 2, 1, 1), width 0.5')
        """
        for name, known in ARCHS.items():
            if known == self:
                return name
        width = int(self.width) if float(self.width).is_integer() else self.width
        return f"depths {self.depths}, width {width}"


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


ARCHS: dict[str, ArchSpec] = {
    "R50x1": ArchSpec((3, 4, 6, 3), 1),
    "R50x3": ArchSpec((3, 4, 6, 3), 3),
    "R101x1": ArchSpec((3, 4, 23, 3), 1),
    "R101x3": ArchSpec((3, 4, 23, 3), 3),
    "R152x2": ArchSpec((3, 8, 36, 3), 2),
    "R152x4": ArchSpec((3, 8, 36, 3), 4),
    # Not a published architecture: 0.5M parameters, same design, GroupNorm(8); for demos, tutorials and tests.
    "R14x0.25": ArchSpec((1, 1, 1, 1), 0.25, groups=8),
}
TINY_ARCH = "R14x0.25"


def register_arch(name: str, spec: ArchSpec) -> ArchSpec:
    """Add a custom architecture under ``name`` (re-registering the same spec is a no-op).

    Example:
        >>> register_arch("R14x0.5", ArchSpec((1, 1, 1, 1), 0.5))
        ArchSpec(depths=(1, 1, 1, 1), width=0.5, groups=32)
    """
    known = ARCHS.get(name)
    if known is not None and known != spec:
        raise ConfigError(f"architecture {name!r} is already registered as {known}; choose another name")
    ARCHS[name] = spec
    return spec


def get_arch(arch: str | ArchSpec | Sequence[int], width: float = 1, groups: int = GN_GROUPS) -> ArchSpec:
    """An :class:`ArchSpec` from a registered name, a spec, or depths plus ``width`` and ``groups``.

    Example:
        >>> get_arch("R50x1") == get_arch((3, 4, 6, 3), 1)
        True
    """
    if isinstance(arch, ArchSpec):
        return arch
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ConfigError(f"unknown architecture {arch!r}; registered: {', '.join(ARCHS)} "
                              "(add one with bit_keras.register_arch)")
        return ARCHS[arch]
    return ArchSpec(tuple(arch), width, groups)  # type: ignore[arg-type]


def infer_spec(shapes: Mapping[str, Sequence[int]], *, strict: bool = True) -> ArchSpec:
    """The architecture whose official weight layout is ``shapes`` (key -> shape; the head is ignored).

    Depths come from the unit keys, the width from the root kernel; the group count (which no shape shows) is
    that of the registered architecture with those depths and width, else 32 where it divides every channel
    count, else the largest power of two that does. With ``strict`` the result's
    :meth:`ArchSpec.weight_shapes` must equal the backbone keys and shapes given, or :class:`WeightFileError`
    lists the differences; ``strict=False`` only reads depths and width (to say what a damaged file holds).

    Example:
        >>> infer_spec(ARCHS["R14x0.25"].weight_shapes(num_classes=3))
        ArchSpec(depths=(1, 1, 1, 1), width=0.25, groups=8)
    """
    root = shapes.get(ROOT_KERNEL)
    if root is None or len(root) != 4 or tuple(root[:3]) != (7, 7, 3):
        raise WeightFileError(f"not a BiT weight file: no (7, 7, 3, C) {ROOT_KERNEL}; the keys start with "
                              f"{sorted(shapes)[:3]}")
    depths = []
    for b in range(1, 5):
        units = {k.split("/")[2] for k in shapes if k.startswith(f"{PREFIX}block{b}/unit")}
        depths.append(len(units))
    if min(depths) < 1:
        raise WeightFileError(f"not a complete BiT weight file: units per block {depths}")
    width = int(root[3]) / 64
    spec = next((s for s in ARCHS.values() if s.depths == tuple(depths) and s.width == width), None)
    if spec is None:
        groups = GN_GROUPS
        while groups > 1 and int(root[3]) % groups:
            groups //= 2
        spec = ArchSpec(tuple(depths), width, groups)  # type: ignore[arg-type]
    if not strict:
        return spec
    expected = spec.weight_shapes(num_classes=None)
    given = {k: tuple(int(d) for d in v) for k, v in shapes.items() if k not in (HEAD_KERNEL, HEAD_BIAS)}
    if given != expected:
        missing = sorted(set(expected) - set(given))[:3]
        extra = sorted(set(given) - set(expected))[:3]
        shape = [k for k in expected if k in given and given[k] != expected[k]][:3]
        raise WeightFileError(f"the weights do not form a BiT ResNet-v2 ({spec.describe()}): missing {missing}, "
                              f"unexpected {extra}, other shapes {shape}")
    return spec
