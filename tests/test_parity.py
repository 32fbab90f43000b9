"""Numerical parity with BiT: official-layout checkpoints through create_model vs a float64 NumPy reference."""

import numpy as np
import pytest

import bit_keras
from bit_keras.models.spec import ArchSpec
from bit_keras.models.policy import dtype_policy
from bit_keras.models.presets import ModelInfo
from tests import reference_bit

TINY = ArchSpec((1, 2, 1, 1), 0.5)


@pytest.fixture(scope="module")
def tiny_entry():
    from bit_keras.models.presets import PRESETS
    from bit_keras.models.spec import ARCHS

    bit_keras.register_arch("test-R17x0.5", TINY)
    yield bit_keras.register_model(
        ModelInfo("test-tiny-bit", "test-R17x0.5", "random", 10, None, 64), overwrite=True
    )
    # registered for this module only: ArchSpec.describe() names a registered shape by its name everywhere else
    PRESETS.pop("test-tiny-bit", None)
    ARCHS.pop("test-R17x0.5", None)


def _images(n, size, seed):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


def _check(model, weights, depths, images, logits_tol=5e-5, pre_tol=1e-4):
    ref_pre, ref_logits = reference_bit.forward(weights, images, depths)
    features = bit_keras.feature_extractor(model, ["pre_logits"])
    got_pre = np.asarray(features(images)["pre_logits"])
    got_logits = np.asarray(model(images))
    assert got_pre.shape == ref_pre.shape and got_logits.shape == ref_logits.shape
    assert np.max(np.abs(got_pre - ref_pre)) < pre_tol
    assert np.max(np.abs(got_logits - ref_logits)) < logits_tol
    # The comparison is meaningful: the outputs are far from trivial.
    assert np.std(ref_logits) > 0.1 and np.std(ref_pre) > 0.01


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_entry, tmp_path_factory):
    weights = reference_bit.random_checkpoint(TINY.depths, TINY.width, 10, seed=1)
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    np.savez(path, **weights)
    return weights, path


@pytest.mark.parametrize("size", [64, 93])
def test_tiny_config_matches_reference(tiny_checkpoint, size):
    weights, path = tiny_checkpoint
    model = bit_keras.create_model("test-tiny-bit", weights=str(path))
    _check(model, weights, TINY.depths, _images(3, size, seed=size))


def test_input_range_minus_one_to_one_feeds_raw_range(tiny_checkpoint):
    _, path = tiny_checkpoint
    model = bit_keras.create_model("test-tiny-bit", weights=path)
    raw = bit_keras.create_model("test-tiny-bit", weights=path, input_range=(-1, 1))
    images = _images(2, 64, seed=5)
    np.testing.assert_allclose(np.asarray(raw(images * 2 - 1)), np.asarray(model(images)), atol=2e-5)
    assert "rescale_to_bit_range" not in [layer.name for layer in raw.layers]
    assert "rescale_to_bit_range" in [layer.name for layer in model.layers]


def test_new_head_is_zero_and_feature_model_matches(tiny_checkpoint):
    weights, path = tiny_checkpoint
    images = _images(2, 64, seed=7)
    fresh = bit_keras.create_model("test-tiny-bit", weights=path, num_classes=5)
    assert np.all(np.asarray(fresh(images)) == 0.0)
    assert np.all(fresh.get_layer("head").kernel.numpy() == 0.0)
    features = bit_keras.create_model("test-tiny-bit", weights=path, num_classes=None)
    ref_pre, _ = reference_bit.forward(weights, images, TINY.depths)
    assert features.output_shape == (None, 1024) and np.std(ref_pre) > 0.01
    assert np.max(np.abs(np.asarray(features(images)) - ref_pre)) < 1e-4


@pytest.fixture
def float64_policy():
    with dtype_policy("float64"):
        yield


def test_tiny_float64_model_equals_reference_to_rounding(tiny_checkpoint, float64_policy):
    """In float64 the Keras model and the reference agree to ~1e-12: the float32 gaps are rounding only."""
    weights, path = tiny_checkpoint
    model = bit_keras.create_model("test-tiny-bit", weights=path)
    images = _images(2, 71, seed=3).astype(np.float64)
    _, ref_logits = reference_bit.forward(weights, images, TINY.depths)
    assert model.get_layer("block2-unit02-b-group_norm").compute_dtype == "float64"
    assert np.std(ref_logits) > 0.1 and np.max(np.abs(np.asarray(model(images)) - ref_logits)) < 1e-9


# --------------------------------------------------------------------------- full size: R50x1 (slow tier)


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory):
    weights = reference_bit.random_checkpoint((3, 4, 6, 3), 1, 1000, seed=2)
    path = tmp_path_factory.mktemp("r50") / "BiT-S-R50x1.npz"
    np.savez(path, **weights)
    return weights, path


@pytest.fixture(scope="module")
def r50_model(r50_checkpoint):
    return bit_keras.create_model("BiT-S-R50x1", weights=r50_checkpoint[1])


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, 97])
def test_r50x1_matches_reference(r50_checkpoint, r50_model, size):
    weights, _ = r50_checkpoint
    _check(r50_model, weights, (3, 4, 6, 3), _images(2, size, seed=size))


@pytest.mark.slow
def test_r50x1_float64_model_equals_reference_to_rounding(r50_checkpoint, float64_policy):
    """The same for the full-size R50x1."""
    weights, path = r50_checkpoint
    model = bit_keras.create_model("BiT-S-R50x1", weights=path)
    images = _images(2, 71, seed=3).astype(np.float64)
    _, ref_logits = reference_bit.forward(weights, images, (3, 4, 6, 3))
    assert model.get_layer("block3-unit02-b-group_norm").compute_dtype == "float64"
    assert np.max(np.abs(np.asarray(model(images)) - ref_logits)) < 1e-9
