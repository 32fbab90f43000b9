"""The few-shot linear probe (bit_keras.evals): the closed form, the regulariser chosen without the test set,
features computed once and cached (in memory and on disk, resumed after an interruption), the command line."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from bit_keras import cli
from bit_keras.errors import ConfigError, DataError, UnknownModelError
from bit_keras.evals import features as feats_module
from bit_keras.evals.features import FeatureStore, Preprocessing, feature_model, model_fingerprint
from bit_keras.evals.fewshot import FEATURES_DIR, fewshot_probe
from bit_keras.evals.lsr import L2_GRID, RidgePath, choose_l2, fit_lsr, selection_plan

# ------------------------------------------------------------------------------------------- the closed form


def _standardised(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, std = x.mean(axis=0), x.std(axis=0)
    return (x - mean) / std, mean, std


@pytest.mark.parametrize("n_per_class, dim", [(3, 40), (30, 6)])  # dual (n < d) and primal (n > d) solves
def test_closed_form_equals_a_direct_least_squares_solve(n_per_class, dim):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), n_per_class)
    x = rng.normal(size=(len(labels), dim)) * rng.uniform(0.1, 10, dim) + rng.normal(size=dim)
    y = np.eye(4)[labels]
    xs, mean, std = _standardised(x)
    yc = y - y.mean(axis=0)
    alpha = 0.3
    l2 = alpha * dim
    # Ridge as ordinary least squares on the augmented system [X; sqrt(l2) I] W = [Y; 0].
    augmented = np.vstack([xs, np.sqrt(l2) * np.eye(dim)])
    direct = np.linalg.lstsq(augmented, np.vstack([yc, np.zeros((dim, 4))]), rcond=None)[0]
    path = RidgePath(x, labels, 4)
    np.testing.assert_allclose(path.weights(l2), direct, rtol=1e-8, atol=1e-10)
    probe = path.probe(alpha)
    x_new = rng.normal(size=(7, dim))
    np.testing.assert_allclose(probe.scores(x_new), ((x_new - mean) / std) @ direct + y.mean(axis=0), atol=1e-9)
    # l2 = 0 is plain least squares (the minimum-norm solution when n < d), as np.linalg.lstsq gives it.
    np.testing.assert_allclose(path.weights(0.0), np.linalg.lstsq(xs, yc, rcond=None)[0], rtol=1e-6, atol=1e-8)
    # One decomposition serves every strength: the grid's accuracies are those of each probe fitted alone.
    grid = [0.001, 0.1, 10.0]
    x_val, y_val = rng.normal(size=(20, dim)) * 3, rng.integers(0, 4, 20)
    assert path.accuracies(x_val, y_val, grid) == [path.probe(a).accuracy(x_val, y_val) for a in grid]
    # {0, 1} and {-1, +1} targets: the same predictions (centred targets differ by a factor of 2).
    plus_minus = RidgePath(x, labels, 4, targets="plus_minus_one").probe(alpha)
    np.testing.assert_allclose(plus_minus.scores(x_new), 2 * probe.scores(x_new) - 1, atol=1e-9)


def test_separable_features_give_100_percent():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(5, 64)) * 4
    train_labels, test_labels = np.repeat(np.arange(5), 2), np.repeat(np.arange(5), 40)
    train = centres[train_labels] + rng.normal(size=(10, 64)) * 0.5
    test = centres[test_labels] + rng.normal(size=(200, 64)) * 0.5
    for alpha in L2_GRID:
        assert fit_lsr(train, train_labels, num_classes=5, alpha=alpha).accuracy(test, test_labels) == 1.0
    # Not a tautology: the same probe on shuffled test labels is at chance.
    assert fit_lsr(train, train_labels, num_classes=5, alpha=1.0).accuracy(test, rng.permutation(test_labels)) < 0.5


def test_constant_feature_dimensions_do_not_blow_up_and_bad_input_is_refused():
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0], [4.0, 5.0]])  # the second dimension is constant
    probe = fit_lsr(x, np.array([0, 0, 1, 1]), num_classes=2, alpha=0.01)
    assert probe.weights[1].tolist() == [0.0, 0.0]
    assert probe.predict(np.array([[1.0, 1e9], [4.0, -1e9]])).tolist() == [0, 1]
    with pytest.raises(DataError, match="NaN"):
        fit_lsr(np.array([[np.nan], [1.0]]), np.array([0, 1]), num_classes=2, alpha=1.0)
    with pytest.raises(DataError, match=r"labels must be in \[0, 2\)"):
        fit_lsr(x, np.array([0, 0, 1, 2]), num_classes=2, alpha=1.0)
    with pytest.raises(ConfigError, match="targets"):
        RidgePath(x, np.array([0, 0, 1, 1]), 2, targets="zero_one")


def test_the_choice_uses_only_pool_examples_and_prefers_strong_regularisation_on_ties():
    labels = np.repeat(np.arange(3), 10)
    plan = selection_plan(labels, 3, [1, 4], seed=100, draws=2, held_out_per_class=20)
    held = set(plan["held_out"].tolist())
    assert len(held) == 3 * 5  # at most half of each class (and leaving max(shots))
    for k, sets in plan["draws"].items():
        for chosen in sets:
            assert not held & set(chosen.tolist()) and np.bincount(labels[chosen]).tolist() == [k] * 3
    # Features that say nothing: every strength scores the same and the strongest wins.
    flat = np.ones((30, 4))  # constant features
    assert choose_l2(flat, labels, 3, plan, 4).alpha == max(L2_GRID)
    # A class with nothing to spare: the default strength, and the record says why.
    tight = selection_plan(np.repeat(np.arange(2), 3), 2, [3])
    assert choose_l2(np.ones((6, 2)), np.repeat(np.arange(2), 3), 2, tight, 3).method.startswith("default")


# -------------------------------------------------------------------------------------- models and features


def _conv_features(seed: int = 0) -> keras.Model:
    """A small random conv net ending in pooled features (a feature model: one [batch, d] output)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(24, 3, activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def _data(n_per_class: int, seed: int, classes: int = 3, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    base = rng.integers(0, 256, (classes, size, size, 3))
    noise = rng.integers(-60, 60, (len(labels), size, size, 3))
    return np.clip(base[labels] + noise, 0, 255).astype(np.uint8), labels


def _count_forwards(monkeypatch: pytest.MonkeyPatch, model: keras.Model, fail_at_call: int | None = None) -> list[int]:
    """Count the images of every forward pass the probe runs on ``model`` (and optionally interrupt one)."""
    counts: list[int] = []
    forward = model.predict_on_batch

    def counting(x):
        if fail_at_call is not None and len(counts) + 1 == fail_at_call:
            raise KeyboardInterrupt
        counts.append(len(x))
        return forward(x)

    monkeypatch.setattr(model, "predict_on_batch", counting)
    return counts


def test_feature_models_and_preprocessing():
    import bit_keras

    classifier = bit_keras.create_model("BiT-tiny", num_classes=7)
    extractor, info = feature_model(classifier)
    assert info is None and extractor.output_shape == (None, 512)  # the pre_logits layer, not the 7 logits
    zoo, info = feature_model("BiT-tiny", weights=None)
    assert info.name == "BiT-tiny" and zoo.output_shape == (None, 512)
    with pytest.raises(ConfigError, match="feature vector"):
        feature_model(keras.Model(classifier.input, classifier.get_layer("block4").output))
    with pytest.raises(UnknownModelError, match="Closest names"):
        feature_model("BiT-S-R50x9")
    # Shorter side to resolution / crop_pct, centre crop; the input range.
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 25:35] = 255  # a bright vertical band in the middle
    out = np.asarray(Preprocessing(16, 0.5, "bicubic", (-1, 1))(image))
    assert out.shape == (16, 16, 3) and out.min() == -1.0 and out.max() == pytest.approx(1.0, abs=0.02)
    assert out[:, 8].mean() > 0.9 and out[:, 0].mean() == -1.0  # 32x48 cropped to its centre 16x16
    with pytest.raises(ConfigError, match="interpolation"):
        Preprocessing(16, 1.0, "fancy")


def test_fingerprint_and_store_key_follow_the_weights_and_the_preprocessing():
    a, b, c = _conv_features(0), _conv_features(0), _conv_features(1)
    assert model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)
    prep = Preprocessing(12)
    assert FeatureStore(a, prep).key == FeatureStore(b, prep).key
    assert FeatureStore(a, prep).key != FeatureStore(c, prep).key
    assert FeatureStore(a, prep).key != FeatureStore(a, Preprocessing(12, interpolation="bicubic")).key
    assert FeatureStore(a, prep).key != FeatureStore(a, Preprocessing(12, input_range=(-1, 1))).key


