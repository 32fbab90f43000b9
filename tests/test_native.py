"""The native kernels (bit_keras.models.native), GroupNorm(+ReLU) and weight standardization: numbers, gradients,
where they run and where not.

The test session builds it once (tests/conftest.py sets BIT_KERAS_NATIVE_OPS=1, so a build failure fails here).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from bit_keras.errors import ConfigError, NativeOpsError
from bit_keras.models import native
from bit_keras.models.layers import GroupNorm, StandardizedConv2D, group_norm, standardize_kernel
from bit_keras.models.policy import dtype_policy, seeded_init
from bit_keras.models.resnet import resnet_v2
from bit_keras.train.step import TrainStep, make_optimizer


def textbook(x, gamma, beta, groups, relu):
    """GroupNorm from its definition (5-D moments, biased variance, eps 1e-5), then ReLU: autodiff gives the
    reference gradient."""
    shape = x.shape
    grouped = tf.reshape(x, (*shape[:-1], groups, shape[-1] // groups))
    axes = list(range(1, len(shape) - 1)) + [len(shape)]
    mean, var = tf.nn.moments(grouped, axes, keepdims=True)
    y = tf.reshape((grouped - mean) / tf.sqrt(var + 1e-5), shape) * gamma + beta
    return tf.nn.relu(y) if relu else y


def outputs_and_grads(fn, x, gamma, beta, weights, dtype):
    xs = [tf.constant(x, dtype), tf.constant(gamma, "float64" if dtype == "float64" else "float32"),
          tf.constant(beta, "float64" if dtype == "float64" else "float32")]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = fn(*xs)
        loss = tf.reduce_sum(tf.cast(y, "float64") * weights)
    return [np.asarray(v, np.float64) for v in (y, *tape.gradient(loss, xs))]


def test_the_kernel_is_used_here():
    assert native.usable("float32") and native.usable("bfloat16")
    assert not native.usable("float16") and not native.usable("float64")
    with native.native_ops(False):
        assert not native.usable("float32")
    assert native.usable("float32")  # restored after the block


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", [(3, 9, 7, 64), (2, 70, 40, 32), (4, 5, 16), (6, 32)])
def test_float32_kernel_and_gradient_match_the_float64_textbook(shape, relu):
    rng = np.random.default_rng(11)
    # (6, 32): no spatial axes, so 8 values per group (2 would make the float32 gradient ill-conditioned)
    groups = 4 if len(shape) == 2 else 16 if shape[-1] % 16 == 0 else 1
    x = rng.normal(2.0, 3.0, shape)
    gamma, beta = rng.normal(1.0, 0.5, shape[-1]), rng.normal(0.0, 0.5, shape[-1])
    weights = rng.normal(size=shape)
    want = outputs_and_grads(lambda a, g, b: textbook(a, g, b, groups, relu), x, gamma, beta, weights, "float64")
    got = outputs_and_grads(lambda a, g, b: native.group_norm_relu(a, g, b, groups, 1e-5, relu),
                            x, gamma, beta, weights, "float32")
    for name, w, g in zip(("y", "dx", "dgamma", "dbeta"), want, got):
        np.testing.assert_allclose(g, w, atol=2e-5 * np.abs(w).max(), err_msg=name)
    if relu:
        assert (got[0] == 0).mean() > 0.2  # the ReLU did clip


def test_bfloat16_kernel_matches_the_keras_ops_path_on_the_same_bf16_input():
    """bf16 in and out, float32 statistics: the same numbers as casting to float32, normalizing, casting back."""
    rng = np.random.default_rng(2)
    shape = (2, 12, 10, 64)
    x, weights = rng.normal(1.0, 2.0, shape), rng.normal(size=shape)
    gamma, beta = rng.normal(1.0, 0.5, 64), rng.normal(0.0, 0.5, 64)
    got = outputs_and_grads(lambda a, g, b: native.group_norm_relu(a, g, b, 16, 1e-5, True),
                            x, gamma, beta, weights, "bfloat16")

    def keras_ops(a, g, b):
        return tf.cast(tf.nn.relu(group_norm(tf.cast(a, "float32"), g, b, 16, 1e-5)), "bfloat16")

    want = outputs_and_grads(keras_ops, x, gamma, beta, weights, "bfloat16")
    assert got[0].dtype == np.float64 and want[0].shape == got[0].shape
    # one bf16 rounding apart at most (the float32 results before the final cast agree to ~1e-6)
    np.testing.assert_allclose(got[0], want[0], atol=2 ** -7 * np.abs(want[0]).max())
    assert (got[0] != want[0]).mean() < 0.01
    np.testing.assert_allclose(got[1], want[1], atol=2 ** -6 * np.abs(want[1]).max())
    for name, w, g in zip(("dgamma", "dbeta"), want[2:], got[2:]):  # float32 sums of the same bf16 values
        np.testing.assert_allclose(g, w, atol=1e-4 * np.abs(w).max(), err_msg=name)


@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (1, 1, 64, 256), (7, 7, 3, 64), (3, 3, 64, 130), (1, 1, 5, 70)])
def test_standardization_and_its_gradient_match_float64(shape):
    rng = np.random.default_rng(3)
    w, weights = rng.normal(0.3, 2.0, shape), rng.normal(size=shape)

    def run(fn, dtype, out):
        x = tf.constant(w, dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x, out)
            loss = tf.reduce_sum(tf.cast(y, "float64") * weights)
        return np.asarray(y, np.float64), np.asarray(tape.gradient(loss, x), np.float64)

    want = run(lambda x, out: standardize_kernel(x, 1e-10), "float64", None)
    for out, tol in (("float32", 1e-5), ("bfloat16", 2 ** -7)):
        got = run(lambda x, o: native.standardize(x, 1e-10, o), "float32", out)
        for name, a, b in zip(("w_hat", "dw"), want, got):
            np.testing.assert_allclose(b, a, atol=tol * np.abs(a).max(), err_msg=f"{name} {out}")
    w_hat = native.standardize(tf.constant(w, "float32"), 1e-10, "bfloat16")
    assert w_hat.dtype == tf.bfloat16


def test_standardization_stays_exact_when_the_mean_dwarfs_the_spread():
    w = (1e3 + np.random.default_rng(6).normal(0, 0.05, (3, 3, 32, 8))).astype("float32")
    got = np.asarray(native.standardize(w, 1e-10, "float32"), np.float64)
    want = np.asarray(standardize_kernel(w.astype("float64"), 1e-10))
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_statistics_stay_exact_when_the_mean_dwarfs_the_spread():
    """One-pass sums would cancel at |mean| / std = 1e4; the kernel's per-sample shift keeps them exact."""
    x = (1e4 + np.random.default_rng(4).normal(0, 1, (2, 16, 16, 64))).astype("float32")
    y = np.asarray(native.group_norm_relu(x, np.ones(64, "float32"), np.zeros(64, "float32"), 32, 1e-5, False))
    g = y.reshape(2, 256, 32, 2)
    np.testing.assert_allclose(g.std(axis=(1, 3)), 1.0, atol=2e-3)
    np.testing.assert_allclose(g.mean(axis=(1, 3)), 0.0, atol=2e-3)


