"""StandardizedConv2D and GroupNorm: formula, defaults, serialization, mixed precision."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from bit_keras.errors import ConfigError
from bit_keras.models.layers import GroupNorm, StandardizedConv2D, standardize_kernel
from bit_keras.models.policy import dtype_policy


def test_standardize_kernel_formula():
    w = np.random.default_rng(0).normal(3.0, 5.0, (3, 3, 4, 6)).astype(np.float64)
    got = np.asarray(standardize_kernel(w))
    mean = w.mean(axis=(0, 1, 2), keepdims=True)
    expected = (w - mean) / np.sqrt(w.var(axis=(0, 1, 2), keepdims=True) + 1e-10)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    np.testing.assert_allclose(got.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(got.var(axis=(0, 1, 2)), 1, rtol=1e-8)


def test_standardize_kernel_gradient_matches_autodiff_of_the_formula():
    """The hand-written backward pass of weight standardization against float64 autodiff of the textbook formula."""
    import tensorflow as tf

    rng = np.random.default_rng(11)
    w = rng.normal(0.3, 2.0, (3, 3, 5, 7))
    weights = rng.normal(size=w.shape)  # a loss that weighs every standardized value differently

    def textbook(w_):
        mean = tf.reduce_mean(w_, axis=(0, 1, 2), keepdims=True)
        return (w_ - mean) / tf.sqrt(tf.reduce_mean(tf.square(w_ - mean), axis=(0, 1, 2), keepdims=True) + 1e-10)

    def grad(fn, dtype):
        w_ = tf.constant(w.astype(dtype))
        with tf.GradientTape() as tape:
            tape.watch(w_)
            loss = tf.reduce_sum(fn(w_) * weights.astype(dtype))
        return np.asarray(tape.gradient(loss, w_), np.float64)

    want = grad(textbook, "float64")
    scale = np.abs(want).max()
    np.testing.assert_allclose(grad(standardize_kernel, "float64"), want, atol=1e-12 * scale)
    np.testing.assert_allclose(grad(standardize_kernel, "float32"), want, atol=1e-5 * scale)


def test_standardized_conv_standardizes_at_every_call():
    conv = StandardizedConv2D(2, 1)
    x = np.random.default_rng(1).normal(size=(1, 3, 3, 4)).astype(np.float32)
    conv(x)
    w = np.random.default_rng(2).normal(0.5, 3.0, (1, 1, 4, 2)).astype(np.float32)
    conv.kernel.assign(w)
    ws = (w - w.mean(axis=(0, 1, 2))) / np.sqrt(w.var(axis=(0, 1, 2)) + 1e-10)
    np.testing.assert_allclose(np.asarray(conv(x)), x @ ws[0, 0], rtol=1e-5, atol=1e-5)
    conv.kernel.assign(w * 10 + 7)  # scale and shift of the raw kernel change nothing
    np.testing.assert_allclose(np.asarray(conv(x)), x @ ws[0, 0], rtol=1e-4, atol=1e-4)
    assert conv.bias is None
    with pytest.raises(ConfigError, match="no bias"):
        StandardizedConv2D(2, 1, use_bias=True)


def test_group_norm_defaults_and_formula():
    gn = GroupNorm()
    assert gn.groups == 32 and gn.epsilon == 1e-5
    x = np.random.default_rng(3).normal(2.0, 0.01, (2, 3, 3, 64)).astype(np.float32)
    got = np.asarray(gn(x))
    g = x.astype(np.float64).reshape(2, 3, 3, 32, 2)
    expected = ((g - g.mean(axis=(1, 2, 4), keepdims=True))
                / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-5)).reshape(x.shape)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    # Keras' built-in GroupNormalization only matches with BiT's epsilon passed explicitly.
    keras_gn = keras.layers.GroupNormalization(groups=32, epsilon=1e-5)
    np.testing.assert_allclose(got, np.asarray(keras_gn(x)), atol=2e-3)
    assert np.abs(np.asarray(keras.layers.GroupNormalization(groups=32)(x)) - got).max() > 0.05


@pytest.mark.parametrize("shape", [(3, 9, 7, 64), (4, 5, 16), (6, 32)])
def test_group_norm_gradients_match_autodiff_of_the_textbook_layer(shape):
    """The hand-written backward pass against float64 autodiff of the textbook formula (5-D moments)."""
    import tensorflow as tf

    from bit_keras.models.layers import group_norm

    rng = np.random.default_rng(7)
    channels, groups = shape[-1], 16 if shape[-1] % 16 == 0 else 1
    x = rng.normal(2.0, 3.0, shape)
    gamma, beta = rng.normal(1.0, 0.5, channels), rng.normal(0.0, 0.5, channels)
    weights = rng.normal(size=shape)  # a loss that weighs every output differently

    def textbook(x_, g_, b_):
        grouped = tf.reshape(x_, (*shape[:-1], groups, channels // groups))
        axes = list(range(1, len(shape) - 1)) + [len(shape)]
        mean, var = tf.nn.moments(grouped, axes, keepdims=True)
        return tf.reshape((grouped - mean) / tf.sqrt(var + 1e-5), shape) * g_ + b_

    def grads(fn, dtype):
        xs = [tf.constant(v.astype(dtype)) for v in (x, gamma, beta)]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = tf.reduce_sum(fn(*xs) * weights.astype(dtype))
        return [np.asarray(g, np.float64) for g in tape.gradient(loss, xs)]

    want = grads(textbook, "float64")
    got64 = grads(lambda x_, g_, b_: group_norm(x_, g_, b_, groups), "float64")
    got32 = grads(lambda x_, g_, b_: group_norm(x_, g_, b_, groups), "float32")
    for name, w, g64, g32 in zip(("x", "gamma", "beta"), want, got64, got32):
        scale = np.abs(w).max()
        np.testing.assert_allclose(g64, w, atol=1e-10 * scale, err_msg=f"d/d{name} float64")
        np.testing.assert_allclose(g32, w, atol=1e-4 * scale, err_msg=f"d/d{name} float32")


def test_group_norm_rejects_indivisible_channels():
    with pytest.raises(ConfigError, match="48 channels cannot be split into 32 groups"):
        GroupNorm()(np.zeros((1, 2, 2, 48), np.float32))


def test_config_round_trip():
    conv = StandardizedConv2D(8, 3, strides=2, name="c")
    clone = StandardizedConv2D.from_config(conv.get_config())
    assert (clone.filters, clone.kernel_size, clone.strides, clone.epsilon) == (8, (3, 3), (2, 2), 1e-10)
    gn = GroupNorm.from_config(GroupNorm(groups=4, epsilon=1e-6).get_config())
    assert (gn.groups, gn.epsilon) == (4, 1e-6)


def test_keras_file_reloads_in_a_fresh_process(tmp_path):
    import bit_keras

    model = bit_keras.resnet_v2((1, 1, 1, 1), 0.5, num_classes=3)
    model.get_layer("head").bias.assign([1.0, 2.0, 3.0])
    x = np.random.default_rng(4).uniform(size=(1, 40, 40, 3)).astype(np.float32)
    path = tmp_path / "tiny.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)))
    code = (
        "import numpy as np, keras, bit_keras; "
        f"m = keras.saving.load_model(r'{path}'); "
        f"x = np.load(r'{tmp_path / 'x.npy'}'); y = np.load(r'{tmp_path / 'y.npy'}'); "
        "assert np.allclose(np.asarray(m(x)), y, atol=1e-6), 'outputs differ'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


@pytest.fixture
def mixed_bfloat16():
    with dtype_policy("mixed_bfloat16"):
        yield


def test_mixed_precision_keeps_statistics_in_float32(mixed_bfloat16):
    gn = GroupNorm(groups=2)
    # Values whose spread is invisible in bfloat16 after a large offset: statistics in bf16 would fail.
    x = (1000.0 + np.random.default_rng(5).normal(0, 1, (1, 4, 4, 4))).astype(np.float32)
    y = gn(x)
    assert y.dtype == "bfloat16" and gn.gamma.dtype == "float32"
    assert abs(float(np.std(np.asarray(y, np.float32))) - 1.0) < 0.05
    conv = StandardizedConv2D(2, 1)
    out = conv(np.ones((1, 2, 2, 3), np.float32))
    assert out.dtype == "bfloat16" and conv.kernel.dtype == "float32"
    # A raw kernel with a huge offset: standardizing the bf16-rounded kernel would lose its spread.
    w = (500.0 + np.random.default_rng(6).normal(0, 0.1, (1, 1, 3, 2))).astype(np.float32)
    conv.kernel.assign(w)
    ws = (w - w.mean(axis=(0, 1, 2))) / np.sqrt(w.var(axis=(0, 1, 2)) + 1e-10)
    x = np.random.default_rng(7).normal(size=(1, 2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(conv(x), np.float32), x @ ws[0, 0], atol=0.1)
