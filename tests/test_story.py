"""The one end-to-end story, across both packages: pre-train upstream, export, publish, transfer, beat scratch.

``bit_keras.recipes.demo.run_demo`` (what ``bit-keras demo`` runs) pre-trains BiT-tiny upstream on digits 0-4 and
their rotations (``bit_keras.pretrain``), publishes the backbone in a hub registry (``hub_export``), and fine-tunes
it on digits 5-9 from 1 and 5 examples per class against the same network trained from scratch. The test then
takes the published model back by its registry handle, as a user of the registry does, and checks each hand-over:
the upstream files, the registry entry, the SavedModel against the upstream weights, transfer from the handle, and
BiT's claim itself (transfer beats scratch).

Every other test checks one part on its own; the tutorial notebooks (tests/test_notebooks.py) tell this story
to readers.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import bit_keras
import hub_export
from bit_keras.data.digits import load_digits_split
from bit_keras.recipes.demo import HANDLE, DemoConfig, run_demo
from bit_keras.recipes.transfer import evaluate_run, transfer
from hub_export.load import SavedModelLayer, load_layer

# The demo's quick budget with 6 upstream epochs, 30 steps and three seeds, enough for the claim to show in the
# mean over seeds (one seed is not: with 3 epochs and 20 steps, seed 0 gave transfer 0.54 vs scratch 0.66 at 1
# example per class; two were not always: a CI run gave means of 0.619 vs 0.577 at 1 example per class, where
# this machine gets 0.730 vs 0.565 for the same two seeds: oneDNN and thread scheduling make the runs differ).
# Measured on a 2-core CPU, test top-1 per seed (0, 1, 2): transfer 0.799, 0.661, 0.690 at 1 example per class and
# 0.830, 0.850, 0.895 at 5; scratch 0.654, 0.475, 0.484 and 0.746, 0.592, 0.746. Means: 0.717 vs 0.538, 0.859 vs
# 0.694 (113 s for the whole demo).
STORY = DemoConfig(examples_per_class=(1, 5), seeds=(0, 1, 2), upstream_epochs=6, steps=30, learning_rates=(0.01,))
MARGIN = 0.05


@pytest.mark.e2e
def test_pretrain_export_registry_transfer(tmp_path, monkeypatch):
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BIT_KERAS_REGISTRY", str(tmp_path / "registry"))  # where a bare handle is looked up
    results = run_demo(tmp_path, config=STORY, progress=False)

    # 1. Upstream: pre-trained with the recipe, handed over as weights.npz (and model.keras, upstream.json).
    upstream = tmp_path / "upstream"
    record = json.loads((upstream / "upstream.json").read_text())
    steps_per_epoch = record["steps_per_epoch"]
    assert record["num_classes"] == 20 and record["num_examples"] == results["upstream"]["examples"] == 3604
    assert record["steps"] == results["upstream"]["steps"] == STORY.upstream_epochs * steps_per_epoch
    assert results["upstream"]["final_loss"] < math.log(20)  # learnt something: below the loss of a uniform guess
    assert (upstream / "model.keras").is_file()

    # 2. Publish: one verified version in the registry, its metadata naming the upstream data.
    registry = hub_export.Registry(tmp_path / "registry")
    assert results["upstream"]["handle"] == HANDLE
    assert [m["handle"] for m in registry.list()] == [HANDLE]
    assert registry.verify(HANDLE) == []
    entry = registry.show(HANDLE)
    assert entry["kind"] == "feature_vector" and entry["upstream_data"].startswith("scikit-learn digits 0-4")

    # 3. The published SavedModel is the upstream network: the features of weights.npz in a fresh BiT-tiny.
    data = load_digits_split(size=32)
    pool = (data.downstream_pool_images, data.downstream_pool_labels)
    test = (data.downstream_test_images, data.downstream_test_labels)
    x = test[0][:8].astype("float32") / 255
    published = load_layer(HANDLE)  # found through $BIT_KERAS_REGISTRY
    from_npz = bit_keras.create_model("BiT-tiny", weights=upstream / "weights.npz", num_classes=None)
    features = np.asarray(published(x))
    assert features.shape == (8, 512) and features.std() > 0.01
    np.testing.assert_allclose(features, np.asarray(from_npz(x)), atol=1e-5)

    # 4. Transfer from the handle: the SavedModel layer (trainable) plus a zero head, fine-tuned with the demo's
    #    5-shot settings. Fed in [-1, 1], which the model maps back to the layer's [0, 1].
    run = tmp_path / "from_handle"
    from_handle = transfer(HANDLE, pool, examples_per_class=5, seed=0, validation=test, input_range=(-1, 1),
                           output_dir=run, batch_size=STORY.batch_size, steps=STORY.steps,
                           resize=STORY.image_size + STORY.image_size // 8, crop=STORY.image_size,
                           base_lr=STORY.learning_rates[0], flip=False, progress=False)
    assert from_handle.model.output_shape == (None, 5) and from_handle.dataset_info.num_examples == 25
    # the same network, data, seed and budget as the demo's seed-0 transfer from weights.npz: the same accuracy
    assert from_handle.metrics["top1"] == pytest.approx(results["transfer_per_seed"][1][0], abs=0.02)
    tuned = next(layer for layer in from_handle.model.layers if isinstance(layer, SavedModelLayer))
    assert not np.allclose(np.asarray(tuned(x)), features, atol=1e-4)  # the backbone itself was fine-tuned
    scores = evaluate_run(run, test)  # model.keras reloads the SavedModel layer
    assert scores["top1"] == pytest.approx(from_handle.metrics["top1"]) and scores["num_examples"] == len(test[1])

    # 5. The claim: with the same budget, transfer beats training from scratch (means over the seeds).
    for i, k in enumerate(STORY.examples_per_class):
        assert results["transfer"][i] > results["scratch"][i] + MARGIN, (k, results["transfer"], results["scratch"])

    # 6. The demo's report.
    assert json.loads((tmp_path / "demo.json").read_text()) == json.loads(json.dumps(results))
    assert results["examples_per_class"] == [1, 5] and results["seeds"] == [0, 1, 2]
    for side in ("transfer", "scratch"):
        per_seed = results[f"{side}_per_seed"]
        assert [len(accs) for accs in per_seed] == [3, 3]
        assert results[side] == pytest.approx([float(np.mean(accs)) for accs in per_seed])
        assert results[f"{side}_std"] == pytest.approx([float(np.std(accs)) for accs in per_seed])
    assert results["downstream"]["test"] == len(test[1]) and results["downstream"]["pool"] == len(pool[1])
    # 7. The few-shot probe on frozen features (bit_keras.fewshot_probe), upstream vs a random network's.
    for side in ("upstream", "random"):
        assert len(results[f"probe_{side}"]) == len(STORY.examples_per_class)
        assert all(0.2 < v <= 1.0 for v in results[f"probe_{side}"])  # above chance (5 classes)
        assert results["probe"][side]["features_computed"] > 0
    assert np.mean(results["probe_upstream"]) > np.mean(results["probe_random"])  # the representation transfers
    assert (tmp_path / "demo.png").stat().st_size > 5000
