"""The few-shot linear probe: how good are a model's frozen features with k labelled examples per class?

:func:`fewshot_probe` computes the pre-logits of every image it needs once (cached by image content, see
:mod:`bit_keras.evals.features`), then for every shot count k and seed draws k examples per class from the
training pool exactly as ``transfer(examples_per_class=k, seed=s)`` would (:func:`bit_keras.data.fewshot.
sample_few_shot`), fits the closed-form L2-regularised least-squares classifier (:mod:`bit_keras.evals.lsr`,
big_vision's "fewshot_lsr" idea) and reports top-1 on the test data, mean ± std over the seeds. The L2
strength is chosen per k on the pool alone (:func:`~bit_keras.evals.lsr.choose_l2`); the test set is only
ever scored. With ``output_dir`` it writes ``fewshot.json`` and ``fewshot.png`` there, and keeps the features
under ``output_dir/features`` so that a second or interrupted run computes no feature twice.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat(np.arange(3), 12)
    >>> images = (rng.random((36, 16, 16, 3)) * 60 + labels[:, None, None, None] * 80).astype(np.uint8)
    >>> r = fewshot_probe("BiT-tiny", (images[::2], labels[::2]), test_dataset=(images[1::2], labels[1::2]),
    ...                   weights=None, shots=(1, 3), seeds=(0, 1), progress=False)  # doctest: +ELLIPSIS
    Few-shot probe: BiT-tiny ...
    >>> r.shots, len(r.per_seed[1]), r.features_computed
    ([1, 3], 2, 36)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bit_keras.atomic import write_json
from bit_keras.data.fewshot import sample_few_shot
from bit_keras.data.sources import DatasetInfo, load_dataset
from bit_keras.errors import ConfigError, DataError
from bit_keras.evals.features import FeatureStore, extract_features, feature_model, preprocessing_for
from bit_keras.evals.lsr import L2_GRID, RidgePath, choose_l2, selection_plan

RESULTS_FILE = "fewshot.json"
PLOT_FILE = "fewshot.png"
FEATURES_DIR = "features"
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = (0, 1, 2)
_SPLIT_RE = re.compile(r"^(train|test|validation|valid|val|dev|eval|holdout)\w*(\[[^\]]*\])?(\+.+)?$", re.I)


@dataclass
class FewShotResult:
    """What :func:`fewshot_probe` returns (``to_dict()`` is ``fewshot.json``).

    Attributes:
        shots: the shot counts (examples per class), ascending.
        seeds: the seeds of the k-shot draws.
        top1 / top1_std: test top-1 per shot count, mean and (population) std over the seeds.
        per_seed: per shot count, the top-1 of each seed.
        l2: per shot count, the chosen strength and the held-out scores it was chosen from.
        features_computed: forward passes (images) this call ran; 0 when every feature was cached.
        features_cached: needed features found in the cache.
    """

    shots: list[int]
    seeds: list[int]
    top1: list[float]
    top1_std: list[float]
    per_seed: list[list[float]]
    l2: list[dict[str, Any]]
    features_computed: int
    features_cached: int
    record: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.record, "examples_per_class": self.shots, "seeds": self.seeds, "top1": self.top1,
                "top1_std": self.top1_std, "top1_per_seed": self.per_seed, "l2": self.l2,
                "features": {**self.record.get("features", {}), "computed": self.features_computed,
                             "cached": self.features_cached}}

    def format_table(self) -> str:
        """The results as a Markdown table.

        Example:
            >>> print(FewShotResult([1, 5], [0, 1], [0.5, 0.75], [0.05, 0.0], [[0.45, 0.55], [0.75, 0.75]],
            ...                     [{"alpha": 1.0}, {"alpha": 0.1}], 0, 0).format_table())
            | examples per class | test top-1 | L2 (alpha = l2 / d) |
            |---:|---:|---:|
            | 1 | 0.500 ± 0.050 | 1 |
            | 5 | 0.750 ± 0.000 | 0.1 |
            (linear probe on frozen features, mean ± std over 2 seeds)
        """
        lines = ["| examples per class | test top-1 | L2 (alpha = l2 / d) |", "|---:|---:|---:|"]
        for k, m, s, c in zip(self.shots, self.top1, self.top1_std, self.l2):
            lines.append(f"| {k} | {m:.3f} ± {s:.3f} | {c['alpha']:g} |")
        lines.append(f"(linear probe on frozen features, mean ± std over {len(self.seeds)} seeds)")
        return "\n".join(lines)


def _ints(values: Sequence[int], what: str, minimum: int) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be integers, got {values!r}") from None
    if not out or min(out) < minimum or any(int(v) != v for v in values):
        raise ConfigError(f"{what} must be a non-empty list of integers >= {minimum}, got {list(values)!r}")
    return sorted(set(out))


def _is_tfds_name(source: Any) -> bool:
    return isinstance(source, str) and not (
        os.path.exists(os.path.expanduser(source)) or source.startswith(("/", "./", "../", "~", "\\")))


def _load_test(test_dataset: Any, dataset: Any, info: DatasetInfo, strict: bool,
               data_dir: str | None) -> tuple[tf.data.Dataset, DatasetInfo]:
    """The test data: a split name of a tfds ``dataset`` (``"test"``), or any source ``load_dataset`` takes."""
    kwargs = {"num_classes": info.num_classes, "strict": strict, "data_dir": data_dir}
    if isinstance(test_dataset, str) and _SPLIT_RE.match(test_dataset) and not os.path.exists(test_dataset):
        if not _is_tfds_name(dataset):
            raise DataError(f"test_dataset={test_dataset!r} is a split name, but the training data is not a "
                            "tensorflow-datasets name: pass the test data itself (a folder, arrays, a tf.data.Dataset)")
        name = dataset[len("tfds:"):] if dataset.startswith("tfds:") else dataset
        ds, test_info = load_dataset("tfds:" + name.partition(":")[0], split=test_dataset, **kwargs)
    else:
        ds, test_info = load_dataset(test_dataset, **kwargs)
    if info.class_names and test_info.class_names and list(info.class_names) != list(test_info.class_names):
        raise DataError(f"the test classes {test_info.class_names} differ from the training classes "
                        f"{info.class_names}: labels would not line up; give both folders the same class sub-folders")
    return ds, test_info


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    parts = list(ds.map(lambda x, y: y).batch(8192).as_numpy_iterator())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros([0], np.int64)


def _describe(model: Any, weights: Any) -> str:
    if isinstance(model, keras.Model):
        return f"keras.Model {model.name!r}"
    return f"{os.fspath(model)} (weights {'none' if weights is None else os.fspath(weights)})"


def fewshot_probe(
    model: str | os.PathLike | keras.Model,
    dataset: Any,
    *,
    test_dataset: Any,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    weights: str | os.PathLike | None = "pretrained",
    output_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    split: str = "train",
    resolution: int | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    input_range: Sequence[float] = (0.0, 1.0),
    batch_size: int = 64,
    l2_grid: Sequence[float] = L2_GRID,
    selection_seed: int = 100,
    selection_draws: int = 3,
    held_out_per_class: int = 20,
    strict: bool = True,
    data_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FewShotResult:
    """Few-shot linear probe of ``model``'s frozen pre-logits: test top-1 per shot count, mean ± std over seeds.

    Args:
        model: a zoo name (built like ``create_model``, with ``weights``) or a ``keras.Model`` (its
            ``pre_logits`` layer, or its output when it is a feature model ``[batch, d]``).
        dataset: the training pool, any source ``transfer()`` takes (``load_dataset``: a folder, ``(images,
            labels)`` arrays, a ``tf.data.Dataset``, a tfds name).
        test_dataset: the test data: any such source, or a split name of a tfds ``dataset`` (``"test"``).
        shots: examples per class; each k-shot set is ``sample_few_shot(pool labels, k, seed)``, the set
            ``transfer(examples_per_class=k, seed=seed)`` trains on. A k larger than the smallest class raises
            DataError naming the class.
        seeds: the draws per shot count.
        weights: for a zoo name: ``"pretrained"``, a local ``.npz`` or URL, or None (random init seeded by
            ``seed``); for a ``keras.Model``, a path loads that ``.npz`` into it.
        output_dir: where ``fewshot.json`` and ``fewshot.png`` go, and the feature cache (``features/``).
        cache_dir: the feature cache's folder, if not ``output_dir/features`` (None with no ``output_dir``:
            in memory only).
        resolution, crop_pct, interpolation: the preprocessing; default the zoo entry's (for a ``keras.Model``:
            the pool's image size, resized straight, bilinear). ``input_range``: the range the model takes.
        l2_grid: the strengths ``alpha = l2 / feature_dim`` to choose from (one value: no choice).
        selection_seed, selection_draws, held_out_per_class: the choice of the strength, on the pool alone:
            per class ``held_out_per_class`` pool examples (at most half of the class, and leaving
            ``max(shots)``) are held out with ``selection_seed``; for each k, ``selection_draws`` k-shot sets are
            drawn from the rest and each strength is scored on the held-out examples; the best mean wins
            (ties: the stronger). Only the features of the examples some draw or the held-out part uses are
            computed.

    Returns:
        A :class:`FewShotResult`.
    """
    started = time.perf_counter()
    shots, seeds = _ints(shots, "shots", 1), _ints(seeds, "seeds", 0)
    if not len(l2_grid) or min(float(a) for a in l2_grid) < 0:
        raise ConfigError(f"l2_grid must hold one or more strengths >= 0, got {list(l2_grid)!r}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if dataset is None or test_dataset is None:
        raise ConfigError("fewshot_probe() needs dataset= (the training pool) and test_dataset=")
    if not isinstance(model, (str, os.PathLike, keras.Model)):
        raise ConfigError(f"model must be a zoo name or a keras.Model; got {type(model).__name__}")
    if isinstance(model, (str, os.PathLike)):  # an unknown name fails before any data is read
        from bit_keras.models.presets import get_model_info

        get_model_info(os.fspath(model))

    pool_ds, info = load_dataset(dataset, split=split, strict=strict, data_dir=data_dir)
    labels = _labels(pool_ds)
    n_cls = info.num_classes
    # Every k-shot set, drawn before anything is computed: a class too small for max(shots) is named here.
    draws = {(k, s): sample_few_shot(labels, k, s, num_classes=n_cls, class_names=info.class_names)
             for k in reversed(shots) for s in seeds}
    test_ds, test_info = _load_test(test_dataset, dataset, info, strict, data_dir)
    plan = selection_plan(labels, n_cls, shots, seed=selection_seed, draws=selection_draws,
                          held_out_per_class=held_out_per_class) if len(l2_grid) > 1 else {"held_out": [], "draws": {}}
    needed = np.zeros(len(labels), bool)
    for idx in [*draws.values(), plan["held_out"], *(d for ds in plan["draws"].values() for d in ds)]:
        needed[np.asarray(idx, np.int64)] = True

    extractor, zoo = feature_model(model, weights=weights, input_range=input_range, seed=seed, progress=progress)
    prep = preprocessing_for(zoo, resolution=resolution, crop_pct=crop_pct, interpolation=interpolation,
                             input_range=input_range, image_size=info.image_size)
    out = Path(output_dir) if output_dir is not None else None
    cache = cache_dir if cache_dir is not None else (out / FEATURES_DIR if out is not None else None)
    description = _describe(model, weights)
    store = FeatureStore(extractor, prep, cache, description={"model_description": description})
    print(f"Few-shot probe: {description} on {info.source}: {n_cls} classes, pool {info.num_examples} "
          f"({int(needed.sum())} used), test {test_info.num_examples}; {prep.resolution} px "
          f"(crop_pct {prep.crop_pct:g}, {prep.interpolation}), features {extractor.output_shape[-1]}-d, "
          f"cache {store.directory or 'in memory'} ({len(store)} cached)")

    pool_feats, pool_labels, computed_pool = extract_features(extractor, pool_ds, prep, store, batch_size=batch_size,
                                                              keep=needed, progress=progress)
    if not np.array_equal(pool_labels, labels[needed]):
        raise DataError("the training source yields a different order on each pass: pass a deterministic one")
    test_feats, test_labels, computed_test = extract_features(extractor, test_ds, prep, store, batch_size=batch_size,
                                                              progress=progress)
    rows = {int(i): r for i, r in zip(np.flatnonzero(needed), pool_feats)}

    def features_of(idx: np.ndarray) -> np.ndarray:
        return np.stack([rows[int(i)] for i in idx])

    means, stds, per_seed, choices = [], [], [], []
    for k in shots:
        choice = choose_l2(rows, labels, n_cls, plan, k, grid=l2_grid)
        accs = []
        for s in seeds:
            idx = draws[(k, s)]
            probe = RidgePath(features_of(idx), labels[idx], n_cls).probe(choice.alpha)
            accs.append(probe.accuracy(test_feats, test_labels))
        means.append(float(np.mean(accs)))
        stds.append(float(np.std(accs)))
        per_seed.append([float(a) for a in accs])
        choices.append(choice.to_dict())
    computed = computed_pool + computed_test
    record = {
        "model": description,
        "feature_dim": int(extractor.output_shape[-1]),
        "preprocessing": prep.to_dict(),
        "dataset": {"source": info.source, "pool": info.num_examples, "used": int(needed.sum()),
                    "num_classes": n_cls, "class_names": info.class_names, **info.skipped_record()},
        "test": {"source": test_info.source, "num_examples": int(len(test_labels))},
        "l2_selection": {"grid": [float(a) for a in l2_grid], "seed": selection_seed, "draws": selection_draws,
                         "held_out": int(len(plan["held_out"]))},
        "features": {"cache": os.fspath(store.directory) if store.directory else None, "store_key": store.key},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    result = FewShotResult(shots, seeds, means, stds, per_seed, choices, computed,
                           int(needed.sum()) + len(test_labels) - computed, record, out)
    if out is not None:
        from bit_keras.plots import plot_few_shot

        write_json(out / RESULTS_FILE, result.to_dict())
        plot_few_shot(result.to_dict(), out / PLOT_FILE, title=f"Few-shot linear probe: {description}",
                      series=[("top1", "linear probe on frozen pre-logits", "tab:blue", "o-")])
    print(result.format_table())
    return result
