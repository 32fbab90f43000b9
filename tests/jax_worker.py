"""Fine-tuning runs for tests/test_transfer_jax.py. The backend is fixed at import, so a process runs on one; it
runs the scenarios it is given in turn (imports and compiles paid once), each ``case`` or ``case:arg``:

    KERAS_BACKEND=jax python -m tests.jax_worker /tmp/out few_shot resume mixed_precision:mixed_float16
    KERAS_BACKEND=tensorflow python -m tests.jax_worker /tmp/out parity:/tmp/init.npz

Each scenario writes what it measured to its own directory, ``<outdir>/<case>`` or ``<outdir>/<case>-<arg's
file name stem>`` (:func:`scenario_dir`): ``result.json`` (numbers, histories, what raised) and ``<name>.npz``
files of weights; the tests read them and assert. It prints ``== <scenario> <backend>`` when it starts and
``ok <scenario> <backend>`` when it is done, or ``FAILED <scenario> <backend>`` and the traceback, and the
process goes on with the next; it exits 1 when any failed. The ``parity`` case also runs with
``KERAS_BACKEND=tensorflow``, for the TensorFlow side of the comparison. Cases run under the backend they are
given and check it, so that a misconfigured environment fails instead of comparing TensorFlow with itself.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path

import keras
import numpy as np

from tests.tiny_transfer import FAST, TINY, register_tiny
from tests.tiny_transfer import images as _images
from tests.worker_loop import run_steps

BACKEND = keras.backend.backend()
register_tiny()  # tests/test_transfer.py's zoo entry and data (tests/tiny_transfer.py)

from bit_keras.errors import BackendError, ConfigError, Preempted  # noqa: E402
from bit_keras.recipes.transfer import evaluate_run, transfer  # noqa: E402


def _weights(model: keras.Model) -> dict[str, np.ndarray]:
    return {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}


def _save(out: Path, name: str, model: keras.Model) -> None:
    np.savez(out / f"{name}.npz", **_weights(model))


def _raises(fn, *errors: type[BaseException]) -> str:
    """The message of the expected error ``fn()`` raises ('' when it raises nothing)."""
    try:
        fn()
    except errors as err:
        return f"{type(err).__name__}: {err}"
    return ""


class _Stop(Exception):
    pass


# ------------------------------------------------------------------------------------------------- cases


def few_shot(out: Path) -> dict:
    """A few-shot run with micro-batches, validation and files; evaluate_run on its model.keras."""
    data, validation = _images(), _images(16, seed=1)
    run = out / "run"
    result = transfer(TINY, data, examples_per_class=5, steps=10, base_lr=0.05, seed=0, validation=validation,
                      output_dir=run, checkpoint_every=4, batch_split=2, **FAST)
    scores = evaluate_run(run, validation)
    reloaded = keras.models.load_model(run / "model.keras")
    probe = data[0][:4].astype("float32") / 255
    return {
        "backend": BACKEND,
        "num_examples": result.dataset_info.num_examples,
        "metrics": result.metrics,
        "history": result.history,
        "evaluate_run": scores,
        "files": sorted(p.name for p in run.iterdir()),
        "checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
        "reload_max_diff": float(np.max(np.abs(np.asarray(reloaded(probe)) - np.asarray(result.model(probe))))),
    }


def refusals(out: Path) -> dict:
    """What JAX refuses, each before any training: the message of each error."""
    data = _images()
    errors = {
        "remat": _raises(lambda: transfer(TINY, data, steps=1, remat=True, **FAST), ConfigError),
        "preemption_tf": _raises(lambda: transfer(TINY, data, steps=1, preemption="tf", **FAST), ConfigError),
        "multi_worker": _raises(lambda: transfer(TINY, data, steps=1, strategy="multi_worker", **FAST), ConfigError),
        "tf_strategy": _raises(lambda: transfer(TINY, data, steps=1, strategy=_tf_strategy(), **FAST), ConfigError),
        "unknown_strategy": _raises(lambda: transfer(TINY, data, steps=1, strategy="mirorred", **FAST), ConfigError),
        "tpu": _raises(lambda: transfer(TINY, data, steps=1, strategy="tpu", **FAST), ConfigError),
        "pretrain": _raises(_pretrain, BackendError),
    }
    return {"backend": BACKEND, "errors": errors}


def _tf_strategy():
    import tensorflow as tf

    return tf.distribute.get_strategy()


def _pretrain() -> None:
    from bit_keras.recipes.pretrain import pretrain  # noqa: F401  (TensorFlow-only: raises at import on JAX)


def resume(out: Path) -> dict:
    """An uninterrupted run, one stopped by an exception after step 7 and resumed, one stopped by SIGTERM
    (preemption='signal') during step 5's on_step, so stopping after step 6, and resumed; a finished run started again; other settings refused."""
    data = _images()
    # 48 examples, batch 8: 12 steps cross an epoch boundary (reshuffle), with flips and mixup on.
    kw = dict(FAST, steps=12, checkpoint_every=4, seed=3, base_lr=0.05, mixup_alpha=0.4)
    full = transfer(TINY, data, output_dir=out / "full", **kw)
    _save(out, "full", full.model)

    def stop_at_7(step: int, logs: dict) -> None:
        if step == 7:
            raise _Stop

    try:
        transfer(TINY, data, output_dir=out / "resumed", on_step=stop_at_7, **kw)
        stopped = False
    except _Stop:
        stopped = True
    checkpoints_at_stop = sorted(p.name for p in (out / "resumed" / "checkpoints").iterdir())
    resumed = transfer(TINY, data, output_dir=out / "resumed", **kw)
    _save(out, "resumed", resumed.model)

    def sigterm_at_5(step: int, logs: dict) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    preempted = _raises(lambda: transfer(TINY, data, output_dir=out / "preempted", on_step=sigterm_at_5,
                                         preemption="signal", **kw), Preempted)
    handler_restored = signal.getsignal(signal.SIGTERM) is handler
    checkpoints_at_preemption = sorted(p.name for p in (out / "preempted" / "checkpoints").iterdir())
    after_preemption = transfer(TINY, data, output_dir=out / "preempted", preemption="auto", **kw)
    _save(out, "after_preemption", after_preemption.model)

    again = transfer(TINY, data, output_dir=out / "resumed", **kw)
    _save(out, "again", again.model)
    refused = _raises(lambda: transfer(TINY, data, output_dir=out / "resumed", **{**kw, "base_lr": 0.01}), ConfigError)
    return {
        "backend": BACKEND,
        "stopped": stopped,
        "checkpoints_at_stop": checkpoints_at_stop,
        "preempted": preempted,
        "sigterm_handler_restored": handler_restored,
        "checkpoints_at_preemption": checkpoints_at_preemption,
        "full_history": full.history,
        "resumed_history": resumed.history,
        "after_preemption_history": after_preemption.history,
        "again_steps_run": again.history["step"],
        "refused": refused,
    }


