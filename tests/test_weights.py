"""Weight loading: every array of a file is checked (headers first, then values) before anything is assigned."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import bit_keras
from bit_keras import BitKerasError, WeightFileError
from bit_keras.errors import DownloadError
from bit_keras.models.download import url_to_cache_path
from bit_keras.models.npz import inspect_npz, read_npz
from bit_keras.models.spec import HEAD_BIAS, HEAD_KERNEL
from bit_keras.models.weights import load_npz, model_to_npz_dict, save_npz

GAMMA = "resnet/group_norm/gamma"  # (512,) in the tiny model
ROOT = "resnet/root_block/standardized_conv2d/kernel"  # (7, 7, 3, 16)
UNIT_KERNEL = "resnet/block2/unit01/b/standardized_conv2d/kernel"


def tiny(num_classes: int | None = 10, depths: tuple[int, ...] = (1, 1, 1, 1), width: float = 0.25) -> keras.Model:
    return bit_keras.resnet_v2(depths, width=width, groups=8, num_classes=num_classes)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return tiny(10)


def checkpoint(model: keras.Model, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays under the model's official keys, all different from the model's values."""
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.5, 1.0, v.shape).astype(np.float32) for k, v in model_to_npz_dict(model).items()}


def write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w.numpy(), copy=True) for w in model.weights]


def assert_unchanged(model: keras.Model, before: list[np.ndarray]) -> None:
    after = snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


def assert_loaded(model: keras.Model, arrays: dict[str, np.ndarray]) -> None:
    got = model_to_npz_dict(model)
    assert set(got) == set(arrays)
    for key, value in arrays.items():
        assert got[key].dtype == np.float32
        np.testing.assert_array_equal(got[key], value.astype(np.float32))


def fails_cleanly(model: keras.Model, weights, match: str, **kwargs) -> WeightFileError:
    """load_npz raises WeightFileError matching ``match`` and leaves every weight of the model as it was."""
    before = snapshot(model)
    with pytest.raises(WeightFileError, match=match) as err:
        load_npz(model, weights, **kwargs)
    assert_unchanged(model, before)
    return err.value


