"""The fine-tuning recipe on a tiny BiT: output files, exact resume, batch_split, NaN stop, mixed precision,
distribution, and the ``transfer`` / ``evaluate`` CLI. Transfer from upstream weights and from a hub handle, and
that it beats scratch, is the end-to-end story (tests/test_story.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

import bit_keras
from bit_keras.errors import ConfigError, DataError, TrainingDivergedError
from bit_keras.models.native import native_ops
from bit_keras.recipes.transfer import scale_schedule, transfer

from tests.tiny_transfer import FAST, TINY, register_tiny
from tests.tiny_transfer import images as _images


@pytest.fixture(scope="module", autouse=True)
def tiny_zoo_entry():
    register_tiny()




def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.weights]


def _assert_same_weights(a: keras.Model, b: keras.Model, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    wa, wb = _weights(a), _weights(b)
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------- schedule


def test_scale_schedule_keeps_proportions_and_ends_at_steps():
    assert scale_schedule([100, 200, 300, 400, 500], 30) == (6, 12, 18, 24, 30)
    assert scale_schedule([500, 3000, 6000, 9000, 10_000], 1000) == (50, 300, 600, 900, 1000)
    assert scale_schedule([100, 200, 300, 400, 500], 1) == (0, 1)
    with pytest.raises(ConfigError, match="steps"):
        scale_schedule([100, 500], 0)


# ------------------------------------------------------------------------------------------------- outputs


def test_a_run_writes_its_files_and_they_agree_with_the_result(tmp_path):
    data, validation = _images(), _images(16, seed=1)
    run = tmp_path / "run"
    result = transfer(TINY, data, examples_per_class=5, steps=10, base_lr=0.01, seed=0, validation=validation,
                      output_dir=run, **FAST)
    assert result.dataset_info.num_examples == 20  # 5 of each of the 4 classes

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(result.metrics["top1"]) and metrics["top1"] is not None
    assert metrics["steps"] == 10 and metrics["images_per_s"] > 0
    record = json.loads((run / "hyperparams.json").read_text())
    assert record["hyperparams"]["schedule"] == [2, 4, 6, 8, 10]  # the HyperRule's, scaled to 10 steps
    assert record["hyperparams"]["base_lr"] == 0.01 and record["hyperparams"]["crop"] == 16
    assert record["dataset"]["num_examples"] == 20 and record["dataset"]["num_classes"] == 4
    assert any("20 examples" in line for line in record["why"])
    history = json.loads((run / "history.json").read_text())
    assert history["step"] == list(range(1, 11)) and len(history["lr"]) == 10
    assert history["lr"][0] == 0.0 and max(history["lr"]) == pytest.approx(0.01)  # linear warm-up, then decays
    assert history["val_step"] == [10]

    reloaded = keras.models.load_model(run / "model.keras")
    probe = data[0][:4].astype("float32") / 255
    np.testing.assert_allclose(reloaded(probe), result.model(probe), rtol=1e-5, atol=1e-5)
    events = [f for f in os.listdir(run / "tensorboard") if "tfevents" in f]
    assert events
    records = tf.compat.v1.train.summary_iterator(str(run / "tensorboard" / events[0]))
    tags = {v.tag for e in records for v in e.summary.value}
    assert {"train/loss", "train/lr", "train/images_per_s", "val/top1", "val/top5"} <= tags
    assert not [f for f in os.listdir(run) if f.endswith(".tmp") or ".tmp." in f]


# ------------------------------------------------------------------------------------------------ resume


class _Stop(Exception):
    pass


@pytest.mark.slow  # ~10-20 s: runs in the slow tier
def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    data = _images()
    # 48 examples, batch 8: 12 steps cross an epoch boundary (reshuffle), with flips and mixup on.
    kw = dict(FAST, steps=12, checkpoint_every=4, seed=3, base_lr=0.05, mixup_alpha=0.4)
    full = transfer(TINY, data, output_dir=tmp_path / "full", **kw)

    def stop_at_7(step, logs):
        if step == 7:
            raise _Stop

    with pytest.raises(_Stop):
        transfer(TINY, data, output_dir=tmp_path / "resumed", on_step=stop_at_7, **kw)
    assert tf.train.latest_checkpoint(str(tmp_path / "resumed" / "checkpoints")).endswith("ckpt-4")
    resumed = transfer(TINY, data, output_dir=tmp_path / "resumed", **kw)

    _assert_same_weights(full.model, resumed.model)
    assert resumed.history["step"] == list(range(1, 13))
    np.testing.assert_allclose(resumed.history["loss"], full.history["loss"], rtol=1e-4)

    # A finished run started again does nothing new; other settings on its folder are refused.
    again = transfer(TINY, data, output_dir=tmp_path / "resumed", **kw)
    _assert_same_weights(full.model, again.model)
    with pytest.raises(ConfigError, match="different run"):
        transfer(TINY, data, output_dir=tmp_path / "resumed", **{**kw, "base_lr": 0.01})


# ----------------------------------------------------------------------------------------- batch_split


BATCH_SPLIT = dict(FAST, steps=4, seed=1, base_lr=0.05, mixup_alpha=0.4)


@pytest.mark.slow
def test_batch_split_gives_the_same_update_as_one_full_batch():
    data = _images()
    whole = transfer(TINY, data, **BATCH_SPLIT)
    split = transfer(TINY, data, batch_split=4, **BATCH_SPLIT)
    _assert_same_weights(whole.model, split.model)
    np.testing.assert_allclose(split.history["loss"], whole.history["loss"], rtol=1e-5)


def test_batch_split_must_divide_the_batch():
    with pytest.raises(ConfigError, match="batch_split"):
        transfer(TINY, _images(), batch_split=3, **BATCH_SPLIT)


@pytest.mark.slow
def test_xla_with_micro_batches_gives_the_same_update_as_one_full_batch():
    data = _images()
    # XLA cannot call the native CPU kernels (bit_keras.models.native): compare with the same Keras-ops layers
    # (the native kernels round differently, and few-shot steps amplify it: 8e-4 on a kernel in one CI run).
    with native_ops(False):
        whole = transfer(TINY, data, **BATCH_SPLIT)
    xla = transfer(TINY, data, batch_split=2, jit_compile=True, **BATCH_SPLIT)
    _assert_same_weights(whole.model, xla.model, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(xla.history["loss"], whole.history["loss"], rtol=1e-4)


# -------------------------------------------------------------------------------------------- divergence


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = _images()
    with pytest.raises(TrainingDivergedError) as info:
        transfer(TINY, data, output_dir=tmp_path, steps=40, checkpoint_every=2, base_lr=1e30, seed=0, **FAST)
    err = info.value
    assert err.step >= 2 and err.lr > 0
    assert f"step {err.step}" in str(err) and "learning rate" in str(err)
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest is not None and err.checkpoint == latest
    saved_step = int(latest.rsplit("-", 1)[1])
    assert saved_step <= err.step
    reader = tf.train.load_checkpoint(latest)
    for name, _ in tf.train.list_variables(latest):
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name
    assert not (tmp_path / "model.keras").exists()


# ----------------------------------------------------------------------------------- models and devices


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_and_restores_the_policy(policy):
    before = keras.config.dtype_policy().name
    result = transfer(TINY, _images(), steps=3, mixed_precision=policy, validation=_images(8, seed=1), **FAST)
    assert keras.config.dtype_policy().name == before
    assert result.model.get_layer("head").dtype_policy.name == policy
    assert all(np.isfinite(result.history["loss"])) and result.metrics["top1"] is not None
    assert result.model.get_layer("head").kernel.dtype == "float32"  # float32 master weights


def test_keras_model_inputs_get_a_zero_head_of_the_right_size():
    data = _images(classes=3)
    classifier = bit_keras.create_model(TINY, num_classes=7)
    result = transfer(classifier, data, steps=2, **FAST)
    assert result.model.output_shape == (None, 3)
    features = bit_keras.create_model(TINY, num_classes=None)
    result = transfer(features, data, steps=2, **FAST)
    assert result.model.output_shape == (None, 3)
    assert result.model.get_layer("head").kernel.shape == (512, 3)
    with pytest.raises(ConfigError, match="feature vector"):
        spatial = keras.Model(features.input, features.get_layer("block4").output)
        transfer(spatial, data, steps=1, **FAST)


_TWO_REPLICAS = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from bit_keras.recipes.transfer import transfer
from tests.tiny_transfer import FAST, TINY, register_tiny
from tests.tiny_transfer import images as _images
register_tiny()
kw = dict(FAST, steps=3, seed=2, base_lr=0.05, batch_split=2, mixup_alpha=0.4)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
mirrored = transfer(TINY, _images(), strategy=strategy, **kw)
default = transfer(TINY, _images(), **kw)
np.testing.assert_allclose(mirrored.history["loss"], default.history["loss"], rtol=1e-5)
for a, b in zip(mirrored.model.weights, default.model.weights):
    np.testing.assert_allclose(np.asarray(a.numpy()), np.asarray(b.numpy()), rtol=1e-4, atol=1e-5)
print("SAME")
"""


