"""Reusable SavedModel export, and fine-tuning it with the real tensorflow_hub (tf-keras) and Keras 3.

One tiny BiT (a few hundred k parameters) is exported a few times per module; every test reads those.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

import bit_keras
import hub_export
from bit_keras.models.native import native_ops
from hub_export import load as bk_hub
from bit_keras.cli import hub as hub_cmd
from bit_keras.errors import ConfigError, HandleNotFoundError, MissingFileError
from hub_export import ExportError, Registry, export
from hub_export.saved_model import model_input_range

NUM_CLASSES = 3
LABELS = ["red", "green", "blue"]
HANDLE = "test/tiny-bit/feature-vector/1"


def tiny_bit(num_classes: int | None = NUM_CLASSES, input_range=(-1.0, 1.0)) -> keras.Model:
    return bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=num_classes, groups=8, input_range=input_range)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    # input_range (-1, 1): the SavedModel must still take [0, 1] (the export wraps the model).
    m = tiny_bit()
    head = m.get_layer("head")
    rng = np.random.default_rng(0)
    head.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in head.get_weights()])
    head.kernel.regularizer = keras.regularizers.L2(1e-3)  # exported as a regularization_losses function
    return m


@pytest.fixture(scope="module")
def exports(model: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {
        "feature_vector": export(model, root / "fv"),
        "classifier": export(model, root / "clf", kind="classifier", labels=LABELS,
                             metadata={"upstream": "synthetic"}),
        "folded": export(model, root / "clf_folded", kind="classifier", fold_standardization=True),
    }


@pytest.fixture(scope="module")
def loaded(exports: dict[str, Path]) -> dict[str, object]:
    return {kind: tf.saved_model.load(str(path)) for kind, path in exports.items()}


@pytest.fixture(scope="module")
def registry(model: keras.Model, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry holding the feature vector, published with ``bit-keras export model.keras``."""
    tmp = tmp_path_factory.mktemp("cli")
    model.save(tmp / "tiny.keras")
    parser = argparse.ArgumentParser()
    hub_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["export", str(tmp / "tiny.keras"), "--handle", HANDLE, "--registry", str(tmp / "reg")])
    assert args.func(args) == 0
    return Registry(tmp / "reg")


def images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3)).astype("float32")


