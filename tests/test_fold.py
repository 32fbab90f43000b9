"""bit_keras.fold_standardization: the Keras serving form (plain Conv2D, standardized kernels)."""

import keras
import numpy as np
import pytest

import bit_keras
from bit_keras.errors import ConfigError
from bit_keras.models.layers import StandardizedConv2D
from bit_keras.models.policy import dtype_policy


def _randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    """Non-trivial weights everywhere (the head starts at zero; GroupNorm at gamma 1, beta 0)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        v.assign(rng.normal(0.2, 0.5, shape).astype(v.dtype) if len(shape) > 1 else rng.normal(1.0, 0.2, shape).astype(v.dtype))
    return model


def test_folded_model_matches_and_has_no_standardization():
    model = _randomized(bit_keras.resnet_v2("R14x0.25", num_classes=7, groups=8, input_range=(0, 255)))
    folded = bit_keras.fold_standardization(model)
    x = np.random.default_rng(1).uniform(0, 255, (3, 40, 40, 3)).astype("float32")
    want = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(folded(x, training=False)), want, atol=2e-5 * np.abs(want).max())
    assert not any(isinstance(layer, StandardizedConv2D) for layer in folded.layers)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    conv = folded.get_layer("block1-unit01-a-standardized_conv2d").kernel.numpy()
    np.testing.assert_allclose(conv.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(conv.var(axis=(0, 1, 2)), 1, rtol=1e-4)
    # a copy: changing the source afterwards does not reach the folded model
    model.get_layer("head").kernel.assign(np.zeros_like(model.get_layer("head").kernel.numpy()))
    assert np.abs(np.asarray(folded(x)) - want).max() < 2e-5 * np.abs(want).max()


def test_folded_feature_model_and_mixed_precision_policy():
    with dtype_policy("mixed_bfloat16"):
        model = _randomized(bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8))
    folded = bit_keras.fold_standardization(model, arch=bit_keras.ArchSpec((1, 1, 1, 1), 0.25, 8))
    assert folded.dtype_policy.name == "mixed_bfloat16"
    assert folded.get_layer("block1-unit01-a-standardized_conv2d").kernel.dtype == "float32"
    x = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    got, want = (np.asarray(keras.ops.cast(m(x), "float32")) for m in (folded, model))
    assert got.shape == want.shape == (2, 512)
    np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())  # bf16 activations in both


def test_fold_names_what_is_wrong():
    model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, groups=8)
    with pytest.raises(ConfigError, match="does not match the model"):
        bit_keras.fold_standardization(model, arch="R50x1")
    inputs = keras.Input((8, 8, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ConfigError, match="not a BiT ResNet-v2 built by bit_keras"):
        bit_keras.fold_standardization(other)