def test_results_do_not_depend_on_the_thread_count():
    x = np.random.default_rng(5).normal(size=(3, 33, 17, 128)).astype("float32")
    args = (np.ones(128, "float32"), np.zeros(128, "float32"), 32, 1e-5, True)
    first = np.asarray(native.group_norm_relu(x, *args))
    code = ("import numpy as np, tensorflow as tf; tf.config.threading.set_intra_op_parallelism_threads(1); "
            "from bit_keras.models import native; import sys; x = np.load(sys.argv[1]); "
            "np.save(sys.argv[2], np.asarray(native.group_norm_relu(x, np.ones(128, 'float32'), "
            "np.zeros(128, 'float32'), 32, 1e-5, True)))")
    tmp = os.environ["BIT_KERAS_NATIVE_CACHE"]
    np.save(os.path.join(tmp, "x.npy"), x)
    subprocess.run([sys.executable, "-c", code, os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")],
                   check=True, timeout=300, capture_output=True)
    np.testing.assert_array_equal(np.load(os.path.join(tmp, "y.npy")), first)


def _op_types(fn, *args) -> set[str]:
    graph = tf.function(fn).get_concrete_function(*args).graph
    types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        types |= {node.op for node in function.node_def}
    return types


def tiny(num_classes=4):
    with seeded_init(0):
        return resnet_v2((1, 1, 1, 1), width=0.25, num_classes=num_classes, groups=8)


def test_the_model_runs_the_kernel_and_matches_the_keras_ops_path():
    model = tiny()
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, 40, 40, 3)), "float32")
    assert "BitGroupNorm" in _op_types(lambda t: model(t), x)
    features = keras.Model(model.input, model.get_layer("pre_logits").output)  # the head is zero
    with native.native_ops(False):
        assert "BitGroupNorm" not in _op_types(lambda t: model(t, training=True), x)
        want = np.asarray(features(x))
    got = np.asarray(features(x))
    np.testing.assert_allclose(got, want, atol=5e-5 * np.abs(want).max())
    # one GroupNorm layer per norm+ReLU: no separate ReLU layers in a BiT network
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)]


