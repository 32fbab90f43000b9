"""Upstream pre-training: the recipe, MirroredStrategy and MultiWorkerMirroredStrategy parity, resume."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import bit_keras
from bit_keras.errors import ConfigError, Preempted
from bit_keras.recipes.pretrain import pretrain
from bit_keras.train.step import TrainStep, make_optimizer
from bit_keras.recipes.upstream import PRESETS, get_preset
from tests.pretrain_worker import SETTINGS, data

ROOT = Path(__file__).resolve().parent.parent


def _run_worker(args, env=None, timeout=300):
    return subprocess.Popen([sys.executable, "-m", "tests.pretrain_worker", *args], cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_recipe_numbers():
    s = get_preset("BiT-S")
    assert (s.batch_size, s.base_lr, s.warmup_steps, s.weight_decay, s.momentum) == (4096, 0.48, 5000, 1e-4, 0.9)
    assert (s.epochs, s.decay_epochs, s.loss, s.image_size) == (90, (30, 60, 80), "softmax", 224)
    assert get_preset("BiT-M").loss == "sigmoid"
    large = PRESETS["BiT-L"]
    assert (large.epochs, large.decay_epochs) == (40, (10, 23, 30, 37))
    spe = 1000
    assert s.lr(2500, spe) == pytest.approx(0.24)
    assert s.lr(5000, spe) == pytest.approx(0.48)
    assert s.lr(30 * spe - 1, spe) == pytest.approx(0.48)
    assert s.lr(30 * spe, spe) == pytest.approx(0.048)
    assert s.lr(80 * spe, spe) == pytest.approx(0.00048)
    assert s.replace(batch_size=256).base_lr == pytest.approx(0.03)
    with pytest.raises(ConfigError, match="unknown upstream setting"):
        s.replace(learning_rate=1)


def test_sigmoid_loss_and_weight_decay_gradients():
    strategy = tf.distribute.get_strategy()
    model = bit_keras.create_model("BiT-tiny", num_classes=3)
    optimizer = make_optimizer(model)
    x = tf.random.stateless_uniform((4, 16, 16, 3), seed=(1, 2))
    y = tf.one_hot([0, 1, 2, 0], 3)
    plain = TrainStep(model, optimizer, strategy, batch_size=4, loss="sigmoid")
    decayed = TrainStep(model, optimizer, strategy, batch_size=4, loss="sigmoid", weight_decay=0.1)
    loss0, g0 = plain._loss_and_grads(x, y)
    loss1, g1 = decayed._loss_and_grads(x, y)
    logits = model(x).numpy().astype(np.float64)
    sig = np.maximum(logits, 0) - logits * y.numpy() + np.log1p(np.exp(-np.abs(logits)))
    assert float(loss0) == pytest.approx(sig.sum(axis=1).mean(), rel=1e-5)
    for v, a, b in zip(model.trainable_variables, g0, g1):
        expected = a.numpy() + (0.1 * v.numpy() if v.path.endswith("kernel") else 0)
        np.testing.assert_allclose(b.numpy(), expected, rtol=1e-5, atol=1e-6)
    kernels = [v.numpy() for v in model.trainable_variables if v.path.endswith("kernel")]
    assert float(loss1 - loss0) == pytest.approx(0.05 * sum(float((k * k).sum()) for k in kernels), rel=1e-4)


@pytest.mark.slow
def test_pretrain_learns_and_writes_its_outputs(tmp_path):
    """The outputs, and with export_handle= the backbone published in the registry (the story that goes on from
    there, registry -> transfer, is tests/test_story.py)."""
    import hub_export

    images, labels = data(n=128)
    handle = "test/tiny-upstream/feature_vector/1"
    result = pretrain("BiT-tiny", (images, labels), output_dir=tmp_path / "run", export_handle=handle,
                      registry=tmp_path / "registry", **{**SETTINGS, "epochs": 4, "steps_per_epoch": 8})
    run = tmp_path / "run"
    assert result.steps == 32 and result.handle == handle and result.weights_path == run / "weights.npz"
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert (run / "weights.npz").exists() and (run / "model.keras").exists()
    meta = json.loads((run / "upstream.json").read_text())
    assert meta["config"]["name"] == "tiny" and meta["num_classes"] == 4 and meta["steps"] == 32
    # The backbone hands over to create_model / transfer through the official layout.
    again = bit_keras.create_model("BiT-tiny", weights=run / "weights.npz", num_classes=4)
    x = images[:2].astype(np.float32) / 255
    np.testing.assert_allclose(again(x).numpy(), result.model(x).numpy(), atol=1e-5)
    # The registry holds one verified version whose metadata names the upstream run.
    registry = hub_export.Registry(tmp_path / "registry")
    assert [m["handle"] for m in registry.list()] == [handle] and registry.verify(handle) == []
    entry = registry.show(handle)
    assert (entry["kind"], entry["upstream_preset"], entry["steps"], entry["architecture_name"]) == (
        "feature_vector", "tiny", 32, "BiT-tiny")
    assert entry["upstream_data"] == "arrays (128 images 16x16)"
    assert entry["architecture"]["arch"] == bit_keras.get_model_info("BiT-tiny").arch


RESUME_SETTINGS = {**SETTINGS, "epochs": 2}  # 8 steps, checkpoints every 2


@pytest.fixture(scope="module")
def uninterrupted():
    images, labels = data()
    return pretrain("BiT-tiny", (images, labels), **RESUME_SETTINGS)


def _same_weights(a, b):
    for x, y in zip(a.model.weights, b.model.weights):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~10-20 s: runs in the slow tier
def test_resume_after_a_crash_ends_with_the_same_weights(tmp_path, uninterrupted, capsys):
    images, labels = data()

    def crash(step, logs):
        if step == 5:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        pretrain("BiT-tiny", (images, labels), output_dir=tmp_path, on_step=crash, **RESUME_SETTINGS)
    capsys.readouterr()
    resumed = pretrain("BiT-tiny", (images, labels), output_dir=tmp_path, **RESUME_SETTINGS)
    assert "Resuming from step 4 of" in capsys.readouterr().out  # restarted from the checkpoint of step 4
    assert resumed.history["step"] == uninterrupted.history["step"]  # the earlier steps read back
    np.testing.assert_allclose(resumed.history["loss"], uninterrupted.history["loss"], rtol=1e-5)
    _same_weights(uninterrupted, resumed)


@pytest.mark.slow  # ~10-20 s: runs in the slow tier
@pytest.mark.parametrize("mode", ["tf", "signal"])
def test_sigterm_preemption_saves_and_resumes(tmp_path, uninterrupted, mode):
    """SIGTERM mid-run: a checkpoint at a step boundary, Preempted, and the restarted run ends the same.
    ``tf``: TensorFlow's PreemptionCheckpointHandler (it saves one step later: the step it announces);
    ``signal``: our SIGTERM flag. Both put the previous SIGTERM handler back."""
    images, labels = data()
    settings = {**RESUME_SETTINGS, "checkpoint_every": None, "preemption": mode}
    before = signal.getsignal(signal.SIGTERM)

    def preempt(step, logs):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Preempted, match=r"after step (3|4);") as info:
        pretrain("BiT-tiny", (images, labels), output_dir=tmp_path, on_step=preempt, **settings)
    saved = int(str(info.value).split("after step ")[1].split(";")[0])
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith(f"ckpt-{saved}")
    assert signal.getsignal(signal.SIGTERM) is before
    resumed = pretrain("BiT-tiny", (images, labels), output_dir=tmp_path, **settings)
    assert resumed.history["step"] == list(range(1, 9))  # the steps before the pre-emption were kept too
    np.testing.assert_allclose(resumed.history["loss"][:saved], uninterrupted.history["loss"][:saved], rtol=1e-6)
    _same_weights(uninterrupted, resumed)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_mirrored_strategy_matches_the_default_strategy(tmp_path):
    proc = _run_worker(["mirrored", str(tmp_path)])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert (tmp_path / "replicas.txt").read_text() == "2"
    default, mirrored = _weights(tmp_path / "default.npz"), _weights(tmp_path / "mirrored.npz")
    start, mirrored_start = _weights(tmp_path / "default_start.npz"), _weights(tmp_path / "mirrored_start.npz")
    assert len(default) == len(mirrored) == len(start) == len(mirrored_start) > 10
    for i, (a, b, s0, s1) in enumerate(zip(default, mirrored, start, mirrored_start)):
        np.testing.assert_array_equal(s0, s1, err_msg=f"weight {i}")  # both runs start from the same weights
        update = a - s0
        assert np.abs(update).max() > 0, f"weight {i} did not move"
        # and take the same steps: compared as updates, since 4 warm-up steps move a GroupNorm gamma by ~1e-6;
        # the two runs sum gradients in another order, so the weights may also differ by a few float32 ulps
        tol = 1e-3 * np.abs(update).max() + 4 * float(np.spacing(np.abs(a).max()))
        np.testing.assert_allclose(b - s0, update, rtol=0, atol=tol, err_msg=f"weight {i}")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _multi_worker(tmp_path, mode, extra_env=None):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = [
        _run_worker([mode, str(tmp_path)],
                    env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
                         **(extra_env or {})})
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes(tmp_path):
    _multi_worker(tmp_path, "multi_worker")
    w0, w1 = _weights(tmp_path / "worker0.npz"), _weights(tmp_path / "worker1.npz")
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    run = tmp_path / "run"
    assert tf.train.latest_checkpoint(str(run / "checkpoints")) is not None  # the chief's checkpoint
    assert (run / "weights.npz").exists() and json.loads((run / "upstream.json").read_text())["replicas"] == 2


@pytest.mark.slow
def test_multi_worker_preemption_of_one_worker_stops_both_at_the_same_step(tmp_path):
    """SIGTERM to worker 1 only: TF's PreemptionCheckpointHandler makes both workers save at the same step
    and stop; restarted, both resume from the chief's checkpoint and end as an uninterrupted run on one
    device with the same global batch does (run in a fresh process: the data order depends on TF's global seed)."""
    _multi_worker(tmp_path, "multi_worker_resume", {"BIT_TEST_PREEMPT_AT": "2"})
    stopped = [json.loads((tmp_path / f"preempted{i}.json").read_text()) for i in range(2)]
    assert stopped[0]["step"] == stopped[1]["step"] >= 3, stopped
    assert all("preemption notice" in s["message"] for s in stopped)
    chief_ckpt = tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert chief_ckpt.endswith(f"ckpt-{stopped[0]['step']}")
    _multi_worker(tmp_path, "multi_worker_resume")
    w0, w1 = _weights(tmp_path / "worker0.npz"), _weights(tmp_path / "worker1.npz")
    resumed = [json.loads((tmp_path / f"resumed{i}.json").read_text()) for i in range(2)]
    assert [r["first_step"] for r in resumed] == [stopped[0]["step"] + 1] * 2  # both went on from the checkpoint
    assert [r["history_steps"] for r in resumed] == [list(range(1, 9))] * 2  # and the history lost no step
    reference = _run_worker(["one_device_reference", str(tmp_path)])
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out[-3000:]
    for a, b, c in zip(w0, w1, _weights(tmp_path / "one_device.npz")):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)  # 2 workers x 8 = one device x 16


