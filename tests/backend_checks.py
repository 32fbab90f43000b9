"""The model zoo's checks on one Keras backend, run by tests/test_backends.py in one subprocess per backend.

    KERAS_BACKEND=jax JAX_ENABLE_X64=1 python -m tests.backend_checks parity gradients files tensorflow_only

The checks named run in order in this one process (the backend's import and compiles paid once). Each raises
AssertionError with the numbers on failure; the process prints ``ok <check> <backend>`` after each check that
passed and ``FAILED <check> <backend>`` with the traceback after each that did not, goes on with the next, and
exits 1 when any failed.
The parity reference is tests/reference_bit.py (float64 NumPy, written from the BiT spec): nothing here compares
the model with itself. Only NumPy, Keras and the backend's own package are needed (no TensorFlow on JAX or
PyTorch), so the PyTorch checks run in a venv with torch and keras alone.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
from keras import ops

import bit_keras
from bit_keras.models.layers import GroupNorm, StandardizedConv2D, group_norm, standardize_kernel
from bit_keras.models.policy import dtype_policy
from bit_keras.models.presets import ModelInfo
from bit_keras.models.spec import ArchSpec
from tests import reference_bit
from tests.worker_loop import run_steps

BACKEND = keras.backend.backend()
TINY = ArchSpec((1, 2, 1, 1), 0.5)
R50 = (3, 4, 6, 3)
# The parity tolerances of tests/test_parity.py, the same on every backend.
LOGITS_TOL, PRE_TOL = 5e-5, 1e-4


def _images(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def _numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def _grads(fn, args: list[np.ndarray]) -> list[np.ndarray]:
    """d sum(fn(*args)) / d args by the backend's own autodiff (whatever gradient fn's ops define)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        xs = [tf.constant(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = tf.reduce_sum(fn(*xs))
        return [np.asarray(g) for g in tape.gradient(out, xs)]
    if BACKEND == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(lambda *xs: fn(*xs).sum(), argnums=tuple(range(len(args))))(*args)]
    torch = __import__("torch")  # tests/test_architecture.py keeps literal torch imports out of the package only
    xs = [torch.tensor(a, requires_grad=True) for a in args]
    fn(*xs).sum().backward()
    return [x.grad.numpy() for x in xs]


def _register_tiny() -> None:
    bit_keras.register_arch("test-R17x0.5", TINY)
    bit_keras.register_model(ModelInfo("test-tiny-bit", "test-R17x0.5", "random", 10, None, 64), overwrite=True)


def _call(model: keras.Model, images: np.ndarray):
    """``model(images)`` (inference). On JAX compiled whole, ``jax.jit`` of ``model.stateless_call`` as Keras
    compiles fit and predict: called eagerly, JAX compiles every op for every new shape, and this check's
    forward passes took ~30 s longer on 2 CPU cores."""
    if BACKEND != "jax":
        return model(images)
    import jax

    forward = jax.jit(lambda trainable, non_trainable, x: model.stateless_call(trainable, non_trainable, x)[0])
    return forward([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                   images)


def _compare(model, weights: dict, depths, images: np.ndarray, logits_tol: float, pre_tol: float) -> None:
    ref_pre, ref_logits = reference_bit.forward(weights, images, depths)
    got_pre = _numpy(_call(bit_keras.feature_extractor(model, ["pre_logits"]), images)["pre_logits"])
    got_logits = _numpy(_call(model, images))
    pre_err, logits_err = np.abs(got_pre - ref_pre).max(), np.abs(got_logits - ref_logits).max()
    print(f"  {model.name} {images.shape[1]}px {images.dtype}: logits {logits_err:.2e}, pre-logits {pre_err:.2e}")
    assert got_pre.shape == ref_pre.shape and got_logits.shape == ref_logits.shape
    assert logits_err < logits_tol and pre_err < pre_tol, (logits_err, pre_err)
    assert np.std(ref_logits) > 0.1 and np.std(ref_pre) > 0.01  # far from trivial outputs


def parity(tmp: Path) -> None:
    """R50x1 and a small custom configuration, official-layout checkpoints through create_model, against the
    float64 reference: float32 logits within 5e-5 and pre-logits within 1e-4; in float64 within 1e-9."""
    _register_tiny()
    tiny = reference_bit.random_checkpoint(TINY.depths, TINY.width, 10, seed=1)
    np.savez(tmp / "tiny.npz", **tiny)
    model = bit_keras.create_model("test-tiny-bit", weights=tmp / "tiny.npz")
    for size in (64, 93):
        _compare(model, tiny, TINY.depths, _images(3, size, seed=size), LOGITS_TOL, PRE_TOL)
    r50 = reference_bit.random_checkpoint(R50, 1, 1000, seed=2)
    np.savez(tmp / "BiT-S-R50x1.npz", **r50)
    model = bit_keras.create_model("BiT-S-R50x1", weights=tmp / "BiT-S-R50x1.npz")
    assert model.count_params() == bit_keras.get_model_info("BiT-S-R50x1").spec.param_count(1000)
    _compare(model, r50, R50, _images(2, 64, seed=64), LOGITS_TOL, PRE_TOL)
    # In float64 the gaps shrink by orders of magnitude, so those above are float32 rounding: to 1e-9 on
    # TensorFlow; to ~1e-6 on JAX and PyTorch, where Keras computes a float64 mean (the global average pool) in
    # float32 (keras.src.backend.common.dtypes maps 64-bit result types to 32-bit).
    float64_tol = 1e-9 if BACKEND == "tensorflow" else 5e-6
    with dtype_policy("float64"):
        model64 = bit_keras.create_model("test-tiny-bit", weights=tmp / "tiny.npz")
    _compare(model64, tiny, TINY.depths, _images(2, 71, seed=3).astype(np.float64), float64_tol, float64_tol)


def gradients(tmp: Path) -> None:
    """GroupNorm's hand-written gradient and StandardizedConv2D's against float64 autodiff of the textbook
    formulas (written here with keras.ops, differentiated by the backend), in float64 and float32."""
    rng = np.random.default_rng(7)
    failures = []
    # (6, 32) in groups of 8 values: with 2 values per group dx is a difference of near-equal terms, which float32
    # rounds to ~1e-3 of its largest value on any backend.
    for shape, groups in (((3, 9, 7, 64), 16), ((4, 5, 16), 16), ((6, 32), 4)):
        channels = shape[-1]
        x, gamma, beta = rng.normal(2.0, 3.0, shape), rng.normal(1.0, 0.5, channels), rng.normal(0, 0.5, channels)
        weights = rng.normal(size=shape)

        def textbook(x_, g_, b_):
            grouped = ops.reshape(x_, (*shape[:-1], groups, channels // groups))
            axes = tuple(range(1, len(shape) - 1)) + (len(shape),)
            n = 1.0 / (np.prod(shape[1:-1]) * (channels // groups))  # sums: Keras' mean on JAX is float32
            mean = ops.sum(grouped, axis=axes, keepdims=True) * n
            var = ops.sum(ops.square(grouped - mean), axis=axes, keepdims=True) * n
            y = ops.reshape((grouped - mean) / ops.sqrt(var + 1e-5), shape) * g_ + b_
            return y * ops.convert_to_tensor(weights.astype(_dtype(x_)))

        def ours(x_, g_, b_):
            return group_norm(x_, g_, b_, groups) * ops.convert_to_tensor(weights.astype(_dtype(x_)))

        want = _grads(textbook, [x, gamma, beta])
        got64 = _grads(ours, [x, gamma, beta])
        got32 = _grads(ours, [a.astype(np.float32) for a in (x, gamma, beta)])
        for name, w, g64, g32 in zip(("x", "gamma", "beta"), want, got64, got32):
            scale = np.abs(w).max()
            err64, err32 = np.abs(g64 - w).max() / scale, np.abs(g32 - w).max() / scale
            print(f"  GroupNorm {shape} d{name}: float64 {err64:.1e}, float32 {err32:.1e} (relative to the max)")
            failures += [] if g64.dtype == np.float64 and err64 < 1e-10 else [(shape, name, "float64", err64)]
            failures += [] if err32 < 2e-4 else [(shape, name, "float32", err32)]
    assert not failures, failures
    # Weight standardization: the layer's gradient (standardize_kernel's hand-written one) in float32 against
    # float64 autodiff of the formula.
    x, w = rng.normal(size=(2, 6, 6, 4)), rng.normal(0.3, 2.0, (3, 3, 4, 8))
    dy = rng.normal(size=(2, 6, 6, 8))

    def conv(x_, w_, standardize):
        k = standardize(w_)
        return ops.conv(x_, k, padding="same") * ops.convert_to_tensor(dy.astype(_dtype(x_)))

    def formula(w_):
        centred = w_ - ops.sum(w_, axis=(0, 1, 2), keepdims=True) / 36
        return centred / ops.sqrt(ops.sum(ops.square(centred), axis=(0, 1, 2), keepdims=True) / 36 + 1e-10)

    want = _grads(lambda x_, w_: conv(x_, w_, formula), [x, w])
    got = _grads(lambda x_, w_: conv(x_, w_, standardize_kernel), [x.astype(np.float32), w.astype(np.float32)])
    for name, a, b in zip(("x", "kernel"), want, got):
        err = np.abs(a - b).max() / np.abs(a).max()
        print(f"  StandardizedConv2D d{name}: float32 {err:.1e} (relative to the max)")
        assert err < 1e-4, (name, err)
    # and the layer itself uses it: the layer's kernel gradient equals the function's
    layer = StandardizedConv2D(8, 3, padding="same")
    layer.build((None, 6, 6, 4))
    layer.kernel.assign(w.astype(np.float32))
    np.testing.assert_allclose(_numpy(layer(x.astype(np.float32))), _numpy(ops.conv(
        x.astype(np.float32), standardize_kernel(w.astype(np.float32)), padding="same")), atol=1e-5)


def _dtype(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def files(tmp: Path) -> None:
    """A .keras file and an .npz file round trip; feature_extractor; the zoo's layer names and mixed precision."""
    _register_tiny()
    tiny = reference_bit.random_checkpoint(TINY.depths, TINY.width, 10, seed=4)
    np.savez(tmp / "tiny.npz", **tiny)
    model = bit_keras.create_model("test-tiny-bit", weights=tmp / "tiny.npz")
    images = _images(2, 48, seed=1)
    logits = _numpy(model(images))
    model.save(tmp / "model.keras")
    reloaded = keras.saving.load_model(tmp / "model.keras")
    assert isinstance(reloaded.get_layer("block2-unit01-a-standardized_conv2d"), StandardizedConv2D)
    np.testing.assert_array_equal(_numpy(reloaded(images)), logits)
    bit_keras.save_npz(model, tmp / "again.npz")
    with np.load(tmp / "again.npz") as saved:
        assert sorted(saved.files) == sorted(tiny)
        for key in tiny:
            np.testing.assert_array_equal(saved[key], tiny[key])
    features = bit_keras.feature_extractor(model)(images)
    assert [tuple(features[k].shape) for k in ("block1", "pre_logits")] == [(2, 12, 12, 128), (2, 1024)]
    with dtype_policy("mixed_bfloat16"):
        mixed = bit_keras.create_model("test-tiny-bit", weights=tmp / "tiny.npz")
    gn = next(layer for layer in mixed.layers if isinstance(layer, GroupNorm))
    assert gn.compute_dtype == "bfloat16" and gn.gamma.dtype == "float32"
    err = np.abs(_numpy(mixed(images)).astype(np.float32) - logits).max()
    print(f"  mixed_bfloat16 logits vs float32: {err:.2e}")
    assert err < 0.05 * np.abs(logits).max(), err


def torch_program(tmp: Path) -> None:
    """On PyTorch the zoo model is a torch.nn.Module: it takes and returns torch tensors, sits inside a torch
    module, and its parameters train under a torch optimizer."""
    torch = __import__("torch")
    _register_tiny()
    np.savez(tmp / "tiny.npz", **reference_bit.random_checkpoint(TINY.depths, TINY.width, 10, seed=5))
    backbone = bit_keras.create_model("test-tiny-bit", weights=tmp / "tiny.npz", num_classes=None)
    assert isinstance(backbone, torch.nn.Module)

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.head = backbone, torch.nn.Linear(1024, 3)

        def forward(self, x):
            return self.head(self.backbone(x))

    net = Classifier()
    x = torch.from_numpy(_images(4, 32, seed=2))
    with torch.no_grad():
        features = backbone(x)
        out = net(x)
    assert isinstance(features, torch.Tensor) and tuple(out.shape) == (4, 3)
    ref_pre, _ = reference_bit.forward(dict(np.load(tmp / "tiny.npz")), x.numpy(), TINY.depths)
    assert np.abs(features.numpy() - ref_pre).max() < PRE_TOL
    n_keras = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights)
    assert sum(p.numel() for p in backbone.parameters()) == n_keras
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    before = backbone.get_layer("block1-unit01-a-standardized_conv2d").kernel.numpy().copy()
    labels = torch.tensor([0, 1, 2, 0])
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    after = backbone.get_layer("block1-unit01-a-standardized_conv2d").kernel.numpy()
    print(f"  torch SGD losses {losses}")
    assert losses[-1] < losses[0] and np.abs(after - before).max() > 0


def tensorflow_only(tmp: Path) -> None:
    """What is TensorFlow by nature refuses another backend with a BackendError naming the backend to use."""
    from bit_keras.errors import BackendError

    images, labels = _images(8, 16, seed=0), np.arange(8) % 2
    calls = {
        "pre-training": lambda: bit_keras.pretrain("BiT-tiny", (images, labels), epochs=1, progress=False),
        "SavedModel export": lambda: __import__("hub_export").export(
            bit_keras.create_model("BiT-tiny", num_classes=None), tmp / "export", arch="R26x0.25"),
        "loading a SavedModel": lambda: bit_keras.load_layer(str(tmp / "nowhere")),
    }
    if BACKEND == "torch":
        calls["fine-tuning"] = lambda: bit_keras.transfer("BiT-tiny", (images, labels), steps=1, progress=False)
    for what, call in calls.items():
        try:
            call()
        except BackendError as err:
            message = str(err)
            assert "KERAS_BACKEND=" in message and BACKEND in message, message
            print(f"  {what}: {message.splitlines()[0][:100]}")
        else:
            raise AssertionError(f"{what} ran on {BACKEND}")


CHECKS = {f.__name__: f for f in (parity, gradients, files, torch_program, tensorflow_only)}


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in CHECKS]
    assert argv and not unknown, f"unknown check(s) {unknown}; choose from {list(CHECKS)}"
    if BACKEND == "jax":
        import jax

        assert jax.config.jax_enable_x64, "run the JAX checks with JAX_ENABLE_X64=1 (the float64 reference)"

    def check(name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            CHECKS[name](Path(tmp))

    return run_steps(((name, functools.partial(check, name)) for name in argv), BACKEND)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
