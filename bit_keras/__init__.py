"""bit-keras: Big Transfer (BiT) for Keras 3.

The BiT-S/M/L ResNet-v2 zoo with numerical parity to the published checkpoints (``create_model``),
fine-tuning with the BiT-HyperRule (``transfer``), upstream pre-training under ``tf.distribute``
(``pretrain``), and hub-style SavedModels for Keras 3 (``load_layer``; export with ``hub_export``).

Example:
    >>> import bit_keras
    >>> bit_keras.list_models("BiT-M-R50x1*")
    ['BiT-M-R50x1', 'BiT-M-R50x1-CIFAR10', 'BiT-M-R50x1-ILSVRC2012', 'BiT-M-R50x1-distilled-160', 'BiT-M-R50x1-distilled-224']
    >>> model = bit_keras.create_model("BiT-M-R50x1", num_classes=10)   # weights="pretrained" downloads
"""

from bit_keras.errors import (
    BitKerasError,
    ConfigError,
    DataError,
    DownloadError,
    ExportError,
    LabelFileError,
    MissingDependencyError,
    MissingFileError,
    Preempted,
    TrainingDivergedError,
    UnknownModelError,
    WeightFileError,
    WeightsUnavailableError,
)
from bit_keras.hub import is_handle, load_layer
from bit_keras.labels import get_labels
from bit_keras.layers import GroupNorm, StandardizedConv2D
from bit_keras.models import create_model
from bit_keras.resnet import ARCHS, ArchSpec, feature_extractor, register_arch, resnet_v2
from bit_keras.pretrain import PretrainResult, pretrain
from bit_keras.transfer import TransferResult, evaluate, evaluate_run, transfer
from bit_keras.weights import infer_arch, load_npz, save_npz
from bit_keras.zoo import (
    ModelInfo,
    get_model_info,
    list_models,
    register_model,
)

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "ArchSpec",
    "BitKerasError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "ExportError",
    "LabelFileError",
    "MissingDependencyError",
    "MissingFileError",
    "GroupNorm",
    "ModelInfo",
    "Preempted",
    "PretrainResult",
    "StandardizedConv2D",
    "TrainingDivergedError",
    "TransferResult",
    "UnknownModelError",
    "WeightFileError",
    "WeightsUnavailableError",
    "create_model",
    "evaluate",
    "evaluate_run",
    "feature_extractor",
    "get_labels",
    "get_model_info",
    "infer_arch",
    "is_handle",
    "list_models",
    "load_layer",
    "load_npz",
    "pretrain",
    "register_arch",
    "register_model",
    "resnet_v2",
    "save_npz",
    "transfer",
]
