"""The zoo: names, metadata, full-size architectures, weight download, and strict loading errors."""

import gc
import io

import keras
import numpy as np
import pytest

import bit_keras
from bit_keras import WeightFileError
from bit_keras.errors import ConfigError, LabelFileError, MissingFileError
from bit_keras.cli import main as cli_main
from bit_keras.models.npz import read_npz
from tests import reference_bit

PARAMS_1000 = {
    "R50x1": 25_549_352,
    "R50x3": 217_319_080,
    "R101x1": 44_541_480,
    "R101x3": 387_934_888,
    "R152x2": 236_335_208,
    "R152x4": 936_533_224,
}
FEATURE_DIM = {"R50x1": 2048, "R50x3": 6144, "R101x1": 2048, "R101x3": 6144, "R152x2": 4096, "R152x4": 8192}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(PARAMS_1000))
def test_full_size_parameter_counts(arch):
    model = bit_keras.create_model(f"BiT-S-{arch}")
    try:
        assert model.count_params() == PARAMS_1000[arch] == bit_keras.ARCHS[arch].param_count(num_classes=1000)
        shapes = {f"resnet/{v.path.rsplit('/', 1)[0].replace('-', '/')}/{v.name}": tuple(v.shape)
                  for v in model.weights if v.path.split("/")[0] != "head"}
        assert shapes == bit_keras.ARCHS[arch].weight_shapes(num_classes=None)
        assert model.get_layer("pre_logits").output.shape[-1] == FEATURE_DIM[arch]
        assert model.get_layer("stem").output.shape[-1] == 64 * bit_keras.ARCHS[arch].width
    finally:
        del model
        keras.backend.clear_session()
        gc.collect()


def test_cli_info_counts_parameters_without_building(capsys):
    assert cli_main(["info", "BiT-M-R152x4"]) == 0
    out = capsys.readouterr().out
    assert '"parameters": 1107299923' in out  # 928,340,224 backbone + 8192 * 21843 + 21843
    assert '"feature_dim": 8192' in out


def test_zoo_names_and_metadata():
    names = bit_keras.list_models()
    for arch in PARAMS_1000:
        for family in ("BiT-S", "BiT-M", "BiT-L"):
            assert f"{family}-{arch}" in names
        assert f"BiT-M-{arch}-ILSVRC2012" in names
    for extra in ("BiT-M-R50x1-CIFAR10", "BiT-R50x1-distilled-224", "BiT-R50x1-distilled-160",
                  "BiT-M-R152x2-teacher-224", "BiT-M-R152x2-teacher-384"):
        assert extra in names
    s, m = bit_keras.get_model_info("BiT-S-R101x3"), bit_keras.get_model_info("BiT-M-R50x1")
    assert (s.upstream, s.num_classes, s.arch) == ("ILSVRC-2012", 1000, "R101x3")
    assert (m.upstream, m.num_classes, m.multi_label) == ("ImageNet-21k", 21843, True)
    assert m.weights_url == "https://storage.googleapis.com/bit_models/BiT-M-R50x1.npz"
    assert s.labels_url == "https://storage.googleapis.com/bit_models/ilsvrc2012_wordnet_lemmas.txt"
    cifar = bit_keras.get_model_info("BiT-M-R50x1-CIFAR10")
    assert cifar.num_classes == 10 and cifar.labels[0] == "airplane" and cifar.resolution == 128
    assert bit_keras.list_models("bit-s-r50*") == ["BiT-S-R50x1", "BiT-S-R50x3"]
    unpublished = {n for n in bit_keras.list_models(pretrained=False) if n.startswith("BiT-")}  # tests register more
    assert unpublished == {f"BiT-L-{a}" for a in PARAMS_1000} | {"BiT-tiny"}


def test_preprocessing_metadata_follows_timm_and_the_release():
    """Each weight tag carries its own preprocessing (timm's default_cfgs where timm has the weights)."""
    info = bit_keras.get_model_info
    for arch in ("R50x1", "R50x3", "R101x1", "R101x3", "R152x2"):
        assert (info(f"BiT-M-{arch}-ILSVRC2012").resolution, info(f"BiT-M-{arch}-ILSVRC2012").crop_pct) == (448, 1.0)
    assert info("BiT-M-R152x4-ILSVRC2012").resolution == 480
    assert (info("BiT-M-R50x1").resolution, info("BiT-M-R50x1").crop_pct, info("BiT-M-R50x1").interpolation) == (
        224, 0.875, "bilinear")
    student = info("BiT-R50x1-distilled-160")
    assert student.weights_url.endswith("/distill/R50x1_160.npz") and student.resolution == 160
    assert (student.upstream, student.interpolation) == ("ILSVRC-2012", "bicubic")
    teacher = info("BiT-M-R152x2-teacher-384")
    assert (teacher.resolution, teacher.crop_pct, teacher.interpolation, teacher.upstream) == (
        384, 1.0, "bicubic", "ImageNet-21k")
    record = info("BiT-M-R50x1-ILSVRC2012").to_dict()
    assert record["preprocessing"]["input_range"] == [-1.0, 1.0] and "timm" in record["preprocessing"]["source"]


