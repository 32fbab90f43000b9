"""Write the tutorial notebooks in this folder from the cell lists below.

The committed ``.ipynb`` files are what users open and what ``tests/test_notebooks.py`` executes; this script
is their source. Edit a cell here, run ``python examples/_build_notebooks.py``, and commit both: the test
checks that regenerating gives identical notebooks (outputs cleared, fixed cell ids).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat import v4

HERE = Path(__file__).resolve().parent

INSTALL = '''\
# On Colab, install bit-keras with its TF Hub and datasets extras (TF and Keras 3 are preinstalled there).
# Locally this cell does nothing: install the package yourself, e.g. `pip install -e ".[hub,data]"`.
import sys

if "google.colab" in sys.modules:
    %pip install -q "bit-keras[hub,data]"'''

SMOKE_SWITCH = '''\
SMOKE = os.environ.get("BIT_KERAS_SMOKE") == "1"  # BIT_KERAS_SMOKE=1: offline, tiny, seconds (CI runs this)'''


def md(text: str) -> tuple[str, str]:
    return "markdown", textwrap.dedent(text).strip("\n")


def code(text: str) -> tuple[str, str]:
    return "code", textwrap.dedent(text).strip("\n")


# ------------------------------------------------------------------------------------------------ notebook 01

NB01 = [
    md("""
    # 01 · Load a BiT model and classify images

    [Big Transfer (BiT)](https://arxiv.org/abs/1912.11370) models as native Keras 3 models with `bit_keras`:
    browse the zoo, load the published weights, classify photos with the ILSVRC-2012 class names, check the
    input-range conventions, take multi-scale features, and hand a model to tf-keras users as a TF Hub-style
    SavedModel for `hub.KerasLayer`.

    Runs on Colab (a GPU runtime helps; a CPU works) or locally.

    | | full size (the default) | smoke mode (`BIT_KERAS_SMOKE=1`, offline) |
    |---|---|---|
    | model | `BiT-M-R50x1-ILSVRC2012`: BiT-M R50x1 (ImageNet-21k upstream) fine-tuned on ILSVRC-2012, 25.5M parameters, fed at 448 px | `BiT-tiny-ILSVRC2012-smoke`: a 0.5M-parameter BiT registered below, same 1000-class head, fed at 64 px |
    | weights | the official `.npz` (~100 MB) from `https://storage.googleapis.com/bit_models/`, downloaded once | **random** weights in a local mirror folder |
    | labels | the official `ilsvrc2012_wordnet_lemmas.txt` | 1000 placeholder names |
    | expected | sensible top-5 classes for the two photos; the official code's README reports 80.7% ILSVRC-2012 top-1 for a BiT-M-R50x1 fine-tune | meaningless predictions (random weights) |
    """),
    code(INSTALL),
    code(f'''
    import os
    import tempfile
    from pathlib import Path

    {SMOKE_SWITCH}

    MODEL = "BiT-M-R50x1-ILSVRC2012"  # smoke mode swaps in a tiny stand-in below
    WORK = Path(tempfile.mkdtemp(prefix="bit_keras_01_"))  # everything this notebook writes goes here
    print(f"{{'smoke' if SMOKE else 'full-size'}} run; scratch folder {{WORK}}")
    '''),
    md("""
    ### Smoke mode only: a local weight mirror with random weights

    `bit_keras` downloads weight and label files from `$BIT_KERAS_WEIGHTS_URL` (default: the official bucket)
    into `$BIT_KERAS_HOME` (default `~/.cache/bit_keras`). Pointing the first at a folder (a `file://` URL) is how
    you would use an internal mirror; smoke mode uses it to run the very same `weights="pretrained"` code path
    offline, with a tiny stand-in entry registered in the zoo so that it takes seconds.

    **In smoke mode the weights are random, so every prediction below is meaningless**: the run only shows that
    the code works. A full-size run skips this cell.
    """),
    code('''
    if SMOKE:
        import dataclasses

        import numpy as np

        import bit_keras
        from bit_keras import get_model_info, register_model

        MODEL = "BiT-tiny-ILSVRC2012-smoke"
        register_model(dataclasses.replace(
            get_model_info("BiT-tiny"), name=MODEL, weights_file=f"{MODEL}.npz", resolution=64,
            labels_file="ilsvrc2012_wordnet_lemmas.txt", description="smoke-test stand-in: RANDOM weights",
        ), overwrite=True)

        stand_in = bit_keras.create_model(MODEL)  # random init; its head starts at zero, so randomise that too
        head = stand_in.get_layer("head")
        head.kernel.assign(np.random.default_rng(0).normal(0.0, 0.1, head.kernel.shape).astype("float32"))

        mirror = WORK / "mirror"  # laid out like https://storage.googleapis.com/bit_models/
        mirror.mkdir()
        bit_keras.save_npz(stand_in, mirror / f"{MODEL}.npz")  # the official .npz layout
        (mirror / "ilsvrc2012_wordnet_lemmas.txt").write_text("".join(f"class_{i:04d}\\n" for i in range(1000)))

        os.environ["BIT_KERAS_WEIGHTS_URL"] = mirror.as_uri() + "/"
        os.environ["BIT_KERAS_HOME"] = str(WORK / "cache")
        print("weights and labels come from", os.environ["BIT_KERAS_WEIGHTS_URL"])
    '''),
    md("""
    ## 1. The zoo

    `bit_keras.list_models(pattern)` lists the zoo names (offline): `BiT-S-*` (ILSVRC-2012 upstream, 1000 classes),
    `BiT-M-*` (ImageNet-21k upstream, 21843 classes with a sigmoid head), their ILSVRC-2012 fine-tunes
    `BiT-M-*-ILSVRC2012`, `BiT-M-R50x1-CIFAR10`, the distilled R50x1 students, and `BiT-L-*` (the JFT-300M
    architectures, whose weights were never published). `get_model_info` gives an entry's metadata without
    building anything.
    """),
    code('''
    import bit_keras

    print(len(bit_keras.list_models()), "zoo entries, e.g.", bit_keras.list_models("BiT-M-R50x1*"))
    print("architecture only (no published weights):", bit_keras.list_models(pretrained=False))

    info = bit_keras.get_model_info(MODEL)
    info.to_dict()
    '''),
    md("""
    ## 2. Load the published weights

    `create_model(name, weights="pretrained")` downloads the entry's official `.npz` once (progress bar, resume of
    interrupted downloads, size check) into `$BIT_KERAS_HOME` and loads it strictly: a missing, extra or
    mis-shaped key raises an error naming it. Other options: `weights=None` (random init), a local path or a URL
    of an official-layout `.npz`; `num_classes=<n>` gives a new zero-initialised head, `num_classes=None` the
    pooled pre-logits feature.
    """),
    code('''
    model = bit_keras.create_model(MODEL, weights="pretrained")
    print(f"{model.name}: {model.count_params():,} parameters, input {model.input_shape} -> logits",
          model.output_shape)
    '''),
    md("""
    ## 3. Classify images

    The models take **float32 RGB in [0, 1]**, NHWC, at **any resolution** (the TF Hub convention; they rescale to
    BiT's [-1, 1] inside). Each entry carries the preprocessing its weights expect: `info.resolution`,
    `info.crop_pct` (resize the shorter side to `resolution / crop_pct`, then centre-crop; 1.0 means resize
    straight to `resolution`) and `info.interpolation` (448 px, crop 1.0, bilinear for the ILSVRC-2012 fine-tunes,
    as timm evaluates them). ILSVRC-2012 heads are softmax classifiers; the ImageNet-21k heads of `BiT-M-<arch>`
    are multi-label (sigmoid, `info.multi_label`).

    The photos are the two that scikit-learn ships with (no download needed).
    """),
    code('''
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_sample_images

    samples = load_sample_images()
    names = [Path(f).stem for f in samples.filenames]


    def preprocess(image, info):
        """uint8 HxWx3 -> float32 in [0, 1], as the entry's weights expect: shorter side to resolution / crop_pct
        (same interpolation), then the centre crop of resolution x resolution."""
        side = int(round(info.resolution / info.crop_pct))
        h, w = image.shape[:2]
        scale = side / min(h, w)
        size = (max(side, round(h * scale)), max(side, round(w * scale)))
        image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, size, method=info.interpolation)
        top, left = (size[0] - info.resolution) // 2, (size[1] - info.resolution) // 2
        return image[top:top + info.resolution, left:left + info.resolution].numpy()


    batch = np.stack([preprocess(image, info) for image in samples.images])
    logits = model(batch).numpy()
    scores = tf.sigmoid(logits) if info.multi_label else tf.nn.softmax(logits)
    labels = bit_keras.get_labels(MODEL)  # index i names output i (the official label file, downloaded once)
    short = [label.split(",")[0] for label in labels]

    fig, axes = plt.subplots(1, len(batch), figsize=(4 * len(batch), 3.5))
    for ax, name, image, p in zip(axes, names, samples.images, scores.numpy()):
        top5 = np.argsort(p)[::-1][:5]
        print(f"{name}: " + ", ".join(f"{short[i]} {p[i]:.1%}" for i in top5))
        ax.imshow(image)
        ax.set_title(f"{short[top5[0]]} ({p[top5[0]]:.0%})")
        ax.axis("off")
    plt.show()
    '''),
    md("""
    ## 4. Input range conventions

    * `input_range=(0, 1)` (default): the TF Hub convention, e.g. `tf.image.convert_image_dtype(x, tf.float32)`.
    * `input_range=(-1, 1)`: BiT's raw range, what the official `.npz` checkpoints and the PyTorch/JAX code expect.
    * `input_range=(0, 255)`: raw pixel values.

    The weights are the same; only the model's first (rescaling) layer differs, so the three give the same
    logits for the same image. Feeding 0-255 pixels to a `(0, 1)` model does **not** raise: it silently gives
    wrong outputs.
    """),
    code('''
    model_255 = bit_keras.create_model(MODEL, weights="pretrained", input_range=(0, 255))
    model_raw = bit_keras.create_model(MODEL, weights="pretrained", input_range=(-1, 1))

    print("(0, 255) model on pixels   vs (0, 1) model: max |logit diff| =",
          f"{np.abs(model_255(batch * 255.0).numpy() - logits).max():.2e}")
    print("(-1, 1) model on 2x - 1    vs (0, 1) model: max |logit diff| =",
          f"{np.abs(model_raw(batch * 2.0 - 1.0).numpy() - logits).max():.2e}")
    wrong = model(batch * 255.0).numpy()  # the classic mistake
    print("pixels fed to the (0, 1) model (wrong):     max |logit diff| =", f"{np.abs(wrong - logits).max():.2e}",
          "| top-1 unchanged:", (wrong.argmax(-1) == logits.argmax(-1)).tolist())
    '''),
    md("""
    ## 5. Multi-scale features

    `bit_keras.feature_extractor(model, names)` shares the model's layers and returns a dict of feature maps:
    `stem` (stride 4), `block1` (4), `block2` (8), `block3` (16), `block4` (32) and the pooled `pre_logits`
    (2048 wide for R50x1), e.g. as a backbone for detection or segmentation. In a pre-activation ResNet the block
    outputs are un-normalised residual streams; the final GroupNorm + ReLU comes after `block4`.
    """),
    code('''
    pyramid = bit_keras.feature_extractor(model, ["stem", "block1", "block2", "block3", "block4", "pre_logits"])
    for name, value in pyramid(batch).items():
        print(f"{name:>10}: {tuple(value.shape)}")
    '''),
    md("""
    ## 6. For tf-keras users: `hub.KerasLayer`

    TF Hub's `hub.KerasLayer` is a tf-keras (Keras 2) layer: it does not fit in a Keras 3 model. To use a bit_keras
    model from tf-keras code, export it with `hub_export.export` as a TF2 Reusable SavedModel (float32 RGB in
    [0, 1], any size; `__call__(images, training)` for fine-tuning; `metadata.json` alongside) and load that with
    `hub.KerasLayer(path, trainable=True)` inside a `tf_keras` model.

    Pass `trainable=True` to fine-tune: `hub.KerasLayer` defaults to a frozen layer, which is why the official TF2
    BiT colab trains only the head (a linear probe, not BiT's fine-tuning). Keras 3 users load the same SavedModel
    with `bit_keras.load_layer`, and a registry + HTTP server publishes it under a handle: see notebook 03.
    """),
    code('''
    import hub_export

    backbone = bit_keras.create_model(MODEL, weights="pretrained", num_classes=None)  # the pooled feature
    export_dir = hub_export.export(backbone, WORK / "export" / "feature_vector")
    print(sorted(p.name for p in export_dir.iterdir()))
    '''),
    code('''
    import tensorflow_hub as hub
    import tf_keras

    hub_layer = hub.KerasLayer(str(export_dir), trainable=True)
    classifier = tf_keras.Sequential([
        tf_keras.Input((None, None, 3)),
        hub_layer,
        tf_keras.layers.Dense(len(batch), kernel_initializer="zeros"),  # the BiT head init: zeros
    ])
    features = hub_layer(batch).numpy()
    print("hub.KerasLayer feature", features.shape, "| max |diff| to the Keras 3 model:",
          f"{np.abs(features - backbone(batch).numpy()).max():.2e}")

    classifier.compile(tf_keras.optimizers.SGD(0.003, momentum=0.9),
                       tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = classifier.fit(batch, np.arange(len(batch)), epochs=2, verbose=0)
    print(f"tf-keras fine-tuning: {len(classifier.trainable_weights)} trainable weights, "
          f"loss {history.history['loss'][0]:.4f} -> {history.history['loss'][-1]:.4f}")
    '''),
    md("""
    ## Clean up

    The downloaded weights stay in `$BIT_KERAS_HOME` for the next run; the scratch folder goes.
    """),
    code('''
    import shutil

    shutil.rmtree(WORK, ignore_errors=True)
    '''),
]


# ------------------------------------------------------------------------------------------------ notebook 02

NB02 = [
    md("""
    # 02 · Fine-tune BiT with the BiT-HyperRule

    `bit_keras.transfer()` fine-tunes a BiT model on a new dataset in one call: it loads the data (a
    tensorflow-datasets name here; folders, arrays and `tf.data` work too), optionally draws a few-shot subset,
    picks resolution, schedule and mixup with the **BiT-HyperRule** from the dataset's size and image size, and
    trains the whole network (SGD momentum 0.9, base lr 0.003, batch 512, linear warm-up then decays by 10,
    zero-initialised head). It writes `hyperparams.json`, `history.json`, `metrics.json`, checkpoints (an
    interrupted run resumes) and `model.keras`.

    The official TF2 colab has pitfalls this avoids: its hub layer is frozen (only the head trains), its
    learning-rate values skip `lr * 0.01` (a typo copied into many notebooks), and it has no warm-up.

    **Full-size settings and the numbers to expect** (use a GPU runtime):

    | experiment | full-size settings | expected top-1 |
    |---|---|---|
    | published `BiT-M-R50x1-CIFAR10`, CIFAR-10 test at 128 px | evaluation only | **97.6%** (the PyTorch colab: 97.61% expected, 97.62% got; JAX colab 97.64%) |
    | `BiT-M-R50x1` → tf_flowers (`train[:90%]`, validation `train[90%:]`) | HyperRule: 3,303 examples → 500 steps, no mixup; resize 160 / crop 128 as the official colab (the rule itself picks 512 / 480 for these images); batch 512 in 4 micro-batches | **~98%** (the official TF2 colab, which trains the head only) |
    | `BiT-M-R50x1` → CIFAR-10, **5 examples per class** | HyperRule: 50 examples → 500 steps, 160 / 128, no mixup; batch 512 in 4 micro-batches | **~86%** (the PyTorch colab: 86.41%) |
    | `BiT-M-R50x1` → CIFAR-10, all 50,000 (optional, `RUN_FULL_CIFAR10 = True`) | HyperRule: 10,000 steps, mixup 0.1, 160 / 128; batch 128 and base lr 0.001 as the official README | **97.2%** (official README, TF2) |

    **Smoke mode** (`BIT_KERAS_SMOKE=1`): the same calls, offline, on `tfds.testing.mock_data` (random images and
    labels) with the 0.5M-parameter `BiT-tiny` at random init, batch 8, 4 steps, 40 / 32 px. Its numbers mean
    nothing.
    """),
    code(INSTALL),
    code(f'''
    import contextlib
    import json
    import os
    import tempfile
    from pathlib import Path

    from IPython.display import Image, display

    import bit_keras
    from bit_keras.recipes.hyperrule import hyperparams_for
    from bit_keras.plots import plot_run
    from bit_keras import evaluate, evaluate_run, transfer

    {SMOKE_SWITCH}
    RUN_FULL_CIFAR10 = False  # the 10,000-step full CIFAR-10 run (hours on one GPU); smoke mode runs it tiny

    if SMOKE:
        BACKBONE, WEIGHTS = "BiT-tiny", None  # random init: smoke numbers mean nothing
        OUT = Path(tempfile.mkdtemp(prefix="bit_keras_02_"))
    else:
        BACKBONE, WEIGHTS = "BiT-M-R50x1", "pretrained"  # BiT-M R50x1, ImageNet-21k upstream
        OUT = Path("runs/02_transfer")  # runs/ is git-ignored; on Colab it is /content/runs/...


    def settings(**full):
        """The full-size keyword arguments given, or the smoke-mode ones in their place."""
        return dict(batch_size=8, steps=4, resize=40, crop=32) if SMOKE else full


    def tfds_data():
        """tensorflow-datasets as is (downloaded on first use), or in smoke mode tfds's offline mock data."""
        if SMOKE:
            import tensorflow_datasets as tfds

            return tfds.testing.mock_data(num_examples=64)  # random images (CIFAR-10: 32x32 uint8) and labels
        return contextlib.nullcontext()


    print(f"{{'smoke' if SMOKE else 'full-size'}} run: {{BACKBONE}} (weights {{WEIGHTS}}), outputs in {{OUT}}")
    '''),
    md("""
    ## 1. What the HyperRule picks, and why

    The rule looks at two things only: the number of training examples and the image size.

    * images smaller than 96x96 (by area) are resized to 160 and randomly cropped to 128, larger ones to 512 / 480
      (the paper's text says 448 / 384: `rule="paper"`);
    * under 20,000 examples: 500 steps; under 500,000: 10,000; else 20,000 (warm-up over the first support, then
      the lr is divided by 10 after each later support);
    * mixup with alpha 0.1 from 20,000 examples on.

    No training here: `hyperparams_for(num_examples, (h, w))` is what `transfer()` calls.
    """),
    code('''
    for name, num_examples, size in [
        ("CIFAR-10, 5 per class", 50, (32, 32)),
        ("tf_flowers, 90%", 3_303, (240, 320)),
        ("CIFAR-10", 50_000, (32, 32)),
        ("ILSVRC-2012", 1_281_167, (400, 500)),
    ]:
        print(name)
        for line in hyperparams_for(num_examples, size).describe():
            print("   ", line)
    '''),
    md("""
    ## 2. Check the pipeline: evaluate the published CIFAR-10 fine-tune

    `BiT-M-R50x1-CIFAR10` is BiT-M-R50x1 already fine-tuned on CIFAR-10 by Google. Evaluated at 128 px it should
    give 97.6% top-1: a quick end-to-end check of weights, input range and evaluation pipeline (resize straight to
    the crop size, as the reference code). Smoke mode evaluates a random-init `BiT-tiny` instead.
    """),
    code('''
    if SMOKE:
        cifar_model = bit_keras.create_model("BiT-tiny", num_classes=10)
    else:
        cifar_model = bit_keras.create_model("BiT-M-R50x1-CIFAR10", weights="pretrained")
    with tfds_data():
        published = evaluate(cifar_model, "cifar10", split="test", crop=32 if SMOKE else 128, batch_size=250)
    print(f"CIFAR-10 test top-1 {published['top1']:.2%} (full size: 97.6% expected), top-5 {published['top5']:.2%}")
    '''),
    md("""
    ## 3. Fine-tune on tf_flowers

    tf_flowers has a single `train` split of 3,670 photos of 5 flower kinds: train on the first 90%, validate on
    the rest (validation accepts a split name of the same tfds dataset, or any other source). The run prints what
    the HyperRule chose, marking the values we override.
    """),
    code('''
    with tfds_data():
        flowers = transfer(
            BACKBONE, "tf_flowers", split="train[:90%]", validation="train[90%:]", weights=WEIGHTS,
            output_dir=OUT / "tf_flowers",
            **settings(batch_size=512, batch_split=4, resize=160, crop=128),  # raise batch_split if out of memory
        )
    print({k: flowers.metrics[k] for k in ("top1", "top5", "loss", "steps")})
    '''),
    md("""
    ### What was chosen and why

    `result.hyperparams` is the `HyperParams` used; `describe()` explains each value. The same record, with the
    dataset description and the run settings, is in the run folder's `hyperparams.json`.
    """),
    code('''
    print("\\n".join(flowers.hyperparams.describe()))
    record = json.loads((flowers.output_dir / "hyperparams.json").read_text())
    print(json.dumps({k: record[k] for k in ("hyperparams", "dataset")}, indent=1))
    print("files:", sorted(p.name for p in flowers.output_dir.iterdir()))
    '''),
    md("""
    ### Curves and evaluation

    `bit_keras.plots.plot_run(run_dir)` draws the loss, the learning rate (warm-up, then the decays) and the
    validation accuracy from `history.json`. `evaluate_run(run_dir, dataset)` reloads the run's `model.keras` and
    evaluates it on any data with the run's crop and input range (here the validation split again).
    """),
    code('''
    display(Image(filename=str(plot_run(flowers.output_dir))))
    with tfds_data():
        print("evaluate_run:", evaluate_run(flowers.output_dir, "tf_flowers", split="train[90%:]"))
    '''),
    md("""
    ## 4. Few-shot: CIFAR-10 with 5 examples per class

    `examples_per_class=k` trains on exactly k examples of every class (drawn with `seed`). 50 examples in total:
    the HyperRule still runs 500 steps (many epochs of the same 50 images, with random crops and flips) at
    160 / 128 px. The PyTorch colab reached 86.41% this way.
    """),
    code('''
    SHOTS = 2 if SMOKE else 5  # the mock data has at least 3 examples per class
    with tfds_data():
        few_shot = transfer(
            BACKBONE, "cifar10", examples_per_class=SHOTS, validation="test", weights=WEIGHTS,
            output_dir=OUT / f"cifar10_{SHOTS}shot", **settings(batch_size=512, batch_split=4),
        )
    print(f"{SHOTS}-shot CIFAR-10 test top-1 {few_shot.metrics['top1']:.2%} (5-shot at full size: ~86% expected)")
    '''),
    md("""
    ## 5. Optional: all of CIFAR-10

    50,000 examples: 10,000 steps with mixup 0.1. The official README reports 97.2% for BiT-M-R50x1 with
    batch 128 and base lr 0.001 (the HyperRule's schedule is in steps, so a smaller batch trains on fewer images).
    Hours on a single GPU: set `RUN_FULL_CIFAR10 = True` above to run it. The run resumes from its last checkpoint
    if Colab disconnects and you run the cell again.
    """),
    code('''
    if RUN_FULL_CIFAR10 or SMOKE:
        with tfds_data():
            full_cifar = transfer(
                BACKBONE, "cifar10", validation="test", weights=WEIGHTS, output_dir=OUT / "cifar10_full",
                eval_every=None if SMOKE else 1000, **settings(batch_size=128, base_lr=0.001),
            )
        print(f"CIFAR-10 test top-1 {full_cifar.metrics['top1']:.2%} (full size: 97.2% expected)")
    '''),
    md("""
    ## Summary
    """),
    code('''
    rows = [("published BiT-M-R50x1-CIFAR10, CIFAR-10 test", published["top1"], "97.6%"),
            ("tf_flowers (train[90%:])", flowers.metrics["top1"], "~98%"),
            (f"CIFAR-10 {SHOTS}-shot", few_shot.metrics["top1"], "~86% (5-shot)")]
    if RUN_FULL_CIFAR10 or SMOKE:
        rows.append(("CIFAR-10 full", full_cifar.metrics["top1"], "97.2%"))
    print(f"{'experiment':<46} {'top-1':>7}   full-size expectation")
    for name, top1, expected in rows:
        print(f"{name:<46} {top1:>7.2%}   {expected}")
    if SMOKE:
        print("(smoke mode: random init on random mock data, so these numbers mean nothing)")
    '''),
    md("""
    ## Clean up

    Full-size runs stay in `runs/02_transfer` (delete the folder to start over: a run started again on the same
    folder resumes, or finds there is nothing left to train); smoke runs wrote to a temporary folder.
    """),
    code('''
    if SMOKE:
        import shutil

        shutil.rmtree(OUT, ignore_errors=True)
    '''),
]


# ------------------------------------------------------------------------------------------------ notebook 03

NB03 = [
    md("""
    # 03 · Pre-train upstream, publish, serve, and transfer

    The whole BiT story at toy scale, on a CPU, with no downloads:

    1. **Upstream**: pre-train the 0.5M-parameter `BiT-tiny` with the BiT upstream recipe
       (`bit_keras.recipes.pretrain.pretrain`, preset `"tiny"`) on scikit-learn's real handwritten digits 0-4, each also
       rotated by 90/180/270 degrees as classes of their own (20 classes: size and variety upstream, as BiT gets
       from ImageNet-21k).
    2. **Publish**: export the backbone as a TF Hub-style Reusable SavedModel into a versioned registry.
    3. **Serve**: the registry over HTTP (`hub_export.serve`), so that models load by handle as from tfhub.dev:
       `hub.KerasLayer(url)` for tf-keras users, `bit_keras.load_layer(url or handle)` for Keras 3.
    4. **Downstream**: fine-tune on the held-out digits 5-9 from 1 and 5 examples per class with `transfer()`,
       from the served handle, from the upstream weights, and from scratch.

    | | full size (the default, ~6 min on a 2-core CPU) | smoke mode (`BIT_KERAS_SMOKE=1`) |
    |---|---|---|
    | upstream | preset `tiny`: 30 epochs of 56 steps, batch 64, 32 px, lr 0.025 with warm-up, decays after epochs 15/22/27 | 1 epoch of 10 steps |
    | downstream | 1 and 5 examples per class, seeds 0/1/2; 200 steps, batch 32, resize 36 / crop 32, no flips (digits are not mirror-symmetric), base lr 0.01 | 5 per class, seed 0, 3 steps |
    | expected test top-1 on digits 5-9 (mean of 3 seeds) | 1 per class: transfer ~75%, scratch ~66%; 5 per class: transfer ~91%, scratch ~87% (measured on a CPU with TF 2.21; other machines differ slightly) | meaningless |
    """),
    code(INSTALL),
    code(f'''
    import json
    import os
    import tempfile
    import urllib.request
    from pathlib import Path

    {SMOKE_SWITCH}

    WORK = Path(tempfile.mkdtemp(prefix="bit_keras_03_"))  # everything this notebook writes goes here
    REGISTRY = WORK / "registry"  # a hub registry: <publisher>/<name>/<variant>/<version>/ SavedModels
    os.environ["TFHUB_CACHE_DIR"] = str(WORK / "tfhub_cache")  # where tensorflow_hub unpacks downloaded models
    HANDLE = "me/bit-tiny-digits/feature_vector/1"

    UPSTREAM = dict(epochs=1, steps_per_epoch=10) if SMOKE else {{}}  # full size: the "tiny" preset, 30 epochs
    DOWNSTREAM = dict(steps=3 if SMOKE else 200, batch_size=32, resize=36, crop=32, flip=False, base_lr=0.01,
                      progress=False)
    SHOTS, SEEDS = ((5,), (0,)) if SMOKE else ((1, 5), (0, 1, 2))  # examples per class; few-shot draws
    print(f"{{'smoke' if SMOKE else 'full-size'}} run; scratch folder {{WORK}}")
    '''),
    md("""
    ## 1. The data

    `bit_keras.data.digits.load_digits_split` splits scikit-learn's 1,797 8x8 digits (bundled with scikit-learn, no
    download): digits 0-4 (x 4 rotations) upstream; digits 5-9 downstream, half a pool to draw few-shot training
    sets from, half a fixed test set. Images are upscaled to 32x32 uint8 RGB.
    """),
    code('''
    import matplotlib.pyplot as plt
    import numpy as np

    from bit_keras.data.digits import load_digits_split

    data = load_digits_split(size=32)
    print("upstream:", data.upstream_images.shape, data.num_upstream_classes, "classes")
    print("downstream pool:", data.downstream_pool_images.shape, "| test:", data.downstream_test_images.shape,
          "| digits", data.downstream_digits)

    fig, axes = plt.subplots(1, 8, figsize=(10, 1.6))
    picks = [np.flatnonzero(data.upstream_labels == c)[0] for c in (0, 5, 10, 15, 1, 6, 11, 16)]
    for ax, i in zip(axes, picks):
        ax.imshow(data.upstream_images[i])
        ax.set_title(f"class {data.upstream_labels[i]}", fontsize=8)
        ax.axis("off")
    plt.show()
    '''),
    md("""
    ## 2. Upstream pre-training, exported to the registry

    `pretrain()` runs the BiT upstream recipe (inception-style crops and flips, softmax cross-entropy, L2 weight
    decay, linear warm-up then step decays) under a `tf.distribute` strategy, and hands the backbone over as
    `weights.npz` (the official layout: `create_model(..., weights=path)` and `transfer` load it), `model.keras`,
    and with `export_handle=` a SavedModel published in the registry (`hub_export.Registry`).
    """),
    code('''
    from bit_keras import pretrain

    upstream = pretrain(
        "BiT-tiny", (data.upstream_images, data.upstream_labels), preset="tiny", output_dir=WORK / "upstream",
        export_handle=HANDLE, registry=REGISTRY, progress=not SMOKE, **UPSTREAM,
    )
    print(f"{upstream.steps} steps, final loss {upstream.history['loss'][-1]:.3f}; weights {upstream.weights_path}")
    '''),
    code('''
    import hub_export

    registry = hub_export.Registry(REGISTRY)
    print([m["handle"] for m in registry.list()])
    meta = registry.show(HANDLE)  # the version's metadata.json, with per-file checksums
    for key in ("handle", "architecture", "parameters", "upstream_data", "upstream_preset", "steps", "input", "output"):
        print(f"{key:>15}: {json.dumps(meta.get(key))}")
    print("checksum problems:", registry.verify(HANDLE))
    '''),
    md("""
    ## 3. Serve the registry over HTTP

    `hub_export.serve(root, port=0)` starts a read-only server in a background thread on a free port. It answers
    `GET /<handle>?tf-hub-format=compressed` with the SavedModel as a `tar.gz`, which is what `tensorflow_hub` asks
    for when it resolves `http://host:port/<handle>`, and `/models.json` with the listing. From a shell:
    `bit-keras registry serve --root DIR --port 8000`.
    """),
    code('''
    server = hub_export.serve(REGISTRY, port=0)
    url = f"{server.url}/{HANDLE}"
    print("serving", url)
    print(json.load(urllib.request.urlopen(f"{server.url}/models.json"))["models"][0]["handle"])
    '''),
    md("""
    ### tf-keras: `hub.KerasLayer(url)`

    As with any tfhub.dev model: `tensorflow_hub` downloads the archive once into `$TFHUB_CACHE_DIR`.
    `trainable=True` fine-tunes the backbone (the default is frozen). Inputs: float32 RGB in [0, 1].
    """),
    code('''
    import tensorflow_hub as hub
    import tf_keras

    rng = np.random.default_rng(0)
    few = np.concatenate([rng.choice(np.flatnonzero(data.downstream_pool_labels == c), 5, replace=False)
                          for c in range(data.num_downstream_classes)])
    x_few = data.downstream_pool_images[few].astype("float32") / 255.0
    y_few = data.downstream_pool_labels[few]

    hub_layer = hub.KerasLayer(url, trainable=True)
    tfk_model = tf_keras.Sequential([
        tf_keras.Input((32, 32, 3)),
        hub_layer,
        tf_keras.layers.Dense(data.num_downstream_classes, kernel_initializer="zeros"),
    ])
    tfk_model.compile(tf_keras.optimizers.SGD(0.01, momentum=0.9),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    fit = tfk_model.fit(x_few, y_few, batch_size=25, epochs=2 if SMOKE else 30, verbose=0)
    x_test = data.downstream_test_images.astype("float32") / 255.0
    _, test_accuracy = tfk_model.evaluate(x_test, data.downstream_test_labels, verbose=0)
    print(f"tf-keras via hub.KerasLayer: feature {hub_layer(x_few[:1]).shape}, train loss "
          f"{fit.history['loss'][0]:.3f} -> {fit.history['loss'][-1]:.3f}, test accuracy {test_accuracy:.1%}")
    print("(a plain Keras fit: constant lr, no augmentation; transfer() below applies the HyperRule recipe)")
    print("cached under", sorted(p.name for p in Path(os.environ["TFHUB_CACHE_DIR"]).iterdir()))
    '''),
    md("""
    ### Keras 3: `bit_keras.load_layer(url or handle)`

    `load_layer` takes the same URL (through `tensorflow_hub`'s cache), a SavedModel folder, or a registry handle
    (looked up in `registry=`, else `$BIT_KERAS_REGISTRY`). It returns a Keras 3 layer that trains with any
    optimizer (plain `keras.layers.TFSMLayer` fails with momentum or Adam slots).
    """),
    code('''
    import keras

    from bit_keras import load_layer

    by_url = load_layer(url, trainable=True)
    by_handle = load_layer(HANDLE, registry=REGISTRY)
    same = np.abs(np.asarray(by_url(x_few)) - np.asarray(by_handle(x_few))).max()
    print("feature", tuple(by_url(x_few).shape), "| URL vs handle: max |diff|", f"{same:.1e}")

    k3_model = keras.Sequential([keras.Input((32, 32, 3)), by_url,
                                 keras.layers.Dense(data.num_downstream_classes, kernel_initializer="zeros")])
    k3_model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                     keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    k3_fit = k3_model.fit(x_few, y_few, batch_size=25, epochs=2, verbose=0)
    print(f"Keras 3 fine-tuning through load_layer: loss {k3_fit.history['loss'][0]:.3f} -> "
          f"{k3_fit.history['loss'][-1]:.3f}")
    '''),
    md("""
    ## 4. Downstream: `transfer()` from the served model

    `transfer()` takes a URL or a registry handle as the model: it loads the SavedModel with `load_layer`, adds a
    zero-initialised 5-way head, and fine-tunes everything with the HyperRule (here with the schedule, resolution
    and learning rate overridden for 32 px digits, as printed). `examples_per_class=5` draws 5 training images per
    digit from the pool; the test set is fixed.
    """),
    code('''
    from bit_keras import transfer

    pool = (data.downstream_pool_images, data.downstream_pool_labels)
    test = (data.downstream_test_images, data.downstream_test_labels)

    from_handle = transfer(url, pool, examples_per_class=5, seed=0, validation=test,
                           output_dir=WORK / "downstream" / "handle", **DOWNSTREAM)
    print(f"from {url}, 5 per class: test top-1 {from_handle.metrics['top1']:.1%}")
    '''),
    md("""
    ### Transfer versus training from scratch

    The same runs from the upstream `weights.npz` (loaded into `BiT-tiny` under a new zero head; the same network
    as the handle) and from a random init (`weights=None`), with the same budget and learning rate, over a few
    few-shot draws. At this toy scale the upstream data is tiny (901 images of 5 digits, x 4 rotations) and digits
    are easy to learn from scratch, so expect a modest gain, largest at 1 example per class and varying with the
    draw; BiT's large gains come from large upstream data (ImageNet-21k for BiT-M). `bit-keras demo` runs the same
    comparison with a learning-rate sweep for each side.
    """),
    code('''
    import contextlib
    import io

    for k in SHOTS:
        top1 = {"transfer": [], "scratch": []}
        for seed in SEEDS:
            for side, weights in (("transfer", upstream.weights_path), ("scratch", None)):
                with contextlib.redirect_stdout(io.StringIO()):  # each run prints the settings shown above
                    run = transfer("BiT-tiny", pool, weights=weights, examples_per_class=k, seed=seed,
                                   validation=test, **DOWNSTREAM)
                top1[side].append(run.metrics["top1"])
        print(f"{k} per class, {len(SEEDS)} draw(s): " + " | ".join(
            f"{side} {np.mean(v):.1%} ± {np.std(v):.1%}" for side, v in top1.items()))
    '''),
    md("""
    ## Shut down and clean up

    Always stop the server: it holds a port and a temporary folder of archives.
    """),
    code('''
    import shutil

    server.shutdown()
    shutil.rmtree(WORK, ignore_errors=True)
    print("server stopped")
    '''),
]


NOTEBOOKS = {
    "01_load_and_classify.ipynb": NB01,
    "02_transfer_with_hyperrule.ipynb": NB02,
    "03_pretrain_export_serve.ipynb": NB03,
}

METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
    "colab": {"provenance": []},
}
GPU_NOTEBOOKS = ("01_load_and_classify.ipynb", "02_transfer_with_hyperrule.ipynb")  # Colab: ask for a GPU runtime


def build(name: str) -> str:
    """The notebook ``name`` as the text of its ``.ipynb`` file."""
    stem = name.split("_")[0]
    cells = []
    for i, (kind, source) in enumerate(NOTEBOOKS[name]):
        make = v4.new_markdown_cell if kind == "markdown" else v4.new_code_cell
        cells.append(make(source, id=f"nb{stem}-cell{i:02d}"))
    metadata = {**METADATA, **({"accelerator": "GPU"} if name in GPU_NOTEBOOKS else {})}
    nb = v4.new_notebook(cells=cells, metadata=metadata)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        text, path = build(name), HERE / name
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print("wrote", path)
    if stale:
        print("out of date (run python examples/_build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
