"""The vocabulary of ``bit-keras bench``: case, mode and variant names, and the FLOP count of a BiT ResNet-v2.

Example:
    >>> round(resnet_v2_gflops((3, 4, 6, 3), 1, 224), 1)
    8.2
    >>> baseline_available("R50x1"), baseline_available("R101x3")
    (True, False)
"""

from __future__ import annotations

from typing import Sequence

BIT_CASE = "bit_keras"
BASELINE_CASE = "baseline_resnet50v2"
SAVED_MODEL_CASE = "saved_model"
FOLDED_CASE = "saved_model_folded"
PIPELINE_CASE = "input_pipeline"
TIMM_CASE = "timm_resnetv2_50x1_bit"
DIAG_CASES = ("diag_plain_conv", "diag_no_norm", "diag_plain_conv_no_norm")
MODEL_CASES = (BIT_CASE, BASELINE_CASE, *DIAG_CASES)
ALL_CASES = (BIT_CASE, BASELINE_CASE, SAVED_MODEL_CASE, FOLDED_CASE, PIPELINE_CASE, TIMM_CASE, *DIAG_CASES)
MODES = ("inference", "train")
VARIANTS = ("eager", "function", "xla", "remat")  # remat: tf.function, units recomputed (training only)
TINY_ARCH = "bench-tiny"
FOLD_TOLERANCE = 1e-5


def arch_spec(arch: str):
    """The :class:`~bit_keras.models.resnet.ArchSpec` of a zoo architecture name or of the bench's tiny one."""
    from bit_keras.models.spec import ARCHS, ArchSpec

    if arch == TINY_ARCH:
        return ArchSpec((2, 2, 2, 2), 0.25, groups=8)
    return ARCHS[arch]


def baseline_available(arch: str) -> bool:
    """Whether a BatchNorm ``keras.applications`` baseline of the same shape exists for ``arch``.

    Example:
        >>> baseline_available("R50x1"), baseline_available("R101x3")
        (True, False)
    """
    return arch in ("R50x1", TINY_ARCH)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def resnet_v2_gflops(depths: Sequence[int], width: float, image_size: int, num_classes: int = 1000) -> float:
    """Forward GFLOP (2 x multiply-adds of convolutions and head) of one image through a BiT ResNet-v2.

    Example:
        >>> round(resnet_v2_gflops((3, 4, 6, 3), 1, 128), 2)
        2.67
    """
    root = int(64 * width)
    h = _conv_out(image_size, 7, 2, 3)
    macs = h * h * 49 * 3 * root
    h = _conv_out(h, 3, 2, 1)
    cin = root
    for b, units in enumerate(depths):
        mid = int(64 * width) * 2**b
        for u in range(units):
            stride = 2 if (u == 0 and b > 0) else 1
            ho = _conv_out(h, 3, stride, 1)
            if stride > 1 or cin != 4 * mid:
                hp = _conv_out(h, 1, stride, 0)
                macs += hp * hp * cin * 4 * mid
            macs += h * h * cin * mid + ho * ho * 9 * mid * mid + ho * ho * mid * 4 * mid
            h, cin = ho, 4 * mid
    macs += cin * num_classes
    return 2 * macs / 1e9