def test_old_distilled_names_still_work_with_a_warning():
    with pytest.warns(DeprecationWarning, match="BiT-R50x1-distilled-224"):
        assert bit_keras.get_model_info("BiT-M-R50x1-distilled-224").name == "BiT-R50x1-distilled-224"


def test_unknown_name_lists_closest():
    with pytest.raises(bit_keras.UnknownModelError, match="Closest names: .*BiT-M-R50x1"):
        bit_keras.create_model("BiT-M-R50X")


def test_bit_l_weights_were_never_published():
    model = bit_keras.create_model("BiT-L-R50x1", num_classes=None)  # the architecture builds
    assert model.output_shape == (None, 2048)
    with pytest.raises(bit_keras.WeightsUnavailableError, match="never published.*BiT-M-R50x1"):
        bit_keras.create_model("BiT-L-R50x1", weights="pretrained")


@pytest.fixture
def tiny():
    bit_keras.register_arch("test-R14x0.5", bit_keras.ArchSpec((1, 1, 1, 1), 0.5))
    return bit_keras.register_model(
        bit_keras.ModelInfo("test-zoo-tiny", "test-R14x0.5", "random", 10, "test-zoo-tiny.npz", 32),
        overwrite=True,
    )


def _tiny_checkpoint(num_classes=10):
    return reference_bit.random_checkpoint((1, 1, 1, 1), 0.5, num_classes, seed=3)


def _npz_bytes(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_pretrained_downloads_from_the_weight_url_once(tiny, loopback_server, monkeypatch, tmp_path):
    arrays = _tiny_checkpoint()
    loopback_server.files["/bit/test-zoo-tiny.npz"] = _npz_bytes(arrays)
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BIT_KERAS_WEIGHTS_URL", loopback_server.url("/bit/"))
    model = bit_keras.create_model("test-zoo-tiny", weights="pretrained")
    np.testing.assert_array_equal(model.get_layer("head").bias.numpy(), arrays["resnet/head/conv2d/bias"])
    cached = list((tmp_path / "home").rglob("test-zoo-tiny.npz"))
    assert len(cached) == 1
    requests = len(loopback_server.requests)
    bit_keras.create_model("test-zoo-tiny", weights="pretrained")
    assert len(loopback_server.requests) == requests  # served from the cache


def test_weights_from_a_url(tiny, loopback_server, monkeypatch, tmp_path):
    arrays = _tiny_checkpoint()
    loopback_server.files["/elsewhere/w.npz"] = _npz_bytes(arrays)
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path))
    model = bit_keras.create_model("test-zoo-tiny", weights=loopback_server.url("/elsewhere/w.npz"), num_classes=3)
    assert np.all(model.get_layer("head").kernel.numpy() == 0)  # 10-way file, 3-way model: new zero head
    np.testing.assert_array_equal(
        model.get_layer("group_norm").gamma.numpy(), arrays["resnet/group_norm/gamma"]
    )


