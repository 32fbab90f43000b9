"""bit-keras: Big Transfer (BiT) for Keras 3.

The BiT-S/M/L ResNet-v2 zoo with numerical parity to the published checkpoints (``create_model``),
fine-tuning with the BiT-HyperRule (``transfer``), upstream pre-training under ``tf.distribute``
(``pretrain``), and hub-style SavedModels for Keras 3 (``load_layer``; export with ``hub_export``).

The public names below load on first use (PEP 562), so ``import bit_keras`` and the model table need no
TensorFlow; the package map is in the README's "Architecture" section.

Example:
    >>> import bit_keras
    >>> bit_keras.list_models("BiT-M-R50x1*")
    ['BiT-M-R50x1', 'BiT-M-R50x1-CIFAR10', 'BiT-M-R50x1-ILSVRC2012']
    >>> model = bit_keras.create_model("BiT-M-R50x1", num_classes=10)   # weights="pretrained" downloads
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from bit_keras.errors import (
    BackendError,
    BitKerasError,
    ConfigError,
    DataError,
    DownloadError,
    ExportError,
    HandleNotFoundError,
    InvalidHandleError,
    LabelFileError,
    MissingDependencyError,
    MissingFileError,
    NativeOpsError,
    Preempted,
    RegistryError,
    TfdsError,
    TrainingDivergedError,
    UnknownModelError,
    VersionExistsError,
    WeightFileError,
    WeightsUnavailableError,
)

__version__ = "0.2.0"
_ERRORS = [
    "BackendError", "BitKerasError", "ConfigError", "DataError", "DownloadError", "ExportError", "HandleNotFoundError",
    "InvalidHandleError", "LabelFileError", "MissingDependencyError", "MissingFileError", "NativeOpsError", "Preempted",
    "RegistryError", "TfdsError", "TrainingDivergedError", "UnknownModelError", "VersionExistsError",
    "WeightFileError", "WeightsUnavailableError",
]

# Public name -> the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    # the architecture and the zoo (no TensorFlow)
    "ARCHS": "bit_keras.models.spec",
    "ArchSpec": "bit_keras.models.spec",
    "infer_spec": "bit_keras.models.spec",
    "register_arch": "bit_keras.models.spec",
    "ModelInfo": "bit_keras.models.presets",
    "get_model_info": "bit_keras.models.presets",
    "list_models": "bit_keras.models.presets",
    "register_model": "bit_keras.models.presets",
    "get_labels": "bit_keras.models.labels",
    "inspect_npz": "bit_keras.models.npz",
    "backend": "bit_keras.backend",
    # Keras models
    "GroupNorm": "bit_keras.models.layers",
    "StandardizedConv2D": "bit_keras.models.layers",
    "resnet_v2": "bit_keras.models.resnet",
    "feature_extractor": "bit_keras.models.resnet",
    "fold_standardization": "bit_keras.models.fold",
    "native_ops": "bit_keras.models.native",
    "create_model": "bit_keras.models.create",
    "load_npz": "bit_keras.models.weights",
    "save_npz": "bit_keras.models.weights",
    # recipes
    "transfer": "bit_keras.recipes.transfer",
    "TransferResult": "bit_keras.recipes.transfer",
    "evaluate": "bit_keras.recipes.transfer",
    "evaluate_run": "bit_keras.recipes.transfer",
    "pretrain": "bit_keras.recipes.pretrain",
    "PretrainResult": "bit_keras.recipes.pretrain",
    # evaluations of frozen features
    "fewshot_probe": "bit_keras.evals.fewshot",
    "FewShotResult": "bit_keras.evals.fewshot",
    "objectnet": "bit_keras.evals.objectnet",
    "ObjectNetResult": "bit_keras.evals.objectnet",
    "vtab": "bit_keras.recipes.vtab",
    "VtabResult": "bit_keras.recipes.vtab",
    # hub-style SavedModels in Keras 3
    "load_layer": "hub_export.load",
    "is_handle": "hub_export.load",
}

__all__ = sorted([*_ERRORS, *_LAZY])


def _register_layers_with_keras() -> None:
    """Make ``keras.saving.load_model`` find bit-keras's layers in any process that imported bit_keras.

    Keras looks custom layers up in a registry that importing :mod:`bit_keras.models.layers` fills; that module
    needs Keras (and so TensorFlow), which ``import bit_keras`` must not load. So the layers are registered
    when Keras itself is imported: at once if it already is, else by a one-shot import hook that runs right
    after ``import keras`` and then removes itself.
    """
    if "keras" in sys.modules:
        importlib.import_module("bit_keras.models.layers")
        return

    class _AfterKeras(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
            if name != "keras":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            run_keras = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run_keras(module)
                try:
                    importlib.import_module("bit_keras.models.layers")
                except ImportError:  # pragma: no cover - a broken TensorFlow: Keras reports it itself
                    pass

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _AfterKeras())


_register_layers_with_keras()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bit_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