# ------------------------------------------------------------------------------------------------ the probe


def test_the_regulariser_is_chosen_without_the_test_set():
    pool, test = _data(20, 0), _data(10, 1)
    kwargs = dict(shots=(1, 3), seeds=(0, 1), progress=False, resolution=12)
    clean = fewshot_probe(_conv_features(0), pool, test_dataset=test, **kwargs)
    # A poisoned test set: other images, labels rotated. Only the reported accuracy may change.
    poisoned_images = np.ascontiguousarray(test[0][:, ::-1])
    poisoned = fewshot_probe(_conv_features(0), pool, test_dataset=(poisoned_images, (test[1] + 1) % 3), **kwargs)
    assert poisoned.l2 == clean.l2
    assert poisoned.top1 != clean.top1
    assert all(len(c["held_out_top1"]) == len(L2_GRID) for c in clean.l2)  # a real choice among the grid
    assert clean.record["l2_selection"]["held_out"] == 3 * 10


def test_features_are_computed_once_and_a_resumed_run_computes_nothing(tmp_path, monkeypatch):
    pool, test = _data(12, 2), _data(6, 3)
    kwargs = dict(shots=(1, 2, 5), seeds=(0, 1, 2), output_dir=tmp_path, progress=False, resolution=12,
                  batch_size=4)
    model = _conv_features(0)
    counts = _count_forwards(monkeypatch, model)
    first = fewshot_probe(model, pool, test_dataset=test, **kwargs)
    used = first.record["dataset"]["used"]
    # 3 shot counts x 3 seeds need 72 pool examples (and the choice of L2 more): each of the <= 36 images once.
    assert used <= 36
    assert sum(counts) == first.features_computed == used + 18
    assert first.features_cached == 0
    # In memory, another call with the same model computes nothing.
    again = fewshot_probe(model, pool, test_dataset=test, **{**kwargs, "output_dir": None})
    assert sum(counts) == used + 18 and again.features_computed == 0 and again.top1 == first.top1
    # A new process would start with an empty memory: the disk cache alone serves a rebuilt model.
    feats_module._MEMORY.clear()
    rebuilt = _conv_features(0)
    rebuilt_counts = _count_forwards(monkeypatch, rebuilt)
    resumed = fewshot_probe(rebuilt, pool, test_dataset=test, **kwargs)
    assert rebuilt_counts == [] and resumed.features_computed == 0 and resumed.features_cached == used + 18
    assert resumed.top1 == first.top1 and resumed.per_seed == first.per_seed
    # Another model in the same folder is never served the first one's features.
    feats_module._MEMORY.clear()
    other = _conv_features(1)
    other_counts = _count_forwards(monkeypatch, other)
    fewshot_probe(other, pool, test_dataset=test, **kwargs)
    assert sum(other_counts) == used + 18
    assert len(list((tmp_path / FEATURES_DIR).iterdir())) == 2


