"""What a row of ``bit-keras bench`` is: case, mode and variant names, :class:`CaseSpec`, and the models.

The networks come from the library: ``bit_keras`` and the ``diag_*`` cases are built by its one builder,
:func:`bit_keras.models.resnet.resnet_v2`, the diagnostics with plain ``keras.layers.Conv2D`` and/or an
identity in place of GroupNorm passed in as its ``conv_layer`` / ``norm_layer``. Architectures are the zoo's
(:data:`bit_keras.models.spec.ARCHS`; ``--tiny`` uses its :data:`~bit_keras.models.spec.TINY_ARCH`) and the
FLOPs are :meth:`~bit_keras.models.spec.ArchSpec.gflops`. The one network written here is the BatchNorm
baseline of the tiny architecture (R50x1's is ``keras.applications.ResNet50V2``).

Example:
    >>> CaseSpec("bit_keras", "train", "xla", image_size=128, batch_size=16).label()
    'bit_keras/train/xla/float32/R50x1/128px/b16'
    >>> round(case_gflops(CaseSpec("bit_keras", "inference")), 1), round(case_gflops(CaseSpec("bit_keras", "train")), 1)
    (8.2, 24.5)
    >>> baseline_available("R50x1"), baseline_available(TINY_ARCH), baseline_available("R101x3")
    (True, True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bit_keras.models.spec import ARCHS, TINY_ARCH

if TYPE_CHECKING:
    import keras

BIT_CASE = "bit_keras"
BASELINE_CASE = "baseline_resnet50v2"
SAVED_MODEL_CASE = "saved_model"
FOLDED_CASE = "saved_model_folded"
KERAS_FOLDED_CASE = "keras_folded"  # the Keras serving form: fold_standardization(model), plain Conv2D layers
PIPELINE_CASE = "input_pipeline"
TIMM_CASE = "timm_resnetv2_50x1_bit"
DIAG_CASES = ("diag_plain_conv", "diag_no_norm", "diag_plain_conv_no_norm")
MODEL_CASES = (BIT_CASE, BASELINE_CASE, *DIAG_CASES)
ALL_CASES = (BIT_CASE, BASELINE_CASE, SAVED_MODEL_CASE, FOLDED_CASE, KERAS_FOLDED_CASE, PIPELINE_CASE, TIMM_CASE,
             *DIAG_CASES)
MODES = ("inference", "train")
VARIANTS = ("eager", "function", "xla", "remat")  # remat: TrainStep(remat=True), training only
PEER_ARCH = "R50x1"  # the architecture of timm's resnetv2_50x1_bit: the targets are read on it
TIMM_MODELS = {"R50x1": "resnetv2_50x1_bit", "R101x1": "resnetv2_101x1_bit", "R101x3": "resnetv2_101x3_bit",
               "R152x2": "resnetv2_152x2_bit", "R152x4": "resnetv2_152x4_bit"}  # timm's BiT of each zoo arch
NUM_CLASSES = 1000


@dataclass(frozen=True)
class CaseSpec:
    """One benchmark row: what to run and how long to time it.

    Example:
        >>> CaseSpec("diag_no_norm", "inference", arch=TINY_ARCH, image_size=32).label()
        'diag_no_norm/inference/function/float32/R14x0.25/32px/b8'
    """

    case: str
    mode: str
    variant: str = "function"
    precision: str = "float32"
    arch: str = PEER_ARCH
    image_size: int = 224
    batch_size: int = 8
    warmup: int = 2
    repeats: int = 3
    min_seconds: float = 2.0
    min_steps: int = 2
    device: str = "cpu"
    work_dir: str = ""
    profile: bool = False
    batch_split: int = 1  # TrainStep(batch_split=): micro-batches per step (training rows)

    def label(self) -> str:
        """A short human-readable name of the row."""
        return "/".join([self.case, self.mode, self.variant, self.precision, self.arch,
                         f"{self.image_size}px", f"b{self.batch_size}"]
                        + ([f"split{self.batch_split}"] if self.batch_split > 1 else []))

    def row_fields(self) -> dict[str, Any]:
        """The fields of the row's CSV line that name it (the rest are measured)."""
        return {"case": self.case, "mode": self.mode, "variant": self.variant, "precision": self.precision,
                "arch": self.arch, "image_size": self.image_size, "batch_size": self.batch_size,
                "batch_split": self.batch_split}


def baseline_available(arch: str) -> bool:
    """Whether a BatchNorm baseline of the same shape exists for ``arch`` (R50x1 and the tiny one)."""
    return arch in (PEER_ARCH, TINY_ARCH)


def case_gflops(spec: CaseSpec) -> float | None:
    """GFLOP per image of the work a row does (x3 for a training step); None for the input pipeline."""
    if spec.case == PIPELINE_CASE:
        return None
    arch = ARCHS[spec.arch if spec.arch in ARCHS else PEER_ARCH]
    return arch.gflops(spec.image_size) * (3 if spec.mode == "train" else 1)