def npy_member(shape: tuple[int, ...], descr: str = "<f4", data: bytes = b"") -> bytes:
    """A .npy member with any header (magic string included), followed by ``data`` (which need not match it)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


# --------------------------------------------------------------------------- inspect_npz: headers only


def test_inspect_npz_reports_shapes_and_dtypes_without_reading_data(model, tmp_path, monkeypatch):
    arrays = checkpoint(model)
    arrays[GAMMA] = arrays[GAMMA].astype(np.float16)
    path = write(tmp_path / "w.npz", arrays)

    def no_data(*args, **kwargs):
        raise AssertionError("inspect_npz read array data")

    monkeypatch.setattr(np.lib.format, "read_array", no_data)
    headers = inspect_npz(path)
    assert set(headers) == set(arrays)
    for key, array in arrays.items():
        assert headers[key] == (array.shape, array.dtype)
    assert headers[GAMMA][1] == np.float16


def test_a_member_claiming_an_absurd_size_is_refused_before_allocating(model, tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(GAMMA + ".npy", npy_member((10**12,), data=b"\0" * 16))  # claims 4 TB, holds 16 bytes
    with pytest.raises(WeightFileError, match=r"declares shape \(1000000000000,\) of float32 \(4000000000000 "
                                              r"bytes\) but its member holds 16 bytes"):
        inspect_npz(path)
    fails_cleanly(model, path, "corrupt")


def test_a_member_holding_more_data_than_declared_is_refused(tmp_path):
    path = tmp_path / "long.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(GAMMA + ".npy", npy_member((2,), data=b"\0" * 12))
    with pytest.raises(WeightFileError, match=r"declares shape \(2,\) of float32 \(8 bytes\) but its member "
                                              "holds 12 bytes"):
        inspect_npz(path)


def test_npy_file_is_named_as_such(model, tmp_path):
    path = tmp_path / "w.npy"
    np.save(path, np.ones((3, 3), np.float32))
    fails_cleanly(model, path, "a single .npy array, not an .npz archive of named arrays")
    with pytest.raises(WeightFileError, match="a single .npy array"):
        inspect_npz(path)


def test_directory_says_to_pass_the_file_inside(model, tmp_path):
    write(tmp_path / "BiT-M-R50x1.npz", {"a": np.ones(1, np.float32)})
    err = fails_cleanly(model, tmp_path, "is a directory; pass the .npz file inside it")
    assert "BiT-M-R50x1.npz" in str(err)
    assert "does not exist" not in str(err)


def test_missing_file(model, tmp_path):
    fails_cleanly(model, tmp_path / "nope.npz", "nope.npz does not exist")


def test_zero_byte_file(model, tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"")
    fails_cleanly(model, path, r"empty \(0 bytes\).*download it again")


def test_empty_npz(model, tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path)
    fails_cleanly(model, path, r"empty \.npz \(no arrays\)")


def test_a_zip_that_is_not_an_npz(model, tmp_path):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("README.txt", "hello")
    fails_cleanly(model, path, "is a zip archive but not an .npz: its member 'README.txt' is not a .npy array")


def test_a_zip_member_that_is_not_npy_data(tmp_path):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(GAMMA + ".npy", b"<html>not an array</html>")
    with pytest.raises(WeightFileError, match=f"member '{GAMMA}.npy' is not a .npy array"):
        inspect_npz(path)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, **{GAMMA: np.array([1.0, "x", None], dtype=object)})
    with pytest.raises(WeightFileError, match=f"array '{GAMMA}' is an object \\(pickled\\) array"):
        inspect_npz(path)


def test_not_a_zip_and_truncated_are_corrupt(model, tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"<html>not a weight file</html>")
    err = fails_cleanly(model, path, "corrupt or truncated.*download it again")
    assert err.unreadable
    data = (write(tmp_path / "full.npz", checkpoint(model))).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="corrupt or truncated"):
        inspect_npz(path)


def test_damaged_data_with_intact_headers_is_found_when_reading(model, tmp_path):
    arrays = checkpoint(model)
    path = write(tmp_path / "w.npz", arrays)
    data = bytearray(path.read_bytes())
    at = bytes(data).find(arrays[UNIT_KERNEL].tobytes()[:256])
    assert at > 0
    data[at + 100] ^= 0xFF  # np.savez stores members uncompressed: one flipped bit of array data
    path.write_bytes(bytes(data))
    assert inspect_npz(path)[UNIT_KERNEL][0] == arrays[UNIT_KERNEL].shape  # headers still fine
    err = fails_cleanly(model, path, "corrupt or truncated.*CRC")
    assert err.unreadable


# --------------------------------------------------------------------------- every array checked first


@pytest.mark.parametrize(
    "make, dtype_name",
    [
        (lambda a: a.astype(np.int64), "int64"),
        (lambda a: a > 0, "bool"),
        (lambda a: np.full(a.shape, "x"), "<U1"),
        (lambda a: a.astype(np.complex64), "complex64"),
    ],
    ids=["int", "bool", "str", "complex"],
)
def test_non_float_arrays_are_refused_with_key_and_dtype(model, tmp_path, make, dtype_name):
    arrays = checkpoint(model)
    # a bad array midway through the model: a loader that assigned as it went would have changed the rest
    arrays[UNIT_KERNEL] = make(arrays[UNIT_KERNEL])
    err = fails_cleanly(model, write(tmp_path / "w.npz", arrays), f"not float16/32/64: {UNIT_KERNEL}: ")
    assert dtype_name in str(err) and "save_npz" in str(err)
    fails_cleanly(model, arrays, f"not float16/32/64: {UNIT_KERNEL}: ")  # a dict gets the same checks


def test_non_finite_values_are_refused_and_counted(model, tmp_path):
    arrays = checkpoint(model)
    arrays[GAMMA][[0, 5, 9]] = np.nan
    arrays[GAMMA][100] = -np.inf
    arrays[ROOT][0, 0, 0, 0] = np.inf
    path = write(tmp_path / "w.npz", arrays)
    err = str(fails_cleanly(model, path, "2 arrays with non-finite values"))
    assert f"{GAMMA}: 4 of 512 values are NaN or infinite" in err
    assert f"{ROOT}: 1 of {arrays[ROOT].size} values" in err
    assert "allow_nonfinite=True" in err
    fails_cleanly(model, arrays, f"{GAMMA}: 4 of 512")

    load_npz(model, path, allow_nonfinite=True)
    assert_loaded(model, arrays)  # assert_array_equal treats NaN == NaN


def test_float64_beyond_float32_range_is_non_finite_after_the_cast(model, tmp_path):
    arrays = {k: v.astype(np.float64) for k, v in checkpoint(model).items()}
    arrays[GAMMA][7] = 1e300
    fails_cleanly(model, write(tmp_path / "w.npz", arrays),
                  f"{GAMMA}: 1 of 512 values are NaN or infinite, 1 of them finite float64 values beyond "
                  "the range of float32")


def test_non_finite_values_in_a_head_that_is_not_loaded_are_still_refused(tmp_path):
    other = tiny(7)
    arrays = checkpoint(other)
    arrays[HEAD_BIAS][3] = np.nan
    fails_cleanly(tiny(10), write(tmp_path / "w.npz", arrays), f"{HEAD_BIAS}: 1 of 7 values")


@pytest.mark.parametrize("present, absent", [(HEAD_KERNEL, HEAD_BIAS), (HEAD_BIAS, HEAD_KERNEL)])
def test_head_kernel_and_bias_come_together(model, tmp_path, present, absent):
    arrays = checkpoint(model)
    del arrays[absent]
    err = fails_cleanly(model, write(tmp_path / "w.npz", arrays),
                        f"the head is incomplete: {present} is there but {absent} is missing")
    assert "missing keys" not in str(err)  # the backbone is complete: only the head is named


def test_misshapen_head_is_a_shape_mismatch(model, tmp_path):
    arrays = checkpoint(model)
    arrays[HEAD_BIAS] = arrays[HEAD_BIAS][:4]
    fails_cleanly(model, write(tmp_path / "w.npz", arrays),
                  rf"{HEAD_KERNEL} \(1, 1, 512, 10\) and {HEAD_BIAS} \(4,\): expected \(1, 1, 512, N\) and \(N,\)")


def test_all_problems_of_a_file_are_listed_together(model, tmp_path):
    arrays = checkpoint(model)
    arrays[GAMMA] = arrays[GAMMA].astype(np.int32)
    del arrays[ROOT]
    arrays[UNIT_KERNEL] = arrays[UNIT_KERNEL][..., :3]
    err = str(fails_cleanly(model, write(tmp_path / "w.npz", arrays), "cannot load"))
    assert f"{GAMMA}: int32" in err
    assert f"1 missing keys: {ROOT}" in err
    assert f"1 shape mismatches: {UNIT_KERNEL}: file (3, 3, 32, 3), model (3, 3, 32, 32)" in err
    assert f"the file has no {ROOT}, so its architecture cannot be told" in err


# --------------------------------------------------------------------------- what loads


def test_float64_float16_and_fortran_order_load(model, tmp_path):
    arrays = checkpoint(model)
    mixed = {k: v.astype(np.float64) for k, v in arrays.items()}
    mixed[GAMMA] = arrays[GAMMA].astype(np.float16)
    mixed[ROOT] = np.asfortranarray(arrays[ROOT])
    mixed[UNIT_KERNEL] = np.asfortranarray(arrays[UNIT_KERNEL]).astype(">f4")  # big-endian, too
    path = write(tmp_path / "w.npz", mixed)
    assert inspect_npz(path)[GAMMA][1] == np.float16
    load_npz(model, path)
    expected = dict(arrays, **{GAMMA: arrays[GAMMA].astype(np.float16)})
    assert_loaded(model, expected)
    load_npz(model, checkpoint(model, seed=1))  # dict input
    assert_loaded(model, checkpoint(model, seed=1))


def test_file_from_another_architecture_is_named(tmp_path):
    bit_keras.register_arch("test-weights-R18x0.25", bit_keras.ArchSpec((1, 2, 1, 1), 0.25, groups=8))
    deeper = save_npz(tiny(10, depths=(1, 2, 1, 1)), tmp_path / "deeper.npz")
    err = str(fails_cleanly(tiny(10), deeper, "unexpected keys: resnet/block2/unit02/"))
    assert "the file holds a test-weights-R18x0.25 network" in err
    narrow = save_npz(tiny(10), tmp_path / "narrow.npz")
    err = str(fails_cleanly(tiny(10, width=0.5), narrow,
                            rf"{ROOT}: file \(7, 7, 3, 16\), model \(7, 7, 3, 32\)"))
    assert "the file holds a R14x0.25 network" in err  # BiT-tiny's architecture, groups aside


def test_head_of_another_size(model, tmp_path):
    arrays = checkpoint(tiny(4))
    path = write(tmp_path / "w.npz", arrays)
    fails_cleanly(model, path, r"head of .* is \(512, 4\) but the model.s is \(512, 10\); pass num_classes",
                  load_head=True)
    head_before = [np.array(model.get_layer("head").kernel.numpy())]
    load_npz(model, path)  # default: the backbone loads, the head is left as it is
    np.testing.assert_array_equal(model.get_layer("head").kernel.numpy(), head_before[0])
    np.testing.assert_array_equal(model.get_layer("group_norm").gamma.numpy(), arrays[GAMMA])


def test_state_dict_keys_do_not_look_like_a_bit_checkpoint(model, tmp_path):
    timm = {"stem.conv.weight": np.ones((16, 3, 7, 7), np.float32), "norm.weight": np.ones(512, np.float32)}
    err = str(fails_cleanly(model, write(tmp_path / "timm.npz", timm), "unexpected keys: norm.weight"))
    assert "none of its 2 keys starts with 'resnet/'" in err
    assert "does not look like a BiT checkpoint" in err and "PyTorch/timm" in err
    prefixed = {"model/" + k: v for k, v in checkpoint(model).items()}
    fails_cleanly(model, write(tmp_path / "prefixed.npz", prefixed),
                  "every key starts with 'model/' before 'resnet/': strip that prefix")


def test_every_failure_is_a_weight_file_error(model, tmp_path):
    err = fails_cleanly(model, tmp_path, "directory")
    assert isinstance(err, BitKerasError) and isinstance(err, ValueError)
    with pytest.raises(TypeError, match="path or a mapping"):
        load_npz(model, 42)  # type: ignore[arg-type]


def test_read_npz_round_trip(model, tmp_path):
    path = save_npz(model, tmp_path / "w.npz")
    again = read_npz(path)
    for key, value in model_to_npz_dict(model).items():
        np.testing.assert_array_equal(again[key], value)


# --------------------------------------------------------------------------- downloads and the cache


@pytest.fixture
def zoo_tiny(monkeypatch, tmp_path, loopback_server):
    """A zoo entry whose "pretrained" file is served by the loopback server; the cache under tmp_path."""
    info = bit_keras.register_model(
        bit_keras.ModelInfo("test-weights-tiny", "R14x0.25", "random", 10, "test-weights-tiny.npz", 32),
        overwrite=True,
    )
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BIT_KERAS_WEIGHTS_URL", loopback_server.url("/bit/"))
    arrays = checkpoint(tiny(10))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    loopback_server.files["/bit/test-weights-tiny.npz"] = buf.getvalue()
    return info, arrays, url_to_cache_path(info.weights_url)


def test_a_download_that_is_not_an_npz_never_reaches_the_cache(zoo_tiny, loopback_server):
    info, _, cached = zoo_tiny
    loopback_server.files["/bit/test-weights-tiny.npz"] = b"<html>Service moved</html>"
    with pytest.raises(DownloadError, match="HTML page"):
        bit_keras.create_model(info.name, weights="pretrained")
    assert not cached.exists()


def test_a_cached_file_that_fails_to_parse_is_moved_aside_and_downloaded_again(zoo_tiny, loopback_server):
    info, arrays, cached = zoo_tiny
    bit_keras.create_model(info.name, weights="pretrained")
    data = bytearray(cached.read_bytes())
    data[bytes(data).find(arrays[UNIT_KERNEL].tobytes()[:256]) + 100] ^= 0xFF  # bit rot: headers intact
    cached.write_bytes(bytes(data))
    moved = "; the cached download was moved aside to .*corrupt and the next call downloads it again"
    with pytest.raises(WeightFileError, match="corrupt or truncated .*CRC.*" + moved):
        bit_keras.create_model(info.name, weights="pretrained")
    assert not cached.exists()
    assert cached.with_name(cached.name + ".corrupt").read_bytes() == bytes(data)
    requests = len(loopback_server.requests)
    model = bit_keras.create_model(info.name, weights="pretrained")
    assert len(loopback_server.requests) > requests
    assert_loaded(model, arrays)


def test_a_malformed_file_already_in_the_cache_is_replaced(zoo_tiny):
    info, arrays, cached = zoo_tiny
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 left by an old version")
    assert_loaded(bit_keras.create_model(info.name, weights="pretrained"), arrays)


def test_a_well_formed_download_that_does_not_fit_stays_cached(zoo_tiny, loopback_server):
    info, arrays, _ = zoo_tiny
    del arrays[ROOT]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    loopback_server.files["/other/w.npz"] = buf.getvalue()
    url = loopback_server.url("/other/w.npz")
    with pytest.raises(WeightFileError, match=f"missing keys: {ROOT}") as err:
        bit_keras.create_model(info.name, weights=url)
    assert "moved aside" not in str(err.value)
    assert url_to_cache_path(url).read_bytes() == buf.getvalue()


def test_a_users_local_file_is_never_moved(zoo_tiny, tmp_path):
    info, _, _ = zoo_tiny
    path = tmp_path / "mine.npz"
    path.write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(WeightFileError, match="corrupt or truncated") as err:
        bit_keras.create_model(info.name, weights=path)
    assert "moved aside" not in str(err.value)
    assert path.read_bytes() == b"PK\x03\x04 damaged"
    with pytest.raises(WeightFileError, match="is a directory; pass the .npz file inside it"):
        bit_keras.create_model(info.name, weights=tmp_path)