@pytest.mark.slow
def test_memory_and_speed_knobs_keep_the_result():
    images, labels = data()
    settings = {**SETTINGS, "checkpoint_every": None}
    plain = pretrain("BiT-tiny", (images, labels), **settings)
    split = pretrain("BiT-tiny", (images, labels), batch_split=2, **settings)
    np.testing.assert_allclose(plain.history["loss"], split.history["loss"], rtol=1e-4)
    _same_weights(plain, split)
    remat = pretrain("BiT-tiny", (images, labels), remat=True, **settings)
    np.testing.assert_allclose(plain.history["loss"], remat.history["loss"], rtol=1e-5)
    _same_weights(plain, remat)
    bf16 = pretrain("BiT-tiny", (images, labels), mixed_precision="mixed_bfloat16", **settings)
    assert bf16.model.get_layer("block1-unit01-a-group_norm").compute_dtype == "bfloat16"
    assert np.all(np.isfinite(bf16.history["loss"]))
    assert abs(bf16.history["loss"][0] - plain.history["loss"][0]) < 0.05


def test_cli_pretrain_exits_42_when_preempted(monkeypatch, tmp_path):
    """`bit-keras pretrain` passes --remat/--preemption through and maps Preempted to TF's restart code 42."""
    from bit_keras.cli import main

    import bit_keras.recipes.pretrain as pretrain_module

    seen = {}

    def preempted(*args, **kwargs):
        seen.update(kwargs)
        raise Preempted("stopped by a preemption notice after step 3; the checkpoint is saved, run again to resume")

    monkeypatch.setattr(pretrain_module, "pretrain", preempted)
    code = main(["pretrain", "--model", "BiT-tiny", "--dataset", str(tmp_path), "--preset", "tiny",
                 "--output", str(tmp_path / "run"), "--remat", "--preemption", "signal"])
    assert code == 42
    assert seen["remat"] is True and seen["preemption"] == "signal"