def batch_split(out: Path) -> dict:
    """The same 4 steps (mixup on) with the whole batch of 8 and with 4 micro-batches of 2."""
    data = _images()
    kw = dict(FAST, steps=4, seed=1, base_lr=0.05, mixup_alpha=0.4)
    whole = transfer(TINY, data, **kw)
    split = transfer(TINY, data, batch_split=4, **kw)
    _save(out, "whole", whole.model)
    _save(out, "split", split.model)
    return {"backend": BACKEND, "whole_loss": whole.history["loss"], "split_loss": split.history["loss"]}


def data_parallel(out: Path) -> dict:
    """The same 3 steps on DataParallel over the 2 devices XLA_FLAGS makes, and on one device."""
    import jax

    data = _images()
    kw = dict(FAST, steps=3, seed=2, base_lr=0.05, batch_split=2, mixup_alpha=0.4)
    two = transfer(TINY, data, strategy="mirrored", validation=_images(16, seed=1), **kw)
    kernel = two.model.trainable_variables[0].value
    one = transfer(TINY, data, strategy="one_device", validation=_images(16, seed=1), **kw)
    _save(out, "two", two.model)
    _save(out, "one", one.model)
    return {"backend": BACKEND, "devices": len(jax.local_devices()),
            "weight_devices": len(kernel.sharding.device_set),
            "two_loss": two.history["loss"], "one_loss": one.history["loss"],
            "two_top1": two.metrics["top1"], "one_top1": one.metrics["top1"]}