def test_an_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch, capsys):
    pool, test = _data(12, 4), _data(6, 5)
    kwargs = dict(shots=(1, 4), seeds=(0, 1), output_dir=tmp_path, progress=False, resolution=12, batch_size=4)
    model = _conv_features(0)
    counts = _count_forwards(monkeypatch, model, fail_at_call=4)  # Ctrl-C during the 4th forward pass
    with pytest.raises(KeyboardInterrupt):
        fewshot_probe(model, pool, test_dataset=test, **kwargs)
    assert counts == [4, 4, 4]  # 12 features computed, and kept on disk
    assert not (tmp_path / "fewshot.json").exists()
    parts = list((tmp_path / FEATURES_DIR).glob("*/part-*.npz"))
    assert sum(len(np.load(p)["features"]) for p in parts) == 12
    (parts[0].parent / "part-damaged.npz").write_bytes(b"not an npz")  # ignored, named, never fatal
    feats_module._MEMORY.clear()
    rebuilt = _conv_features(0)
    more = _count_forwards(monkeypatch, rebuilt)
    result = fewshot_probe(rebuilt, pool, test_dataset=test, **kwargs)
    assert "ignoring unreadable feature cache part" in capsys.readouterr().out
    assert sum(more) == result.features_computed == result.record["dataset"]["used"] + 18 - 12
    assert result.features_cached == 12
    assert json.loads((tmp_path / "fewshot.json").read_text())["top1"] == result.top1


