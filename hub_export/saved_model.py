"""Export a bit_keras model as a TF2 Reusable SavedModel (the TF Hub image convention).

The SavedModel takes float32 RGB images in [0, 1], NHWC, any resolution, and has

* ``__call__(images, training=False)``, a ``tf.function`` traced for ``training=False`` and ``True``
  (``hub.KerasLayer(path, trainable=True)`` fine-tunes it in a tf-keras model);
* ``variables``, ``trainable_variables`` and ``regularization_losses`` (zero-argument functions);
* endpoints ``serve(images)`` and ``call_training(images)`` (``keras.layers.TFSMLayer`` /
  ``hub_export.load.load_layer`` use them), ``serve`` also as the ``serving_default`` signature;
* ``labels.txt`` as an asset (``obj.labels_file``) for classifiers whose label names are given or known;
* ``metadata.json`` beside ``saved_model.pb``: architecture, upstream data, classes, input spec, parameters.

TensorFlow only, by nature (a SavedModel is a TensorFlow graph): importing this module on another Keras
backend raises :class:`~bit_keras.errors.BackendError` naming ``KERAS_BACKEND=tensorflow``. A model built on
JAX or PyTorch moves over as an ``.npz`` (``bit_keras.save_npz``) or ``.keras`` file.

``fold_standardization=True`` writes a serving-only variant: the weight standardization of every
convolution is computed once at export and stored as a plain convolution kernel (same outputs within
1e-5, less work per call). It is **not fine-tunable**: its variables are non-trainable, it has no
``call_training`` endpoint, and ``__call__(images, training=True)`` fails with an error saying so.

Example:
    >>> import tempfile, pathlib, bit_keras, hub_export
    >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
    >>> path = hub_export.export(model, pathlib.Path(tempfile.mkdtemp()) / "features")
    >>> sorted(p.name for p in path.iterdir())
    ['assets', 'fingerprint.pb', 'metadata.json', 'saved_model.pb', 'variables']
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from bit_keras.backend import require_tensorflow

require_tensorflow("SavedModel export (hub_export.export)")
# (checked before importing TensorFlow, which a JAX or PyTorch install may lack)

import tensorflow as tf  # noqa: E402

from bit_keras.atomic import atomic_path
from bit_keras.errors import ConfigError, ExportError
from bit_keras.models.fold import fold_standardization, folded_arch
from bit_keras.models.native import native_ops
from bit_keras.models.presets import ModelInfo, get_model_info
from bit_keras.models.resnet import PRE_LOGITS_NAME, model_input_range
from bit_keras.models.spec import ARCHS, ArchSpec

__all__ = ["ExportError", "LABELS_FILE", "METADATA_FILE", "export", "fold_weight_standardization"]

METADATA_FILE = "metadata.json"
LABELS_FILE = "labels.txt"
KINDS = ("feature_vector", "classifier")
PRE_LOGITS = PRE_LOGITS_NAME
HEAD = "head"
FOLDED_TRAINING_ERROR = (
    "this SavedModel was exported with fold_standardization=True: it is serving-only (standardized "
    "kernels in plain convolutions) and cannot be called with training=True or fine-tuned; export the "
    "model again with fold_standardization=False to fine-tune it"
)


# --------------------------------------------------------------------------- model inspection


def _spec_of(model: keras.Model, arch: ArchSpec | str | None) -> ArchSpec:
    """The architecture of ``model`` (:func:`bit_keras.models.fold.folded_arch`), its errors as ``ExportError``."""
    try:
        return folded_arch(model, arch, action="export")
    except ConfigError as err:
        raise ExportError(str(err)) from err.__cause__


def _preset(preset: ModelInfo | str | None) -> ModelInfo | None:
    return get_model_info(preset) if isinstance(preset, str) else preset


def _select_outputs(model: keras.Model, kind: str) -> keras.Model:
    if kind not in KINDS:
        raise ExportError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(model.output, keras.KerasTensor) or len(model.output.shape) != 2:
        raise ExportError(f"model {model.name!r} must have one (batch, features) output to export, got "
                          f"{model.output}; export the model from bit_keras.create_model, not a feature_extractor")
    has_head = any(layer.name == HEAD for layer in model.layers)
    if kind == "classifier":
        if not has_head:
            raise ExportError(
                f"model {model.name!r} has no classification head (no layer named {HEAD!r}); export it with "
                "kind='feature_vector', or build it with num_classes=<n>")
        return model
    if not has_head:
        return model
    try:
        pre_logits = model.get_layer(PRE_LOGITS).output
    except ValueError as e:
        raise ExportError(f"model {model.name!r} has no {PRE_LOGITS!r} layer to export as a feature vector; "
                          "build it with bit_keras.create_model / resnet_v2") from e
    return keras.Model(model.input, pre_logits, name=model.name)


def fold_weight_standardization(model: keras.Model, arch: ArchSpec | str | None = None) -> keras.Model:
    """The serving form of ``model``: :func:`bit_keras.fold_standardization` (an ``ExportError`` for a model that is
    not a BiT ResNet-v2).

    Example:
        >>> import numpy as np, bit_keras
        >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
        >>> x = np.random.rand(1, 32, 32, 3).astype("float32")
        >>> bool(np.allclose(model(x), fold_weight_standardization(model)(x), atol=1e-5))
        True
    """
    return fold_standardization(model, _spec_of(model, arch))


# --------------------------------------------------------------------------- the SavedModel object


class _Untracked:
    """Keeps the Keras model out of the SavedModel's object graph (it would add every Keras layer to it and
    slow saving down); its variables are saved through the module's ``variables`` list."""

    def __init__(self, model: keras.Model):
        self.model = model