def dataset(n: int = 12, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Images whose dominant colour channel is the label: learnable in a few steps."""
    rng = np.random.default_rng(1)
    y = np.arange(n) % NUM_CLASSES
    x = rng.random((n, size, size, 3)).astype("float32") * 0.4
    x[np.arange(n), :, :, y] += 0.6
    return x, y


def _assert_fine_tunes(clf, layer):
    """Three epochs of fit (tf-keras or Keras 3): the loss falls and every backbone weight of ``layer`` moves."""
    backbone = layer.trainable_weights
    assert len(backbone) == 43
    before = [w.numpy().copy() for w in backbone]
    x, y = dataset()
    losses = clf.fit(x, y, batch_size=6, epochs=3, verbose=0, shuffle=False).history["loss"]
    assert losses[-1] < losses[0] - 0.05, losses
    assert sum(not np.allclose(b, w.numpy()) for b, w in zip(before, backbone)) == len(backbone)
    return x, y, backbone


# --------------------------------------------------------------------------- outputs and API


@pytest.mark.parametrize("size", [32, 57])
def test_exported_outputs_match_keras(model: keras.Model, loaded: dict[str, object], size: int) -> None:
    x = images(size=size)
    keras_x = x * 2 - 1  # the Keras model takes [-1, 1]; the SavedModels take [0, 1]
    feature_model = keras.Model(model.input, model.get_layer("pre_logits").output)
    # The exports hold the Keras-ops graph (never the native CPU kernels, bit_keras.models.native): the same math
    # to 1e-5; the Keras model's native kernels round differently, within the parity tolerance.
    fast = feature_model(keras_x).numpy()
    with native_ops(False):
        logits = model(keras_x).numpy()
        features = feature_model(keras_x).numpy()
    np.testing.assert_allclose(fast, features, atol=1e-4, rtol=0)
    fv, clf, folded = loaded["feature_vector"], loaded["classifier"], loaded["folded"]
    for training in (False, True):
        np.testing.assert_allclose(fv(x, training=training).numpy(), features, atol=1e-5, rtol=0)
        np.testing.assert_allclose(clf(x, training=training).numpy(), logits, atol=1e-5, rtol=0)
    folded_logits = folded(x).numpy()
    np.testing.assert_allclose(folded_logits, logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(folded_logits, clf(x).numpy(), atol=1e-5, rtol=0)
    served = fv.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(served["output_0"].numpy(), features, atol=1e-5, rtol=0)
    assert features.shape == (2, 512) and logits.shape == (2, NUM_CLASSES)


def test_reusable_savedmodel_api(model: keras.Model, exports: dict[str, Path], loaded: dict[str, object]) -> None:
    fv, clf = loaded["feature_vector"], loaded["classifier"]
    backbone = [v for v in model.trainable_variables if not v.path.startswith("head/")]
    assert len(fv.variables) == len(fv.trainable_variables) == len(backbone)
    assert len(clf.trainable_variables) == len(model.trainable_variables)
    assert list(fv.regularization_losses) == []  # the head (the only regularized weight) is not exported
    (reg_loss,) = clf.regularization_losses
    np.testing.assert_allclose(float(reg_loss()), 1e-3 * float(np.sum(model.get_layer("head").kernel.numpy() ** 2)),
                               rtol=1e-5)
    assert [len(f.concrete_functions) for f in (fv.__call__,)] == [2]  # traced for training=False and True
    assert {"serve", "call_training"} <= set(dir(fv)) and list(fv.signatures) == ["serving_default"]
    assert Path(clf.labels_file.asset_path.numpy().decode()).read_text().split() == LABELS
    assert (exports["classifier"] / "assets" / "labels.txt").is_file()
    assert not hasattr(fv, "labels_file")

    meta = json.loads((exports["classifier"] / "metadata.json").read_text())
    assert meta["kind"] == "classifier" and meta["fine_tunable"] is True and meta["upstream"] == "synthetic"
    assert meta["architecture"]["depths"] == [1, 1, 1, 1] and meta["architecture"]["width"] == 0.25
    assert meta["classes"]["num_classes"] == NUM_CLASSES and meta["classes"]["labels_file"] == "assets/labels.txt"
    assert meta["input"]["range"] == [0.0, 1.0] and meta["input"]["model_input_range"] == [-1.0, 1.0]
    assert meta["parameters"] == model.count_params()
    fv_meta = json.loads((exports["feature_vector"] / "metadata.json").read_text())
    assert fv_meta["output"]["shape"] == [None, 512] and fv_meta["parameters"] == model.count_params() - 512 * 3 - 3


def test_folded_export_is_serving_only(exports: dict[str, Path], loaded: dict[str, object]) -> None:
    folded = loaded["folded"]
    assert len(folded.trainable_variables) == 0 and not hasattr(folded, "call_training")
    assert all(not v.trainable for v in folded.variables)
    with pytest.raises(tf.errors.InvalidArgumentError, match="fold_standardization=True"):
        folded(images(), training=True)
    meta = json.loads((exports["folded"] / "metadata.json").read_text())
    assert meta["fine_tunable"] is False and "call_training" not in meta["endpoints"]
    with pytest.raises(ConfigError, match="serving-only"):
        bk_hub.load_layer(str(exports["folded"]), trainable=True)
    layer = bk_hub.load_layer(str(exports["folded"]))
    assert layer.trainable_weights == [] and tuple(layer(images()).shape) == (2, NUM_CLASSES)


def test_input_range_is_read_from_the_model() -> None:
    assert model_input_range(tiny_bit(input_range=(0, 255))) == (0.0, 255.0)
    assert model_input_range(tiny_bit(input_range=(0, 1))) == (0.0, 1.0)
    assert model_input_range(tiny_bit(input_range=(-1, 1))) == (-1.0, 1.0)


def test_export_refuses_bad_requests(model: keras.Model, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty; refusing to overwrite"):
        export(model, tmp_path / "taken")
    assert os.listdir(tmp_path / "taken") == ["keep.txt"]
    with pytest.raises(ExportError, match="no classification head"):
        export(tiny_bit(num_classes=None), tmp_path / "x", kind="classifier")
    with pytest.raises(ExportError, match="2 labels given for a head of 3 classes"):
        export(model, tmp_path / "x", kind="classifier", labels=["a", "b"])
    with pytest.raises(ExportError, match="kind must be one of"):
        export(model, tmp_path / "x", kind="logits")
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_failed_export_leaves_nothing(model: keras.Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(module, path, **kwargs):  # writes part of the SavedModel, then fails
        Path(path, "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sys.modules["hub_export.saved_model"], "_ReusableModule", lambda *a, **k: SimpleNamespace(serve=None))
    monkeypatch.setattr(tf.saved_model, "save", broken_save)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        export(model, tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not os.listdir(tmp_path / "empty")


# --------------------------------------------------------------------------- the registry and the CLI


def test_cli_export_published_a_verified_model(registry: Registry, loaded: dict[str, object]) -> None:
    assert [m["handle"] for m in registry.list()] == [HANDLE]
    assert registry.verify(HANDLE) == []
    meta = registry.show(HANDLE)
    assert meta["kind"] == "feature_vector" and meta["parameters"] > 0 and meta["checksums"]["overall"]
    files = set(meta["checksums"]["files"])
    assert {"saved_model.pb", "variables/variables.index"} <= files
    x = images()
    published = tf.saved_model.load(str(registry.resolve(HANDLE)))
    reference = loaded["feature_vector"]
    np.testing.assert_allclose(published(x).numpy(), reference(x).numpy(), atol=1e-6)


def test_is_handle(exports: dict[str, Path], tmp_path: Path) -> None:
    assert bk_hub.is_handle("http://127.0.0.1:8000/a/b/c/1") and bk_hub.is_handle("https://tfhub.dev/google/bit/m-r50x1/1")
    assert bk_hub.is_handle(str(exports["feature_vector"]))
    assert bk_hub.is_handle("me/bit-m-r50x1/feature-vector/2")
    assert not bk_hub.is_handle(str(tmp_path))  # a directory without saved_model.pb
    for s in ("BiT-M-R50x1", "bit-m-r50x1", "a/b/c", "a/b/c/x", "a/b/c/d/1", "../b/c/1", ""):
        assert not bk_hub.is_handle(s), s


def test_load_layer_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="not a SavedModel"):
        bk_hub.load_layer(str(tmp_path))
    with pytest.raises(MissingFileError, match="neither a SavedModel directory"):
        bk_hub.load_layer("BiT-M-R50x1")
    with pytest.raises(HandleNotFoundError, match="no model published as 'nobody/x/y/1'"):
        bk_hub.load_layer("nobody/x/y/1", registry=tmp_path)


# --------------------------------------------------------------------------- fine-tuning


def _fine_tune_tf_keras(handle: str) -> None:
    import tensorflow_hub as hub
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layer = hub.KerasLayer(handle, trainable=True)
    clf = tf_keras.Sequential([tf_keras.Input((None, None, 3)), layer,
                               tf_keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros")])
    clf.compile(tf_keras.optimizers.SGD(0.05, momentum=0.9),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y, backbone = _assert_fine_tunes(clf, layer)
    with tf.GradientTape() as tape:  # the head is no longer zero, so every backbone weight gets a gradient
        loss = clf.loss(tf.constant(y), clf(x, training=True))
    assert all(g is not None and float(tf.norm(g)) > 0 for g in tape.gradient(loss, backbone))


@pytest.mark.slow
def test_hub_keras_layer_fine_tunes_over_loopback(registry: Registry, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow_hub as hub

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub"))
    server = hub_export.serve(registry.root)
    try:
        url = f"{server.url}/{HANDLE}"
        cached = Path(hub.resolve(url))
        assert cached.parent == tmp_path / "tfhub" and (cached / "saved_model.pb").is_file()
        assert (cached / "metadata.json").is_file()
        _fine_tune_tf_keras(url)
        # The Keras 3 path resolves the same URL through tensorflow_hub's cache.
        assert bk_hub.resolve(url) == cached
    finally:
        server.shutdown()
    assert Path(hub.resolve(url)) == cached  # served from the cache with the server gone


@pytest.mark.parametrize("optimizer", ["sgd_momentum", pytest.param("adam", marks=pytest.mark.slow)])
def test_keras3_load_layer_fine_tunes(optimizer: str, exports: dict[str, Path], registry: Registry,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    keras.utils.set_random_seed(0)
    if optimizer == "sgd_momentum":
        monkeypatch.setenv("BIT_KERAS_REGISTRY", str(registry.root))
        layer = bk_hub.load_layer(HANDLE, trainable=True)  # a registry handle
        opt = keras.optimizers.SGD(0.05, momentum=0.9)
    else:
        layer = bk_hub.load_layer(str(exports["feature_vector"]), trainable=True)
        opt = keras.optimizers.Adam(3e-3)
    assert isinstance(layer, keras.layers.TFSMLayer) and isinstance(layer, keras.layers.Layer)
    assert all(":" not in w.name for w in layer.weights)
    clf = keras.Sequential([keras.Input((None, None, 3)), layer,
                            keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros")])
    clf.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    _assert_fine_tunes(clf, layer)


def test_load_layer_wraps_a_call_only_reusable_savedmodel(tmp_path: Path) -> None:
    """A foreign Reusable SavedModel with only ``__call__(images, training)`` (no metadata.json)."""

    class Minimal(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.ones([3, 4]))

        @tf.function
        def __call__(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
            out = tf.reduce_mean(images, axis=[1, 2]) @ self.w
            return out + 1.0 if training else out

    module = Minimal()
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    module.__call__.get_concrete_function(spec, training=False)
    module.__call__.get_concrete_function(spec, training=True)
    tf.saved_model.save(module, str(tmp_path / "minimal"))

    layer = bk_hub.load_layer(str(tmp_path / "minimal"), trainable=True)
    x = images(size=8)
    expected = x.mean(axis=(1, 2)) @ np.ones((3, 4), "float32")
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(layer(x, training=True).numpy(), expected + 1.0, rtol=1e-6)
    assert [w.shape for w in layer.trainable_weights] == [(3, 4)]
