"""VTAB-1k: the task table (splits and labels through mocked tfds data) and the runner (bit_keras.vtab)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from bit_keras.evals import vtab_tasks as vt
from bit_keras.evals.vtab_tasks import GROUPS, TASKS

N = 6


def _fake_examples(builder, n):
    """Examples shaped like the real data for the derived-label builders (the default mock draws sequence
    lengths independently, e.g. 40 CLEVR objects, which real data never has)."""
    name = builder.name
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if name == "clevr":
            k = 3 + i % 8  # 3..10 objects
            depth = np.full([k], 12.0, np.float32)
            depth[0] = [7.0, 8.2, 8.7, 9.2, 9.7, 11.0][i % 6]
            coords = np.stack([rng.random(k), rng.random(k), depth], 1).astype(np.float32)
            out.append({"image": rng.integers(0, 255, (8, 12, 3), np.uint8), "objects": {
                "size": np.zeros([k], np.int64), "pixel_coords": coords}})
        elif name == "kitti":
            # i % 4: a vehicle at 5 m / 15 m / 30 m, or no vehicle (a pedestrian, type 3, at 2 m)
            types = np.array([[0, 3], [1, 4], [2, 2], [3, 5]][i % 4], np.int64)
            z = np.array([[5.0, 1.0], [15.0, 2.0], [30.0, 40.0], [2.0, 3.0]][i % 4], np.float32)
            loc = np.stack([np.zeros(2), np.zeros(2), z], 1).astype(np.float32)
            out.append({"image": rng.integers(0, 255, (8, 12, 3), np.uint8), "objects": {"type": types,
                                                                                         "location": loc}})
        elif name == "dsprites":
            out.append({"image": (rng.random((64, 64, 1)) > 0.5).astype(np.uint8),
                        "label_x_position": np.int64(i * 31 // max(n - 1, 1)),
                        "label_orientation": np.int64(i * 39 // max(n - 1, 1))})
        elif name == "oxford_iiit_pet":  # tfds's random mock draws invalid head boxes (ymin > ymax) for it
            out.append({"image": rng.integers(0, 255, (8, 12, 3), np.uint8), "label": np.int64(i % 37)})
        elif name == "smallnorb":
            out.append({"image": rng.integers(0, 255, (96, 96, 1), np.uint8), "label_azimuth": np.int64(i % 18),
                        "label_elevation": np.int64(i % 9)})
    return out


def _as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del split, decoders, read_config, kwargs
    examples = _fake_examples(self, N)

    def gen():
        yield from examples

    def spec(v):
        if isinstance(v, dict):
            return {k: spec(x) for k, x in v.items()}
        v = np.asarray(v)
        return tf.TensorSpec([None] * v.ndim, tf.as_dtype(v.dtype))

    return tf.data.Dataset.from_generator(gen, output_signature=spec(examples[0]))


DERIVED = {"clevr", "kitti", "dsprites", "smallnorb", "oxford_iiit_pet"}


def _mock(monkeypatch_names=DERIVED):
    """mock_data: random examples, except the derived-label builders, which get _fake_examples."""
    orig = tfds.testing.mock_data

    class _Ctx:
        def __enter__(self):
            self.cm = orig(num_examples=N)
            self.cm.__enter__()
            from tensorflow_datasets.core import dataset_builder

            self.mocked = dataset_builder.FileReaderBuilder._as_dataset

            def pick(builder, *a, **k):
                if builder.name in monkeypatch_names:
                    return _as_dataset(builder, *a, **k)
                return self.mocked(builder, *a, **k)

            dataset_builder.FileReaderBuilder._as_dataset = pick
            return self

        def __exit__(self, *exc):
            from tensorflow_datasets.core import dataset_builder

            dataset_builder.FileReaderBuilder._as_dataset = self.mocked
            return self.cm.__exit__(*exc)

    return _Ctx()


def test_table_has_19_tasks_in_three_groups_with_tfds_builders():
    assert [len(GROUPS[g]) for g in ("natural", "specialized", "structured")] == [7, 4, 8]
    assert len(TASKS) == 19
    expected = {"caltech101": 102, "cifar100": 100, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37,
                "sun397": 397, "svhn": 10, "patch_camelyon": 2, "eurosat": 10, "resisc45": 45,
                "diabetic_retinopathy": 5, "clevr_count": 8, "clevr_distance": 6, "dmlab": 6, "kitti_distance": 4,
                "dsprites_location": 16, "dsprites_orientation": 16, "smallnorb_azimuth": 18, "smallnorb_elevation": 9}
    assert {n: s.num_classes for n, s in TASKS.items()} == expected
    for spec in TASKS.values():
        builder = tfds.builder(spec.tfds_name)  # name, config and version exist in this tfds (no download)
        assert str(builder.info.version) == spec.tfds_name.rpartition(":")[2], spec.name
        assert spec.source.split(" ")[0].endswith(".py"), spec.name


@pytest.mark.parametrize("name", list(TASKS))
def test_1k_splits_sizes_and_no_overlap(name):
    spec = TASKS[name]
    sizes = vt.split_sizes(spec)
    assert (sizes["train800"], sizes["val200"], sizes["train800val200"]) == (800, 200, 1000)
    assert sizes["test"] > 0
    ranges = vt.split_ranges(spec)
    assert ranges["train800val200"] == ranges["train800"] + ranges["val200"]
    for a, b in (("train800", "val200"), ("train800val200", "test")):
        for sa, fa, ta in ranges[a]:
            for sb, fb, tb in ranges[b]:
                assert sa != sb or ta <= fb or tb <= fa, (name, a, b)


@pytest.mark.slow
def test_every_task_loads_its_splits_from_mocked_tfds_with_labels_in_range():
    with _mock():
        for spec in TASKS.values():
            for split in vt.SPLITS:
                pairs = list(vt.load_task(spec, split).as_numpy_iterator())
                assert len(pairs) == N, (spec.name, split)
                for image, label in pairs:
                    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3, spec.name
                    assert 0 <= label < spec.num_classes, (spec.name, split, label)


def _labels(name):
    with _mock():
        return [int(y) for _, y in vt.load_task(TASKS[name], "test").as_numpy_iterator()]


def test_derived_labels_follow_the_reference():
    assert _labels("clevr_count") == [i % 8 for i in range(N)]  # objects - 3
    assert _labels("clevr_distance") == [0, 1, 2, 3, 4, 5][:N]  # depth 7, 8.2, 8.7, 9.2, 9.7, 11
    assert _labels("kitti_distance") == [i % 4 for i in range(N)]  # 5 m, 15 m, 30 m, no vehicle (1000 m)
    assert _labels("dsprites_location") == [(i * 31 // (N - 1)) // 2 for i in range(N)]  # 32 -> 16
    assert _labels("dsprites_orientation") == [int((i * 39 // (N - 1)) // 2.5) for i in range(N)]  # 40 -> 16
    assert _labels("smallnorb_elevation") == [i % 9 for i in range(N)]
    with _mock():
        image, _ = next(vt.load_task(TASKS["dsprites_location"], "test").as_numpy_iterator())
    assert set(np.unique(image)) <= {0, 255} and image.shape == (64, 64, 3)


def test_resolve_tasks_and_unknown_names():
    from bit_keras.errors import ConfigError

    assert [s.name for s in vt.resolve_tasks("vtab-1k")] == list(TASKS)
    assert [s.name for s in vt.resolve_tasks(["dtd", "structured"])][:2] == ["dtd", "clevr_count"]
    with pytest.raises(ConfigError, match="unknown VTAB task 'cifar10'"):
        vt.resolve_tasks("cifar10")


def test_missing_task_is_named_with_its_tfds_command(tmp_path):
    assert vt.missing_reason(TASKS["dtd"], data_dir=str(tmp_path)) is not None
    assert vt.prepare_command(TASKS["dtd"]) == "tfds build dtd"
    assert vt.prepare_command(TASKS["eurosat"]) == "tfds build eurosat/rgb"
    assert "manual download" in vt.prepare_command(TASKS["diabetic_retinopathy"])


# ------------------------------------------------------------------------------------------------ the runner


class _Stop(BaseException):
    """An interruption (like Ctrl-C, not an Exception: the runner does not swallow it)."""


def _counting(monkeypatch, fail_on=None):
    import bit_keras.recipes.vtab as rv

    calls = []
    real = rv._run_task

    def run(spec, **kw):
        calls.append(spec.name)
        if spec.name == fail_on:
            raise _Stop
        return real(spec, **kw)

    monkeypatch.setattr(rv, "_run_task", run)
    return calls


@pytest.mark.slow
def test_probe_runner_summary_resume_and_missing_task(tmp_path, monkeypatch):
    import bit_keras
    import bit_keras.recipes.vtab as rv

    original = rv._run_task
    calls = _counting(monkeypatch, fail_on="smallnorb_elevation")
    real_missing = rv.missing_reason
    monkeypatch.setattr(rv, "missing_reason",
                        lambda spec, data_dir=None: "AssertionError: no data" if spec.name == "dmlab"
                        else real_missing(spec, data_dir))
    tasks = "dsprites_location,dmlab,clevr_count,smallnorb_elevation"
    with _mock(), pytest.raises(_Stop):  # interrupted in the fourth task
        bit_keras.vtab("BiT-tiny", tasks, output_dir=tmp_path, probe=True, weights=None, progress=False)
    assert calls == ["dsprites_location", "clevr_count", "smallnorb_elevation"]
    assert (tmp_path / "clevr_count" / "result.json").exists()
    calls.clear()
    monkeypatch.setattr(rv, "_run_task", original)
    calls2 = _counting(monkeypatch)
    with _mock():
        r = bit_keras.vtab("BiT-tiny", tasks, output_dir=tmp_path, probe=True, weights=None, progress=False)
    assert calls2 == ["smallnorb_elevation"]  # the finished tasks are read back, not redone
    assert r.ran == ["smallnorb_elevation"] and r.missing == {"dmlab": "tfds build dmlab"}
    summary = json.loads((tmp_path / "vtab.json").read_text())
    assert list(summary["tasks"]) == ["dsprites_location", "clevr_count", "smallnorb_elevation"]
    for t in summary["tasks"].values():
        assert 0.0 <= t["top1"] <= 1.0 and t["mode"] == "probe"
    structured = [summary["tasks"][n]["top1"] for n in summary["tasks"]]
    assert summary["groups"]["structured"] == pytest.approx(np.mean(structured))
    assert summary["groups"]["natural"] is None and summary["mean"] == pytest.approx(np.mean(structured))
    assert summary["missing"] == {"dmlab": "tfds build dmlab"}
    table = (tmp_path / "vtab.md").read_text()
    assert "| structured | dmlab | missing: `tfds build dmlab` |" in table and "mean of 3" in table
    assert (tmp_path / "vtab.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_finetune_runner_on_a_mocked_task(tmp_path, monkeypatch):
    import bit_keras

    calls = _counting(monkeypatch)
    with _mock({"clevr", "kitti", "dsprites", "smallnorb", "oxford_iiit_pet"}):
        r = bit_keras.vtab("BiT-tiny", ["smallnorb_elevation"], output_dir=tmp_path, weights=None, progress=False,
                           steps=2, batch_size=4, resize=20, crop=16)
    assert calls == ["smallnorb_elevation"]
    rec = r.tasks["smallnorb_elevation"]
    assert rec["mode"] == "finetune" and rec["steps"] == 2 and rec["test_examples"] == N
    assert (tmp_path / "smallnorb_elevation" / "run").is_dir()
    assert json.loads((tmp_path / "vtab.json").read_text())["tasks"]["smallnorb_elevation"]["top1"] == rec["top1"]


def test_cli_vtab_is_registered():
    from bit_keras.cli import build_parser

    args = build_parser().parse_args(["vtab", "--output", "o", "--tasks", "natural", "--probe"])
    assert (args.tasks, args.probe, args.output) == ("natural", True, "o")
