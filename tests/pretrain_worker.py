"""Subprocess entry points for the distributed pre-training tests (TF devices must be set before TF starts).

    python -m tests.pretrain_worker mirrored OUT_DIR
    python -m tests.pretrain_worker multi_worker OUT_DIR   (with TF_CONFIG set by the test)
"""

import os
import sys

import numpy as np


def data(n=64, size=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8)
    images[..., 0] = (labels[:, None, None] * 60).astype(np.uint8)  # a learnable signal
    return images, labels


SETTINGS = dict(preset="tiny", epochs=1, batch_size=16, image_size=16, steps_per_epoch=4, warmup_steps=2,
                progress=False, checkpoint_every=2)


def mirrored(out):
    """The same run under the default strategy and a 2-replica MirroredStrategy: each run's weights as pretrain()
    built them (before the first step) and at the end."""
    from bit_keras.train.distribute import split_cpu

    devices = split_cpu(2)
    import tensorflow as tf

    import bit_keras.recipes.pretrain as recipe

    starts = []
    build = recipe._build

    def recording_build(*args, **kwargs):
        model = build(*args, **kwargs)
        starts.append([np.array(v.numpy()) for v in model.weights])
        return model

    recipe._build = recording_build
    images, labels = data()
    base = recipe.pretrain("BiT-tiny", (images, labels), strategy=tf.distribute.get_strategy(), **SETTINGS)
    strategy = tf.distribute.MirroredStrategy(devices)
    mirrored = recipe.pretrain("BiT-tiny", (images, labels), strategy=strategy, **SETTINGS)
    assert len(starts) == 2, len(starts)
    np.savez(os.path.join(out, "default_start.npz"), *starts[0])
    np.savez(os.path.join(out, "mirrored_start.npz"), *starts[1])
    np.savez(os.path.join(out, "default.npz"), *[v.numpy() for v in base.model.weights])
    np.savez(os.path.join(out, "mirrored.npz"), *[v.numpy() for v in mirrored.model.weights])
    with open(os.path.join(out, "replicas.txt"), "w") as f:
        f.write(str(strategy.num_replicas_in_sync))


def multi_worker(out):
    import json

    from bit_keras.recipes.pretrain import pretrain

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    images, labels = data()
    result = pretrain("BiT-tiny", (images, labels), strategy="multi_worker", output_dir=os.path.join(out, "run"),
                      **SETTINGS)
    np.savez(os.path.join(out, f"worker{task['index']}.npz"), *[v.numpy() for v in result.model.weights])


def multi_worker_resume(out):
    """Two epochs (8 steps); with BIT_TEST_PREEMPT_AT=k worker 1 sends itself SIGTERM after step k."""
    import json
    import signal

    from bit_keras.errors import Preempted
    from bit_keras.recipes.pretrain import pretrain

    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    preempt_at = int(os.environ.get("BIT_TEST_PREEMPT_AT", "0"))

    ran = []  # the steps this process ran

    def on_step(step, logs):
        ran.append(step)
        if preempt_at and index == 1 and step == preempt_at:
            os.kill(os.getpid(), signal.SIGTERM)

    images, labels = data()
    settings = {**SETTINGS, "epochs": 2, "checkpoint_every": None}
    try:
        result = pretrain("BiT-tiny", (images, labels), strategy="multi_worker", output_dir=os.path.join(out, "run"),
                          on_step=on_step, preemption="tf", **settings)
    except Preempted as e:
        step = int(str(e).split("after step ")[1].split(";")[0])
        with open(os.path.join(out, f"preempted{index}.json"), "w") as f:
            json.dump({"step": step, "message": str(e)}, f)
        return
    with open(os.path.join(out, f"resumed{index}.json"), "w") as f:
        json.dump({"first_step": ran[0], "history_steps": result.history["step"]}, f)
    np.savez(os.path.join(out, f"worker{index}.npz"), *[v.numpy() for v in result.model.weights])


def one_device_reference(out):
    """multi_worker_resume's run, uninterrupted, on one device with the same global batch, in a fresh process:
    the data order depends on TF's global seed, which tests in the main process may have set."""
    from bit_keras.recipes.pretrain import pretrain

    images, labels = data()
    result = pretrain("BiT-tiny", (images, labels), **{**SETTINGS, "epochs": 2, "checkpoint_every": None})
    np.savez(os.path.join(out, "one_device.npz"), *[v.numpy() for v in result.model.weights])


if __name__ == "__main__":
    {"mirrored": mirrored, "multi_worker": multi_worker, "multi_worker_resume": multi_worker_resume,
     "one_device_reference": one_device_reference}[sys.argv[1]](sys.argv[2])