# --------------------------------------------------------------------------- models


def identity_norm(groups: int, *, name: str) -> keras.layers.Layer:
    """A ``norm_layer`` for :func:`~bit_keras.models.resnet.resnet_v2` that normalizes nothing.

    Example:
        >>> type(identity_norm(32, name="group_norm")).__name__
        'Identity'
    """
    import keras

    del groups
    return keras.layers.Identity(name=name)


def builder_layers(case: str) -> dict[str, Any]:
    """The ``conv_layer`` / ``norm_layer`` a case passes to ``resnet_v2`` (none: the library's defaults).

    Example:
        >>> sorted(builder_layers("diag_plain_conv_no_norm")), builder_layers("bit_keras")
        (['conv_layer', 'norm_layer'], {})
    """
    import keras

    layers: dict[str, Any] = {}
    if case in ("diag_plain_conv", "diag_plain_conv_no_norm"):
        layers["conv_layer"] = keras.layers.Conv2D
    if case in ("diag_no_norm", "diag_plain_conv_no_norm"):
        layers["norm_layer"] = identity_norm
    return layers


def build_model(spec: CaseSpec) -> keras.Model:
    """The Keras model of a model case (1000 classes, under the current dtype policy).

    Example:
        >>> model = build_model(CaseSpec("diag_plain_conv", "inference", arch=TINY_ARCH))
        >>> sorted({type(layer).__name__ for layer in model.layers} & {"Conv2D", "GroupNorm", "StandardizedConv2D"})
        ['Conv2D', 'GroupNorm']
    """
    if spec.case not in MODEL_CASES:
        raise ValueError(f"{spec.case!r} is not a model case; choose from {MODEL_CASES}")
    if spec.case == BASELINE_CASE:
        return build_baseline(spec.arch, spec.image_size)
    from bit_keras.models.resnet import resnet_v2

    name = spec.case if spec.case != BIT_CASE else "bit_" + spec.arch.lower().replace(".", "_")
    return resnet_v2(spec.arch, num_classes=NUM_CLASSES, name=name, **builder_layers(spec.case))


def build_baseline(arch: str, image_size: int) -> keras.Model:
    """The BatchNorm ResNet-v2 of the same shape as ``arch``, logits out."""
    import keras

    if arch == PEER_ARCH:
        return keras.applications.ResNet50V2(weights=None, input_shape=(image_size, image_size, 3),
                                             classes=NUM_CLASSES, classifier_activation=None)
    if arch == TINY_ARCH:
        return tiny_baseline(image_size)
    raise ValueError(f"no BatchNorm baseline for {arch!r}; there are for {PEER_ARCH} and {TINY_ARCH}")


def tiny_baseline(image_size: int, num_classes: int = NUM_CLASSES) -> keras.Model:
    """The BatchNorm baseline of :data:`TINY_ARCH`: ``keras.applications``' ResNet-v2 design (biased 7x7 stem,
    max-pool, pre-activation bottlenecks with BatchNorm, a 1x1 convolution shortcut, a final BatchNorm-ReLU, an
    average pool and a Dense head) with the tiny architecture's units, one per stage, which the applications'
    stacking helper cannot make (it needs two units per stage).

    Example:
        >>> model = tiny_baseline(32)
        >>> model.output_shape, sum(type(layer).__name__ == "BatchNormalization" for layer in model.layers)
        ((None, 1000), 13)
    """
    import keras
    from keras import layers

    def bn_relu(x: Any, name: str) -> Any:
        x = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    spec = ARCHS[TINY_ARCH]
    images = keras.Input((image_size, image_size, 3))
    x = layers.ZeroPadding2D(3, name="conv1_pad")(images)
    x = layers.Conv2D(spec.root_channels, 7, strides=2, name="conv1_conv")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for unit in spec.units():
        name = f"conv{unit.block + 1}_block{unit.unit}"
        preact = bn_relu(x, f"{name}_preact")
        shortcut = layers.Conv2D(unit.out_channels, 1, strides=unit.stride, name=f"{name}_0_conv")(preact)
        y = layers.Conv2D(unit.mid_channels, 1, use_bias=False, name=f"{name}_1_conv")(preact)
        y = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(bn_relu(y, f"{name}_1"))
        y = layers.Conv2D(unit.mid_channels, 3, strides=unit.stride, use_bias=False, name=f"{name}_2_conv")(y)
        y = layers.Conv2D(unit.out_channels, 1, name=f"{name}_3_conv")(bn_relu(y, f"{name}_2"))
        x = layers.Add(name=f"{name}_out")([shortcut, y])
    x = layers.GlobalAveragePooling2D(name="avg_pool")(bn_relu(x, "post"))
    return keras.Model(images, layers.Dense(num_classes, name="predictions")(x), name="tiny_resnetv2")
