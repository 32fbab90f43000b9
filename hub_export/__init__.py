"""Publish bit_keras models the TF Hub way: Reusable SavedModels, a versioned registry, an HTTP server.

* :func:`export`: a bit_keras model -> a TF2 Reusable SavedModel (input float32 RGB in [0, 1], NHWC,
  any resolution) that ``hub.KerasLayer(path, trainable=True)`` (tf-keras) and
  ``hub_export.load.load_layer`` (Keras 3) fine-tune.
* :class:`Registry`: a directory tree ``<root>/<publisher>/<name>/<variant>/<version>/`` of SavedModels with
  checksummed ``metadata.json``; atomic, never-overwriting publish; list, show, verify, remove.
* :func:`serve`: that registry over HTTP, so that ``hub.load("http://host:port/<handle>")`` works.

Example:
    >>> import tempfile, pathlib, bit_keras, hub_export
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
    >>> registry = hub_export.Registry(tmp / "registry")
    >>> _ = registry.publish(hub_export.export(model, tmp / "export"), "me/tiny-bit/feature-vector/1")
    >>> [m["handle"] for m in registry.list()]
    ['me/tiny-bit/feature-vector/1']
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> its module, imported on first use: the registry and its server need no TensorFlow.
_LAZY: dict[str, str] = {
    "ExportError": "bit_keras.errors",
    "export": "hub_export.saved_model",
    "fold_weight_standardization": "hub_export.saved_model",
    "HandleNotFoundError": "bit_keras.errors",
    "InvalidHandleError": "bit_keras.errors",
    "Registry": "hub_export.registry",
    "RegistryError": "bit_keras.errors",
    "VersionExistsError": "bit_keras.errors",
    "default_root": "hub_export.registry",
    "parse_handle": "hub_export.registry",
    "RegistryServer": "hub_export.server",
    "serve": "hub_export.server",
    "SavedModelLayer": "hub_export.load",
    "is_handle": "hub_export.load",
    "load_layer": "hub_export.load",
    "resolve": "hub_export.load",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hub_export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