def _write(tmp_path, arrays, name="w.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_missing_key_is_named(tiny, tmp_path):
    arrays = _tiny_checkpoint()
    del arrays["resnet/block3/unit01/b/group_norm/beta"]
    with pytest.raises(WeightFileError, match="1 missing keys: resnet/block3/unit01/b/group_norm/beta"):
        bit_keras.create_model("test-zoo-tiny", weights=_write(tmp_path, arrays))


def test_extra_key_is_named(tiny, tmp_path):
    arrays = _tiny_checkpoint()
    arrays["resnet/block5/unit01/a/group_norm/gamma"] = np.ones(4, np.float32)
    with pytest.raises(WeightFileError, match="1 unexpected keys: resnet/block5/unit01/a/group_norm/gamma"):
        bit_keras.create_model("test-zoo-tiny", weights=_write(tmp_path, arrays))


def test_wrong_shape_is_named_with_the_file_architecture(tiny, tmp_path):
    other = reference_bit.random_checkpoint((1, 1, 1, 1), 1, 10, seed=4)  # width 1 instead of 0.5
    with pytest.raises(WeightFileError) as err:
        bit_keras.create_model("test-zoo-tiny", weights=_write(tmp_path, other))
    message = str(err.value)
    assert "resnet/root_block/standardized_conv2d/kernel: file (7, 7, 3, 64), model (7, 7, 3, 32)" in message
    assert "depths (1, 1, 1, 1), width 1 network" in message


def test_wrong_architecture_is_recognised_by_name(tmp_path):
    arrays = reference_bit.random_checkpoint((1, 1, 1, 1), 0.5, 10, seed=5)
    with pytest.raises(WeightFileError, match="missing keys"):
        bit_keras.load_npz(bit_keras.resnet_v2((1, 2, 1, 1), 0.5, num_classes=10), _write(tmp_path, arrays))


def test_nothing_is_assigned_when_loading_fails(tiny, tmp_path):
    model = bit_keras.create_model("test-zoo-tiny")
    before = model.get_layer("root_block-standardized_conv2d").kernel.numpy().copy()
    arrays = _tiny_checkpoint()
    arrays["resnet/group_norm/gamma"] = np.ones(3, np.float32)
    with pytest.raises(WeightFileError, match="resnet/group_norm/gamma: file \\(3,\\), model \\(1024,\\)"):
        bit_keras.load_npz(model, _write(tmp_path, arrays))
    np.testing.assert_array_equal(model.get_layer("root_block-standardized_conv2d").kernel.numpy(), before)


def test_truncated_file_is_reported_as_corrupt(tiny, tmp_path):
    data = _npz_bytes(_tiny_checkpoint())
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="corrupt or truncated.*download it again"):
        bit_keras.create_model("test-zoo-tiny", weights=path)
    path.write_bytes(b"<html>not a weight file</html>")
    with pytest.raises(WeightFileError, match="corrupt or truncated"):
        read_npz(path)


def test_missing_local_file(tiny, tmp_path):
    with pytest.raises(MissingFileError, match="no such file"):
        bit_keras.create_model("test-zoo-tiny", weights=tmp_path / "nope.npz")


def test_head_rules(tiny, tmp_path):
    path = _write(tmp_path, _tiny_checkpoint())
    with pytest.raises(WeightFileError, match="no head"):
        bit_keras.load_npz(bit_keras.create_model("test-zoo-tiny", num_classes=None), path, load_head=True)
    with pytest.raises(WeightFileError, match="head of .* is \\(1024, 10\\) but the model.s is \\(1024, 4\\)"):
        bit_keras.load_npz(bit_keras.create_model("test-zoo-tiny", num_classes=4), path, load_head=True)
    headless = _tiny_checkpoint(num_classes=None)
    model = bit_keras.create_model("test-zoo-tiny", weights=_write(tmp_path, headless, "h.npz"))
    assert np.all(model.get_layer("head").kernel.numpy() == 0)


def test_save_npz_round_trip(tiny, tmp_path):
    arrays = _tiny_checkpoint()
    model = bit_keras.create_model("test-zoo-tiny", weights=_write(tmp_path, arrays))
    out = bit_keras.save_npz(model, tmp_path / "again" / "w.npz")
    again = read_npz(out)
    assert set(again) == set(arrays)
    for key in arrays:
        np.testing.assert_array_equal(again[key], arrays[key])
    assert not [p for p in out.parent.iterdir() if p.name != "w.npz"]  # no temp files left


def test_multi_scale_features(tiny):
    model = bit_keras.create_model("test-zoo-tiny")
    features = bit_keras.feature_extractor(model)
    out = features(np.zeros((2, 64, 64, 3), np.float32))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "stem": (2, 16, 16, 32),
        "block1": (2, 16, 16, 128),
        "block2": (2, 8, 8, 256),
        "block3": (2, 4, 4, 512),
        "block4": (2, 2, 2, 1024),
        "pre_logits": (2, 1024),
    }
    with pytest.raises(ConfigError, match="unknown feature output"):
        bit_keras.feature_extractor(model, ["block5"])


def test_cli_list(capsys):
    assert cli_main(["list", "BiT-L-*"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all("architecture only" in line for line in lines)


def test_labels_from_the_official_label_file(loopback_server, monkeypatch, tmp_path):
    lemmas = [f"class_{i}, lemma" for i in range(1000)]
    loopback_server.files["/bit/ilsvrc2012_wordnet_lemmas.txt"] = "\n".join(lemmas).encode()
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("BIT_KERAS_WEIGHTS_URL", loopback_server.url("/bit/"))
    assert bit_keras.get_labels("BiT-S-R50x1") == lemmas
    loopback_server.files["/bit/imagenet21k_wordnet_lemmas.txt"] = b"only\ntwo"
    with pytest.raises(LabelFileError, match="has 2 lines but BiT-M-R50x1 has 21843 classes"):
        bit_keras.get_labels("BiT-M-R50x1")
    with pytest.raises(ValueError, match="no published label names"):
        bit_keras.get_labels("BiT-L-R50x1")