def test_training_steps_match_with_and_without_the_kernel():
    rng = np.random.default_rng(1)
    data = (rng.uniform(0, 1, (8, 32, 32, 3)).astype("float32"), tf.one_hot(rng.integers(0, 4, 8), 4))

    def train(enabled):
        with native.native_ops(enabled):
            model = tiny()
            for v in model.weights:
                if v.path.startswith("head"):
                    v.assign(np.random.default_rng(3).normal(0, 0.1, tuple(v.shape)).astype("float32"))
            step = TrainStep(model, make_optimizer(model, momentum=0.9), tf.distribute.get_strategy(),
                             batch_size=8, batch_split=2, remat=False, weight_decay=1e-3)
            step.optimizer.learning_rate.assign(0.01)  # a stable run: float32 rounding is not amplified
            losses = [float(step(data)) for _ in range(3)]
        return model, losses

    fast, fast_losses = train(True)
    slow, slow_losses = train(False)
    # float32 rounding apart (a wrong gradient term would move them by orders of magnitude more)
    np.testing.assert_allclose(fast_losses, slow_losses, rtol=2e-5)
    for a, b in zip(slow.weights, fast.weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=5e-6, err_msg=a.path)
    assert abs(fast_losses[-1] - fast_losses[0]) > 1e-4  # the steps did train


def test_gradient_graph_uses_the_native_backward():
    model = tiny()
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)), "float32")

    def loss_grads(t):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(t, training=True) ** 2)
        return tape.gradient(loss, model.trainable_variables)

    types = _op_types(loss_grads, x)
    assert {"BitGroupNorm", "BitGroupNormGrad", "BitStandardize", "BitStandardizeGrad"} <= types


def test_mixed_bfloat16_model_runs_bf16_through_the_kernel():
    with dtype_policy("mixed_bfloat16"):
        model = tiny()
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, 40, 40, 3)), "float32")
    graph = tf.function(lambda t: model(t)).get_concrete_function(x).graph
    for kind in ("BitGroupNorm", "BitStandardize"):  # bf16 out of both: no float32 copies, no casts
        kernels = [op for op in graph.get_operations() if op.type == kind]
        assert kernels and all(op.get_attr("T") == tf.bfloat16 for op in kernels), kind
    convs = [layer for layer in model.layers if isinstance(layer, StandardizedConv2D)]
    assert convs[0].standardized_kernel().dtype == "float32"  # batch_split's precomputed kernels stay float32
    features = keras.Model(model.input, model.get_layer("pre_logits").output)
    f_fast = np.asarray(features(x), np.float32)
    with native.native_ops(False):
        f_slow = np.asarray(features(x), np.float32)
    np.testing.assert_allclose(f_fast, f_slow, atol=0.03 * np.abs(f_slow).max())


