"""Load TF Hub-style SavedModels into Keras 3 as fine-tunable layers.

``load_layer(handle, trainable=True)`` accepts a local SavedModel directory, an ``http(s)://`` URL
(downloaded with ``tensorflow_hub.resolve`` as ``?tf-hub-format=compressed`` and cached under
``$TFHUB_CACHE_DIR``) or a registry handle ``publisher/name/variant/version`` (looked up in the default
registry, ``$BIT_KERAS_REGISTRY`` or ``<bit_keras cache>/registry``). The layer is a
:class:`SavedModelLayer`, a ``keras.layers.TFSMLayer`` whose weight names lose TF's ``:0`` suffix, so
that optimizers with slot variables (SGD with momentum, Adam, AdamW) work; plain ``TFSMLayer`` fails with
``'...kernel:0_momentum' is not a valid scope name``.

``tensorflow_hub`` is needed only for URLs (``pip install bit-keras[hub]``). tf-keras users load the same
SavedModels with ``hub.KerasLayer(handle, trainable=True)``.

TensorFlow only, by nature (``keras.layers.TFSMLayer`` runs a TensorFlow graph): :func:`load_layer` raises
:class:`~bit_keras.errors.BackendError` on another Keras backend. :func:`is_handle` and :func:`resolve` need
no backend.

Note: ``TFSMLayer`` ignores a SavedModel's ``regularization_losses``; put weight decay in the optimizer.

Example:
    >>> import tempfile, pathlib, numpy as np, keras, bit_keras, hub_export
    >>> from hub_export.load import load_layer
    >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
    >>> path = hub_export.export(model, pathlib.Path(tempfile.mkdtemp()) / "fv")
    >>> layer = load_layer(str(path), trainable=True)
    >>> head = keras.layers.Dense(3, kernel_initializer="zeros")
    >>> clf = keras.Sequential([keras.Input((None, None, 3)), layer, head])
    >>> clf.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    >>> _ = clf.fit(np.random.rand(4, 32, 32, 3), np.array([0, 1, 2, 0]), epochs=1, verbose=0)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import keras

from bit_keras.backend import require_tensorflow
from bit_keras.errors import ConfigError, MissingDependencyError, MissingFileError

__all__ = ["SavedModelLayer", "is_handle", "load_layer", "resolve"]

SAVED_MODEL_FILE = "saved_model.pb"
METADATA_FILE = "metadata.json"
_HUB_INSTALL = "pip install bit-keras[hub]  (or: pip install tensorflow-hub tf-keras)"
_HANDLE_SHAPE = re.compile(r"[^/]+/[^/]+/[^/]+/[0-9]+")


def _tensorflow_hub():
    try:
        import tensorflow_hub
    except ImportError as e:
        raise MissingDependencyError(f"loading a model from a URL needs tensorflow_hub, which is not installed: {_HUB_INSTALL}") from e
    return tensorflow_hub


def _is_url(s: str) -> bool:
    return s.lower().startswith(("http://", "https://"))


def is_handle(s: str) -> bool:
    """True for what :func:`load_layer` takes rather than a zoo name: an ``http(s)://`` URL, an existing
    directory holding ``saved_model.pb``, or a registry handle ``publisher/name/variant/<int version>``.

    Example:
        >>> is_handle("https://tfhub.dev/google/bit/m-r50x1/1"), is_handle("me/bit-m-r50x1/feature-vector/3")
        (True, True)
        >>> is_handle("BiT-M-R50x1"), is_handle("me/bit/feature-vector/latest")
        (False, False)
    """
    if not isinstance(s, (str, os.PathLike)):
        return False
    s = os.fspath(s)
    if _is_url(s):
        return True
    if Path(s).expanduser().is_dir():
        return (Path(s).expanduser() / SAVED_MODEL_FILE).is_file()
    if not _HANDLE_SHAPE.fullmatch(s):
        return False
    from bit_keras.models.presets import PRESETS

    if s in PRESETS:
        return False
    from hub_export.registry import InvalidHandleError, parse_handle

    try:
        parse_handle(s)
    except InvalidHandleError:
        return False
    return True


def resolve(handle: str | os.PathLike, *, registry: str | os.PathLike | None = None) -> Path:
    """The local SavedModel directory of ``handle`` (a directory, ``file://`` URL, http(s) URL, or registry
    handle; ``registry`` overrides the default registry root).

    Example:
        >>> import tempfile, pathlib, bit_keras, hub_export
        >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
        >>> path = hub_export.export(model, pathlib.Path(tempfile.mkdtemp()) / "fv")
        >>> resolve(str(path)) == path
        True
    """
    s = os.fspath(handle)
    if s.startswith("file://"):
        s = s[len("file://"):]
    if _is_url(s):
        return Path(_tensorflow_hub().resolve(s))
    path = Path(s).expanduser()
    if path.is_dir():
        if not (path / SAVED_MODEL_FILE).is_file():
            raise MissingFileError(f"{path} is a directory but not a SavedModel (no {SAVED_MODEL_FILE}); "
                                    "export one with hub_export.export(model, dir)")
        return path
    if _HANDLE_SHAPE.fullmatch(s):
        from hub_export.registry import Registry

        return Registry(registry).resolve(s)
    raise MissingFileError(
        f"cannot load {s!r}: it is neither a SavedModel directory, an http(s) URL, nor a registry handle "
        "publisher/name/variant/version (bit-keras registry list shows the published ones)")


@keras.saving.register_keras_serializable(package="bit_keras")
class SavedModelLayer(keras.layers.TFSMLayer):
    """``keras.layers.TFSMLayer`` that works with every optimizer and with ``__call__``-only SavedModels.

    * Weight names drop the ``:0`` suffix, so optimizer slot names are valid (SGD momentum, Adam, AdamW).
    * ``call_endpoint="__call__"`` without a training endpoint forwards ``training`` to the
      Reusable-SavedModel ``__call__(images, training)``.

    Example:
        >>> import tempfile, pathlib, bit_keras, hub_export
        >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
        >>> path = hub_export.export(model, pathlib.Path(tempfile.mkdtemp()) / "fv")
        >>> layer = SavedModelLayer(str(path), "serve", "call_training")
        >>> all(":" not in w.name for w in layer.weights)
        True
    """

    def _add_existing_weight(self, weight: Any) -> None:
        variable = keras.Variable(
            initializer=weight,  # a tf.Variable: wrapped, not copied, so training updates the SavedModel's
            trainable=weight.trainable,
            dtype=weight.dtype,
            shape=weight.shape,
            name=weight.name.replace("/", "_").replace(":", "_"),
        )
        self._track_variable(variable)

    def call(self, inputs: Any, training: bool | None = False, **kwargs: Any) -> Any:
        if self.call_endpoint == "__call__" and not self.call_training_endpoint:
            return self.call_endpoint_fn(inputs, training=bool(training), **kwargs)
        return super().call(inputs, training=training, **kwargs)


def _endpoints(path: Path) -> tuple[set[str], dict[str, Any]]:
    """Endpoint names of a SavedModel: from its ``metadata.json`` when bit_keras wrote it, else by loading it."""
    meta: dict[str, Any] = {}
    try:
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    if not isinstance(meta, dict):
        meta = {}
    if isinstance(meta.get("endpoints"), list):
        return set(meta["endpoints"]), meta
    import tensorflow as tf

    obj = tf.saved_model.load(str(path))
    names = {n for n in ("serve", "call_training", "__call__") if hasattr(obj, n)}
    return names | set(obj.signatures), meta


def load_layer(handle: str | os.PathLike, trainable: bool = False, *, name: str | None = None,
               registry: str | os.PathLike | None = None) -> keras.layers.Layer:
    """A Keras 3 layer running the SavedModel at ``handle``; ``trainable=True`` fine-tunes its weights.

    Args:
        handle: a SavedModel directory, an ``http(s)://`` URL (needs ``tensorflow_hub``), or a registry
            handle ``publisher/name/variant/version``.
        trainable: whether the SavedModel's variables are trained with the rest of the model.
        name: the layer name.
        registry: the registry root for registry handles (default: ``$BIT_KERAS_REGISTRY`` or the cache).

    Returns:
        A :class:`SavedModelLayer` taking float32 RGB images in [0, 1] (NHWC, any size).

    Raises:
        ConfigError: ``trainable=True`` for a serving-only (``fold_standardization=True``) export, or a
            SavedModel with no usable endpoint.
        BackendError: Keras runs on JAX or PyTorch (a SavedModel runs on TensorFlow only).

    Example:
        >>> import tempfile, pathlib, numpy as np, bit_keras, hub_export
        >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
        >>> layer = load_layer(hub_export.export(model, pathlib.Path(tempfile.mkdtemp()) / "fv"))
        >>> tuple(layer(np.zeros((1, 32, 32, 3), "float32")).shape)
        (1, 512)
    """
    require_tensorflow("Loading a SavedModel (load_layer)")
    path = resolve(handle, registry=registry)
    endpoints, meta = _endpoints(path)
    if trainable and meta.get("fine_tunable") is False:
        raise ConfigError(
            f"{os.fspath(handle)} is a serving-only export (fold_standardization=True: pre-standardized "
            "kernels, plain convolutions) and cannot be fine-tuned; load it with trainable=False, or "
            "publish an export made with fold_standardization=False")
    if "serve" in endpoints:
        call, training = "serve", ("call_training" if "call_training" in endpoints else None)
    elif "__call__" in endpoints:
        call, training = "__call__", None
    elif "serving_default" in endpoints:
        raise ConfigError(f"{os.fspath(handle)} has only a serving_default signature (returns a dict), which "
                         "load_layer does not wrap; use keras.layers.TFSMLayer(path, 'serving_default') and pick "
                         "the output key, or export with hub_export.export")
    else:
        raise ConfigError(f"{os.fspath(handle)} has no 'serve' or '__call__' endpoint; export it with "
                         "hub_export.export(model, dir)")
    return SavedModelLayer(str(path), call_endpoint=call, call_training_endpoint=training,
                           trainable=trainable, name=name)