def test_k_larger_than_the_smallest_class_names_it():
    images, labels = _data(6, 0)
    labels = labels.copy()
    labels[:3] = 1  # class 0 keeps 3 examples
    with pytest.raises(DataError, match=r"class 0 has only 3 examples, fewer than examples_per_class=5"):
        fewshot_probe(_conv_features(0), (images, labels), test_dataset=_data(2, 1), shots=(1, 5), progress=False)
    with pytest.raises(ConfigError, match="shots"):
        fewshot_probe(_conv_features(0), (images, labels), test_dataset=_data(2, 1), shots=(0, 1), progress=False)


# ------------------------------------------------------------------------------------------ the command line


def _image_folder(root: Path, counts: dict[str, int], seed: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(rng.integers(-40, 40, (16, 16, 3)) + 60 * (c + 1), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_cli_writes_fewshot_json_and_the_plot(tmp_path, capsys):
    train = _image_folder(tmp_path / "train", {"cat": 6, "dog": 6, "owl": 6}, 0)
    test = _image_folder(tmp_path / "test", {"cat": 3, "dog": 3, "owl": 3}, 1)
    out = tmp_path / "probe"
    code = cli.main(["fewshot", "--model", "BiT-tiny", "--weights", "none", "--dataset", str(train),
                     "--test-dataset", str(test), "--shots", "1,2", "--seeds", "0,1", "--output", str(out),
                     "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    record = json.loads((out / "fewshot.json").read_text())
    assert record["examples_per_class"] == [1, 2] and record["seeds"] == [0, 1]
    assert len(record["top1"]) == 2 and all(len(s) == 2 for s in record["top1_per_seed"])
    assert record["preprocessing"] == {"resolution": 32, "crop_pct": 1.0, "interpolation": "bilinear",
                                       "input_range": [0.0, 1.0]}  # BiT-tiny's zoo entry
    assert record["dataset"]["class_names"] == ["cat", "dog", "owl"] and record["test"]["num_examples"] == 9
    assert (out / "fewshot.png").stat().st_size > 5000
    assert "| examples per class | test top-1 |" in printed and "fewshot.json" in printed
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries


def _fails_with_one_line(capsys, argv, *needles):
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("bit-keras fewshot: error: "), err
    for needle in needles:
        assert needle in lines[0], err


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    train = _image_folder(tmp_path / "train", {"cat": 2, "dog": 5}, 0)
    base = ["fewshot", "--weights", "none", "--dataset", str(train), "--test-dataset", str(train)]
    _fails_with_one_line(capsys, [*base, "--model", "BiT-tiny", "--shots", "1,3"],
                         "class 0 ('cat') has only 2 examples", "examples_per_class=3")
    _fails_with_one_line(capsys, [*base, "--model", "BiT-S-R50x9"], "Unknown BiT model 'BiT-S-R50x9'", "BiT-S-R50x1")


# The demo reports the probe (upstream vs random-init features): checked in the one end-to-end story,
# tests/test_story.py, which runs the demo.