def test_xla_float16_and_float64_fall_back_to_keras_ops():
    model = tiny()
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)), "float32")
    features = keras.Model(model.input, model.get_layer("pre_logits").output)
    jitted = tf.function(lambda t: features(t), jit_compile=True)
    np.testing.assert_allclose(np.asarray(jitted(x)), np.asarray(features(x)), atol=1e-4)
    with dtype_policy("mixed_float16"):
        half = tiny()
    with dtype_policy("float64"):
        double = tiny()
    for m in (half, double):
        assert not {"BitGroupNorm", "BitStandardize"} & _op_types(lambda t: m(t), x)


def test_saved_models_never_contain_the_kernel(tmp_path):
    """A SavedModel must load where bit-keras is absent: Keras' model.export, tf.saved_model.save and
    hub_export.export all trace the Keras-ops GroupNorm, and the exports load in a process without bit_keras."""
    import hub_export

    model = tiny()
    x = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    model(x)  # traced and run with the kernel first: the exports must still not pick it up
    model.export(str(tmp_path / "keras_export"), verbose=False)
    tf.saved_model.save(model, str(tmp_path / "tf_save"))
    hub_export.export(model, tmp_path / "hub", kind="classifier", labels=list("abcd"))
    for name in ("keras_export", "tf_save", "hub"):
        data = (tmp_path / name / "saved_model.pb").read_bytes()
        assert b"BitGroupNorm" not in data and b"BitStandardize" not in data, name
    code = ("import sys, numpy as np, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); "
            "print(m.serve(np.zeros((1, 32, 32, 3), 'float32')).shape); "
            "assert not [k for k in sys.modules if k.startswith('bit_keras')]")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "keras_export")], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0 and "(1, 4)" in result.stdout, result.stderr[-2000:]


def test_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv(native.ENV, "0")
    assert native.mode() == "off" and not native.usable("float32") and native.library() is None
    monkeypatch.setenv(native.ENV, "sometimes")
    with pytest.raises(ConfigError, match="BIT_KERAS_NATIVE_OPS='sometimes'.*auto.*0.*1"):
        native.mode()


def test_a_failed_build_names_the_compiler_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    with pytest.raises(NativeOpsError, match="no-such-c\\+\\+.*apt-get install g\\+\\+.*BIT_KERAS_NATIVE_OPS=0"):
        native.build(tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written is left

    # auto mode: one warning, then the Keras-ops path with the same numbers
    code = ("import numpy as np, keras, bit_keras; from bit_keras.models import native; "
            "from bit_keras.models.layers import GroupNorm; "
            "y = GroupNorm(2, activation='relu')(np.random.rand(1, 4, 4, 4).astype('float32')); "
            "print('usable', native.usable('float32'), float(np.asarray(y).min()) >= 0)")
    env = {**os.environ, "CXX": str(tmp_path / "no-such-c++"), native.ENV: "auto",
           native.CACHE_ENV: str(tmp_path / "fresh")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usable False True" in result.stdout
    assert result.stderr.count("could not build bit-keras's native GroupNorm and weight-standardization kernels") == 1
    # required mode: the layer call raises instead
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**env, native.ENV: "1"})
    assert result.returncode != 0 and "NativeOpsError" in result.stderr


def test_group_norm_activation_is_validated_and_saved():
    with pytest.raises(ConfigError, match="activation='gelu'.*None or 'relu'"):
        GroupNorm(activation="gelu")
    layer = GroupNorm(4, activation="relu")
    assert GroupNorm.from_config(layer.get_config()).activation == "relu"
    assert GroupNorm.from_config({k: v for k, v in GroupNorm(4).get_config().items()}).activation is None
