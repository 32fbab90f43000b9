"""bit_keras.objectnet: the shipped ObjectNet mappings, the scoring of both protocols, the border crop, the
folder checks and the CLI, on a generated folder in the release's layout and a stub model with known logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bit_keras.errors import DataError
from bit_keras.evals import objectnet as on

RED, GREEN, BLUE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (0, 0, 0)
SIDE = 12  # images 12x12 with a 1-px red border; the border crop (2 px) leaves 8x8 = the stub's input
# ImageNet indices in the standard order (sorted WordNet ids)
TENCH, ANALOG_CLOCK, DIGITAL_CLOCK, TANDEM, MOUNTAIN_BIKE, BANANA = 0, 409, 530, 444, 671, 954


def _png(path: Path, interior: tuple[int, int, int]) -> None:
    pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
    pixels[:] = RED
    pixels[1:-1, 1:-1] = interior
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def objectnet_dir(tmp_path_factory) -> Path:
    """objectnet-1.0/images: banana (green, green, blue), alarm_clock (red, black), bicycle (black), and
    squeegee (an ObjectNet class without an ImageNet counterpart), plus a stray non-ObjectNet folder."""
    root = tmp_path_factory.mktemp("on") / "objectnet-1.0"
    images = root / "images"
    for folder, colours in {"banana": [GREEN, GREEN, BLUE], "alarm_clock": [RED, BLACK], "bicycle": [BLACK],
                            "squeegee": [GREEN, GREEN]}.items():
        for i, c in enumerate(colours):
            _png(images / folder / f"{i:04d}.png", c)
    (images / "notes").mkdir()
    (images / "notes" / "a.png").write_bytes(b"never read")
    (root / "mappings").mkdir()
    return root


@pytest.fixture(scope="module")
def stub():
    """logits = 10 * (r * e_digital_clock + g * e_banana + b * e_tench) + bias, from the mean colour (0..1).

    bias: tench .5, classes 1..3 .4/.3/.2, mountain bike .15, analog clock -.5, banana -.9, the rest -1."""
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(1000)
    model = keras.Model(inputs, dense(x), name="stub")
    w = np.zeros((3, 1000), np.float32)
    w[0, DIGITAL_CLOCK], w[1, BANANA], w[2, TENCH] = 10, 10, 10
    b = np.full(1000, -1.0, np.float32)
    b[[0, 1, 2, 3, MOUNTAIN_BIKE, ANALOG_CLOCK, BANANA]] = [.5, .4, .3, .2, .15, -.5, -.9]
    dense.set_weights([w, b])
    return model


def test_shipped_mappings():
    classes = on.objectnet_classes()
    assert len(classes) == 113 and len(on.objectnet_folders()) == 313
    assert len({c.folder for c in classes}) == 113
    assert all(c.indices and all(0 <= i < 1000 for i in c.indices) for c in classes)
    assert all(len(c.indices) == len(c.imagenet) for c in classes)
    assert sum(len(c.indices) > 1 for c in classes) > 0  # some map to several ImageNet classes
    by = {c.folder: c for c in classes}
    assert by["alarm_clock"].indices == (ANALOG_CLOCK, DIGITAL_CLOCK)
    assert by["banana"].indices == (BANANA,) and by["bicycle"].indices == (MOUNTAIN_BIKE, TANDEM)
    assert "squeegee" not in by
    data = Path(on.__file__).parent / "data"
    lines = (data / "imagenet_to_label_2012_v2.txt").read_text().splitlines()
    assert len(lines) == 1000 and "ObjectNet release" in (data / "README.md").read_text()
    assert "4639a3919b51b20beae5814bc6722b962d93ae47" in (data / "README.md").read_text()
    mapping = json.loads((data / "pytorch_to_imagenet_2012_id.json").read_text())
    assert lines[mapping["0"]] == "tench, Tinca tinca" and lines[mapping[str(BANANA)]] == "banana"


def test_score_logits_both_protocols():
    classes = on.objectnet_classes()
    alarm = [c.folder for c in classes].index("alarm_clock")
    logits = np.zeros((2, 1000))
    logits[0, [5, 6, 7, 8, ANALOG_CLOCK]] = [5, 4, 3, 2, 1]  # top-5 in the mapped set, top-1 not
    logits[1, [5, 6, 7, 8, 10, ANALOG_CLOCK]] = [6, 5, 4, 3, 2, 1]  # sixth
    hits = on.score_logits(logits, np.array([alarm, alarm]))
    assert hits["top1"].tolist() == [False, False] and hits["top5"].tolist() == [True, False]
    assert hits["top1_restricted"].tolist() == [True, True]  # the only mapped class with a positive logit


def test_objectnet_known_numbers(objectnet_dir, stub, tmp_path):
    result = on.objectnet(stub, objectnet_dir, output_dir=tmp_path, batch_size=4, progress=False)
    assert result.num_images == 6 and not result.restricted
    assert result.protocols["all-1000"] == {"top1": 3 / 6, "top5": 4 / 6}
    assert result.protocols["restricted"] == {"top1": 4 / 6, "top5": 1.0}
    assert (result.top1, result.top5) == (3 / 6, 4 / 6)
    pc = result.per_class
    assert list(pc) == ["alarm_clock", "banana", "bicycle"]
    assert [pc["banana"][k] for k in ("images", "top1", "top5", "top1_restricted", "top5_restricted")] == \
        [3, 2 / 3, 2 / 3, 2 / 3, 1.0]
    assert [pc["alarm_clock"][k] for k in ("top1", "top5", "top1_restricted", "top5_restricted")] == \
        [0.5, 0.5, 0.5, 1.0]
    assert [pc["bicycle"][k] for k in ("top1", "top5", "top1_restricted", "top5_restricted")] == [0, 1, 1, 1]
    assert result.skipped_folders == {"squeegee": 2, "notes (not an ObjectNet folder)": 1}
    saved = json.loads((tmp_path / "objectnet.json").read_text())
    assert saved["top1"] == 0.5 and saved["protocol"] == "all-1000" and saved["skipped_images"] == 3
    assert saved["per_class"]["bicycle"]["imagenet"] == ["mountain bike, all-terrain bike, off-roader",
                                                         "bicycle-built-for-two, tandem bicycle, tandem"]
    restricted = on.objectnet(stub, objectnet_dir / "images", restrict=True, progress=False)  # the images folder
    assert (restricted.top1, restricted.top5) == (4 / 6, 1.0) and restricted.output_dir is None


def test_border_crop_changes_the_answer(objectnet_dir, stub):
    """Uncropped, the red border makes the black image of alarm_clock a digital clock (and the bicycle one)."""
    result = on.objectnet(stub, objectnet_dir, border=0, progress=False)
    assert result.per_class["alarm_clock"]["top1"] == 1.0 and result.per_class["bicycle"]["top5"] == 0.0
    assert result.protocols["all-1000"]["top1"] == 4 / 6


def test_folder_errors(tmp_path, stub, objectnet_dir):
    with pytest.raises(DataError, match="does not exist"):
        on.objectnet(stub, tmp_path / "missing", progress=False)
    (tmp_path / "other" / "cats").mkdir(parents=True)
    with pytest.raises(DataError, match="no ObjectNet class folders"):
        on.objectnet(stub, tmp_path / "other", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no ObjectNet class folders"):
        on.objectnet(stub, tmp_path / "empty", progress=False)
    only_squeegee = tmp_path / "sq" / "images" / "squeegee"
    _png(only_squeegee / "0.png", GREEN)
    with pytest.raises(DataError, match="no images in the ObjectNet classes that overlap"):
        on.objectnet(stub, tmp_path / "sq", progress=False)
    bad = tmp_path / "bad" / "images"
    _png(bad / "banana" / "0.png", GREEN)
    (bad / "banana" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"banana/1\.png"):
        on.objectnet(stub, tmp_path / "bad", progress=False)


def test_model_must_have_1000_outputs(objectnet_dir):
    import keras

    from bit_keras.errors import ConfigError

    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    with pytest.raises(ConfigError, match="1000"):
        on.objectnet(small, objectnet_dir, progress=False)
    with pytest.raises(ConfigError, match="1000"):
        on.objectnet("BiT-M-R50x1", objectnet_dir, weights=None, progress=False)  # the 21k head


def test_cli(objectnet_dir, tmp_path, capsys, monkeypatch, stub):
    import bit_keras
    from bit_keras.cli import main

    assert bit_keras.objectnet is on.objectnet
    real = on.objectnet
    monkeypatch.setattr(on, "objectnet", lambda model, folder, **kw: real(stub, folder, **{**kw, "weights": None}))
    assert main(["objectnet", "--model", "BiT-M-R50x1-ILSVRC2012", "--folder", str(objectnet_dir),
                 "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "all-1000      50.00%  66.67%" in out and "restricted    66.67% 100.00%" in out
    assert "alarm_clock" in out and "bicycle" in out and "Wrote" in out
    assert json.loads((tmp_path / "out" / "objectnet.json").read_text())["num_images"] == 6
    assert main(["objectnet", "--folder", str(tmp_path / "nowhere"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "bit-keras objectnet: error:" in err and "does not exist" in err


def test_a_file_that_fails_later_is_named(tmp_path, stub, monkeypatch):
    """A file that passed the up-front scan but fails to decode in the pipeline (changed since) is named too."""
    from bit_keras.data import images

    root = tmp_path / "objectnet-1.0" / "images"
    _png(root / "banana" / "0.png", GREEN)
    (root / "banana" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    monkeypatch.setattr(images, "scan_files",
                        lambda paths: [images.Scan(p, None, (SIDE, SIDE), images._TF8) for p in paths])
    with pytest.raises(DataError, match=r"^image file \S*banana/1\.png: could not be decoded"):
        on.objectnet(stub, root.parent, progress=False)


def test_logits_are_cached_and_a_repeated_run_computes_none(objectnet_dir, stub, tmp_path, monkeypatch):
    """With output_dir, each image's logits are cached (keyed by the model's weights and the preprocessing):
    a repeated or interrupted run computes only what is missing, and another border is not mistaken for it."""
    from bit_keras.evals import features

    features._MEMORY.clear()  # the earlier tests' logits of this stub, kept in memory: start from the disk only
    calls = []
    original = type(stub).predict_on_batch

    def counting(self, x):
        calls.append(len(x))
        if len(calls) == 2 and fail:
            raise KeyboardInterrupt  # interrupted after the first batch
        return original(self, x)

    monkeypatch.setattr(type(stub), "predict_on_batch", counting)
    fail = False
    unique = on.objectnet(stub, objectnet_dir, batch_size=4, progress=False).computed  # no output_dir: memory only
    assert 0 < unique <= 6  # identical images in a batch share one forward pass
    features._MEMORY.clear()
    fail, calls[:] = True, []
    with pytest.raises(KeyboardInterrupt):
        on.objectnet(stub, objectnet_dir, output_dir=tmp_path, batch_size=4, progress=False)
    assert len(calls) == 2  # the second batch failed; the first batch's logits were flushed on the way out
    features._MEMORY.clear()  # as a new process would
    done_before, fail, calls[:] = calls[0], False, []
    resumed = on.objectnet(stub, objectnet_dir, output_dir=tmp_path, batch_size=4, progress=False)
    assert resumed.computed == sum(calls) == unique - done_before and (resumed.top1, resumed.top5) == (3 / 6, 4 / 6)
    calls.clear()
    features._MEMORY.clear()
    again = on.objectnet(stub, objectnet_dir, output_dir=tmp_path, batch_size=4, progress=False)
    assert again.computed == 0 and calls == [] and again.protocols == resumed.protocols
    other = on.objectnet(stub, objectnet_dir, output_dir=tmp_path, border=0, batch_size=4, progress=False)
    assert other.computed > 0 and other.protocols["all-1000"]["top1"] == 4 / 6  # other pixels: computed anew
