"""bit-keras: Big Transfer (BiT) for Keras 3.

The BiT-S/M/L ResNet-v2 zoo with numerical parity to the published checkpoints, multi-scale features,
and the official ``.npz`` weight layout.

Example:
    >>> import bit_keras
    >>> bit_keras.list_models("BiT-M-R50x1*")
    ['BiT-M-R50x1', 'BiT-M-R50x1-CIFAR10', 'BiT-M-R50x1-ILSVRC2012', 'BiT-M-R50x1-distilled-160', 'BiT-M-R50x1-distilled-224']
    >>> model = bit_keras.create_model("BiT-M-R50x1", num_classes=10)   # weights="pretrained" downloads
"""

from bit_keras.labels import get_labels
from bit_keras.layers import GroupNorm, StandardizedConv2D
from bit_keras.models import create_model
from bit_keras.resnet import ARCHS, ArchSpec, feature_extractor, register_arch, resnet_v2
from bit_keras.weights import WeightFileError, infer_arch, load_npz, save_npz
from bit_keras.zoo import (
    ModelInfo,
    UnknownModelError,
    WeightsUnavailableError,
    get_model_info,
    list_models,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "ArchSpec",
    "GroupNorm",
    "ModelInfo",
    "StandardizedConv2D",
    "UnknownModelError",
    "WeightFileError",
    "WeightsUnavailableError",
    "create_model",
    "feature_extractor",
    "get_labels",
    "get_model_info",
    "infer_arch",
    "list_models",
    "load_npz",
    "register_arch",
    "register_model",
    "resnet_v2",
    "save_npz",
]