def mixed_precision(out: Path, policy: str) -> dict:
    """Three steps under a mixed-precision policy: finite losses, float32 master weights, the policy restored."""
    before = keras.config.dtype_policy().name
    result = transfer(TINY, _images(), steps=3, mixed_precision=policy, validation=_images(8, seed=1), **FAST)
    head = result.model.get_layer("head")
    return {"backend": BACKEND, "policy_after": keras.config.dtype_policy().name, "policy_before": before,
            "head_policy": head.dtype_policy.name, "head_kernel_dtype": str(head.kernel.dtype),
            "loss": result.history["loss"], "top1": result.metrics["top1"]}


def parity(out: Path, init: str) -> dict:
    """On either backend, from the same starting weights (the .npz ``init``): transfer on real digits; and the
    engine with the sigmoid loss, L2 weight decay in the loss and micro-batches (pre-training's settings)."""
    from bit_keras.data.digits import load_digits_split
    from bit_keras.models.create import create_model
    from bit_keras.models.weights import load_npz
    from bit_keras.train.config import EngineConfig, RunConfig
    from bit_keras.train.engine import Trainer

    digits = load_digits_split(size=16)
    result = transfer(TINY, (digits.downstream_pool_images, digits.downstream_pool_labels), weights=init,
                      validation=(digits.downstream_test_images, digits.downstream_test_labels), steps=40,
                      batch_size=32, base_lr=0.01, resize=20, crop=16, seed=0, progress=False)
    _save(out, "transfer", result.model)

    # The engine alone: sigmoid cross-entropy, L2 decay of the kernels in the loss, 2 micro-batches.
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (8, 16, 16, 3)).astype("float32")
    labels = (rng.uniform(size=(8, 5)) < 0.3).astype("float32")
    import tensorflow as tf  # the input pipeline only

    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    run = RunConfig("parity", TINY, None, engine=EngineConfig(batch_size=8, batch_split=2, progress=False))
    with Trainer(run) as trainer:
        def build() -> keras.Model:
            model = create_model(TINY, weights=None, num_classes=5)
            load_npz(model, init)
            return model

        model = trainer.build(build, loss="sigmoid", weight_decay=1e-2)
        trainer.fit(batches, steps=3, lr_at=lambda step: 0.1)
    _save(out, "engine", model)
    return {"backend": BACKEND, "metrics": result.metrics, "history": result.history,
            "engine_loss": trainer.history["loss"]}


CASES = {f.__name__: f for f in (few_shot, refusals, resume, batch_split, data_parallel, mixed_precision, parity)}


def scenario_dir(out: Path, scenario: str) -> Path:
    """Where ``scenario`` (``case`` or ``case:arg``) writes: ``out/case`` or ``out/case-<arg's stem>``."""
    case, _, arg = scenario.partition(":")
    return out / (f"{case}-{Path(arg).stem}" if arg else case)


def main(argv: list[str]) -> int:
    out, *scenarios = argv
    unknown = [s for s in scenarios if s.partition(":")[0] not in CASES]
    assert scenarios and not unknown, f"unknown case(s) {unknown}; choose from {list(CASES)}"

    def run(scenario: str) -> None:
        case, _, arg = scenario.partition(":")
        where = scenario_dir(Path(out), scenario)
        where.mkdir(parents=True, exist_ok=True)
        try:
            result = CASES[case](where, *([arg] if arg else []))
            (where / "result.json").write_text(json.dumps(result, default=float))
        finally:
            keras.utils.clear_session()  # the next scenario starts from Keras' initial global state

    return run_steps(((scenario, functools.partial(run, scenario)) for scenario in scenarios), BACKEND)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