def _regularization_loss(variable: keras.Variable) -> tf.types.experimental.GenericFunction:
    """A zero-argument tf.function returning the variable's (float32) regularization loss."""
    return tf.function(lambda: tf.cast(variable.regularizer(variable.value), tf.float32), input_signature=[])


class _ReusableModule(tf.Module):
    """The object ``tf.saved_model.save`` writes: a Reusable SavedModel around a Keras model."""

    # tf.Module defines these as read-only properties; shadow them with plain attributes (pitfall P10).
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, model: keras.Model, input_range: tuple[float, float], *, fine_tunable: bool):
        super().__init__(name="bit_keras_export")
        self._keras = _Untracked(model)
        self._lo, self._span = float(input_range[0]), float(input_range[1] - input_range[0])
        self._fine_tunable = fine_tunable
        if fine_tunable:
            self.variables = list(model.variables)
            self.trainable_variables = list(model.trainable_variables)
            self.regularization_losses = [_regularization_loss(v) for v in model.trainable_variables
                                          if getattr(v, "regularizer", None) is not None]
        else:
            # Serving only: back the (fresh, folded) model with non-trainable tf.Variables, so that no
            # consumer's optimizer (hub.KerasLayer, TFSMLayer) picks them up.
            for v in model.variables:
                v._value = tf.Variable(v.value, trainable=False, name=v.path.replace("/", "_"))  # noqa: SLF001
            self.variables = [v.value for v in model.variables]
            self.trainable_variables = []
            self.regularization_losses = []
        spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")
        self.__call__.get_concrete_function(spec, training=False)
        self.__call__.get_concrete_function(spec, training=True)
        self.serve = tf.function(lambda images: self.__call__(images, training=False), input_signature=[spec])
        if fine_tunable:
            self.call_training = tf.function(lambda images: self.__call__(images, training=True),
                                             input_signature=[spec])

    @tf.function
    def __call__(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = tf.convert_to_tensor(images, tf.float32)
        if (self._lo, self._span) != (0.0, 1.0):
            x = x * self._span + self._lo  # the SavedModel takes [0, 1]; the Keras model its own range
        if training and not self._fine_tunable:
            check = tf.debugging.Assert(tf.less(tf.size(x, out_type=tf.int64), 0), [FOLDED_TRAINING_ERROR])
            with tf.control_dependencies([check]):
                x = tf.identity(x)
            training = False
        return tf.cast(self._keras.model(x, training=training), tf.float32)


# --------------------------------------------------------------------------- export


def _labels_for(info: ModelInfo | None, kind: str, labels: Sequence[str] | str | os.PathLike | None,
                num_classes: int) -> list[str] | None:
    if labels is None:
        labels = info.labels if info is not None and kind == "classifier" else None
        if labels is None:
            return None
    elif isinstance(labels, (str, os.PathLike)):
        labels = Path(labels).read_text(encoding="utf-8").splitlines()
    labels = [str(label) for label in labels]
    if kind != "classifier":
        raise ExportError("labels are only exported with kind='classifier'; drop labels= for a feature vector")
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels given for a head of {num_classes} classes; "
                          "pass one label name per class, in class-index order")
    bad = [label for label in labels if "\n" in label or "\r" in label]
    if bad:
        raise ExportError(f"label names must not contain line breaks: {bad[:3]}")
    return labels


