"""Publish bit_keras models the TF Hub way: Reusable SavedModels, a versioned registry, an HTTP server.

* :func:`export`: a bit_keras model -> a TF2 Reusable SavedModel (input float32 RGB in [0, 1], NHWC,
  any resolution) that ``hub.KerasLayer(path, trainable=True)`` (tf-keras) and
  ``bit_keras.hub.load_layer`` (Keras 3) fine-tune.
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

from hub_export.export import ExportError, export, fold_weight_standardization
from hub_export.registry import (
    HandleNotFoundError,
    InvalidHandleError,
    Registry,
    RegistryError,
    VersionExistsError,
    default_root,
    parse_handle,
)
from hub_export.server import RegistryServer, serve

__all__ = [
    "ExportError",
    "HandleNotFoundError",
    "InvalidHandleError",
    "Registry",
    "RegistryError",
    "RegistryServer",
    "VersionExistsError",
    "default_root",
    "export",
    "fold_weight_standardization",
    "parse_handle",
    "serve",
]