@pytest.mark.slow
def test_two_replica_mirrored_strategy_matches_one_device():
    """Global-batch loss averaging: 2 replicas x 2 micro-batches give the single-device update."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "SAME" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_tfds_split_name_as_validation():
    with tfds.testing.mock_data(num_examples=16):
        result = transfer(TINY, "cifar10", validation="test", steps=2, **FAST)
    assert result.dataset_info.num_classes == 10
    assert result.metrics["val_examples"] == 16


def test_bad_options_are_named():
    data = _images()
    with pytest.raises(ConfigError, match="mixed_precision"):
        transfer(TINY, data, mixed_precision="float16", **FAST)
    with pytest.raises(ConfigError, match="dataset"):
        transfer(TINY, **FAST)
    with pytest.raises(DataError, match="is a split name, but the training data is"):
        transfer(TINY, data, validation="test", steps=1, **FAST)


# --------------------------------------------------------------------------------------------------- CLI


def _write_folder(root, classes=("cat", "dog", "fox"), per_class=5, size=16, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        os.makedirs(root / name)
        for i in range(per_class):
            pixels = np.clip(rng.normal(60 + 70 * c, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_cli_transfer_then_evaluate(tmp_path, capsys, monkeypatch):
    from bit_keras import cli

    if "bit_keras.cli.transfer" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "bit_keras.cli.transfer"))
    data, run = tmp_path / "images", tmp_path / "run"
    _write_folder(data)
    rc = cli.main([
        "transfer", "--model", TINY, "--weights", "none", "--dataset", str(data), "--examples-per-class", "4",
        "--validation", str(data), "--output", str(run), "--batch-size", "6", "--batch-split", "2",
        "--steps", "4", "--base-lr", "0.01", "--resize", "20", "--crop", "16", "--no-flip", "--seed", "1", "--quiet",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "resize 20 (override), crop 16 (override)" in printed  # the HyperRule choices are printed
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4

    rc = cli.main(["evaluate", str(run), "--dataset", str(data)])
    assert rc == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["top1"] == pytest.approx(metrics["top1"]) and scores["top5"] == pytest.approx(metrics["top5"])
    assert scores["num_examples"] == 15