def _metadata(spec: ArchSpec, info: ModelInfo | None, exported: keras.Model, kind: str, fold: bool,
              labels: list[str] | None, input_range: tuple[float, float],
              extra: Mapping[str, Any] | None) -> dict[str, Any]:
    import bit_keras

    out_dim = int(exported.output.shape[-1])
    meta: dict[str, Any] = {
        "format": "TF2 Reusable SavedModel",
        "kind": kind,
        "fine_tunable": not fold,
        "fold_standardization": fold,
        "architecture": {"family": "BiT ResNet-v2 (GroupNorm + weight-standardized convolutions)",
                         "arch": spec.describe() if spec.describe() in ARCHS else None, "depths": list(spec.depths),
                         "width": spec.width, "groups": spec.groups, "keras_model": exported.name},
        "zoo_name": info.name if info else None,
        "upstream": info.upstream if info else None,
        "fine_tuned_on": info.fine_tuned_on if info else None,
        "classes": {"num_classes": out_dim if kind == "classifier" else None,
                    "multi_label": bool(info.multi_label) if info and kind == "classifier" else None,
                    "labels_file": f"assets/{LABELS_FILE}" if labels else None},
        "output": {"name": "logits" if kind == "classifier" else "feature_vector", "shape": [None, out_dim],
                   "dtype": "float32"},
        "input": {"shape": [None, None, None, 3], "dtype": "float32", "range": [0.0, 1.0], "layout": "NHWC RGB",
                  "recommended_resolution": info.resolution if info else None,
                  "preprocessing": info.to_dict()["preprocessing"] if info else None,
                  "model_input_range": list(input_range)},
        "parameters": int(sum(int(np.prod(v.shape)) for v in exported.weights)),
        "endpoints": ["__call__", "serve", "serving_default"] + ([] if fold else ["call_training"]),
        "bit_keras_version": bit_keras.__version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta.update(extra or {})
    return meta


def _check_target(export_dir: Path) -> None:
    if export_dir.exists() and (not export_dir.is_dir() or any(export_dir.iterdir())):
        raise FileExistsError(
            f"export_dir {export_dir} already exists and is not empty; refusing to overwrite it. "
            "Choose a new directory or remove the old export first.")


def export(
    model: keras.Model,
    export_dir: str | os.PathLike,
    *,
    kind: str = "feature_vector",
    fold_standardization: bool = False,
    labels: Sequence[str] | str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    input_range: Sequence[float] | None = None,
    preset: ModelInfo | str | None = None,
    arch: ArchSpec | str | None = None,
) -> Path:
    """Write ``model`` as a TF2 Reusable SavedModel into ``export_dir`` (atomically) and return its path.

    Args:
        model: a bit_keras model (``bit_keras.create_model`` / ``resnet_v2``), classifier or feature form.
        export_dir: the new directory; it must not exist or be empty. The SavedModel is built in a
            temporary directory beside it and renamed into place, so a failed export leaves nothing.
        kind: ``"feature_vector"`` (the pre-logits output; a classifier's head is dropped) or
            ``"classifier"`` (the logits; the model must have its ``head``).
        fold_standardization: write a faster serving-only SavedModel whose convolution kernels are
            pre-standardized (not fine-tunable; ``__call__(training=True)`` raises).
        labels: the class names (a sequence, or a path to a text file with one per line) for a classifier;
            by default those known to the zoo entry of the model (e.g. CIFAR-10). Written as
            ``assets/labels.txt``.
        metadata: extra keys for ``metadata.json`` (override the derived ones).
        input_range: the range the Keras model takes; by default read from the model. The SavedModel
            always takes [0, 1] and maps it onto this range.
        preset: the zoo entry (name or :class:`~bit_keras.models.presets.ModelInfo`) the weights come from:
            its upstream data, head labels and preprocessing go into ``metadata.json``. Nothing is guessed
            from the model's name: without it, those fields are null.
        arch: the architecture (name or spec); by default read from the model's weights
            (:func:`bit_keras.models.spec.infer_spec`).

    Raises:
        FileExistsError: ``export_dir`` exists and is not empty.
        ExportError: a wrong ``kind`` for the model, or labels that do not match the head.

    Example:
        >>> import tempfile, pathlib, numpy as np, tensorflow as tf, bit_keras
        >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=3, groups=8)
        >>> path = export(model, pathlib.Path(tempfile.mkdtemp()) / "clf", kind="classifier", labels=["a", "b", "c"])
        >>> tf.saved_model.load(str(path))(np.zeros((1, 48, 48, 3), "float32")).shape
        TensorShape([1, 3])
    """
    export_dir = Path(export_dir).expanduser().absolute()
    _check_target(export_dir)
    spec = _spec_of(model, arch)
    info = _preset(preset)
    exported = _select_outputs(model, kind)
    in_range = tuple(float(v) for v in input_range) if input_range is not None else model_input_range(model)
    if len(in_range) != 2 or not in_range[1] > in_range[0]:
        raise ExportError(f"input_range must be (low, high) with high > low, got {in_range}")
    label_list = _labels_for(info, kind, labels, int(exported.output.shape[-1]))
    meta = _metadata(spec, info, exported, kind, fold_standardization, label_list, in_range, metadata)

    # The graph must load where bit-keras is absent: no native kernels in it (bit_keras.models.native).
    with native_ops(False), atomic_path(export_dir, directory=True, replace=False) as build:
        if fold_standardization:
            module = _ReusableModule(fold_weight_standardization(exported, spec), in_range, fine_tunable=False)
        else:
            module = _ReusableModule(exported, in_range, fine_tunable=True)
        with tempfile.TemporaryDirectory() as scratch:
            if label_list is not None:
                labels_path = Path(scratch, LABELS_FILE)
                labels_path.write_text("\n".join(label_list) + "\n", encoding="utf-8")
                module.labels_file = tf.saved_model.Asset(str(labels_path))
            tf.saved_model.save(module, str(build), signatures={"serving_default": module.serve})
        (build / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _check_target(export_dir)
    return export_dir
