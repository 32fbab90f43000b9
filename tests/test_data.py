"""bit_keras.data.sources: sources, measurement, few-shot, bad data, pipelines, mixup, offline tfds."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from bit_keras.data.sources import DataError, DatasetInfo, image_size_of, load_dataset, sample_few_shot
from bit_keras.data.pipelines import eval_pipeline, mixup, train_pipeline


def _labels(ds: tf.data.Dataset) -> list[int]:
    return [int(y) for _, y in ds.as_numpy_iterator()]


def _save(path: Path, array: np.ndarray, fmt: str | None = None, mode: str | None = None, **options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE)  # exact colours, no dithering
    elif mode:
        im = im.convert(mode)
    im.save(path, format=fmt, **options)
    return path


def _solid(h: int, w: int, value: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(value, np.uint8), (h, w, 3)).copy()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """3 classes, 4 images each, in several formats and modes; plus hidden junk."""
    root = tmp_path / "data"
    colours = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}
    for c, rgb in colours.items():
        _save(root / c / "a.png", _solid(16, 16, rgb))
        _save(root / c / "b.jpg", _solid(16, 16, rgb), "JPEG")
        _save(root / c / "c.png", _solid(16, 16, rgb), mode="RGBA")
        _save(root / c / "sub" / "d.tif", _solid(16, 16, rgb), "TIFF")  # PIL-decoded, nested folder
        (root / c / ".DS_Store").write_bytes(b"\x00junk")
        (root / c / "Thumbs.db").write_bytes(b"\x00junk")
    _save(root / "cat" / "e.png", _solid(16, 16, (200, 10, 10)), mode="P")  # palette
    _save(root / "dog" / "e.gif", _solid(16, 16, (10, 200, 10)), "GIF")
    _save(root / "emu" / "e.bmp", _solid(16, 16, (10, 10, 200)), "BMP")
    (root / ".hidden_dir").mkdir()
    return root


# ------------------------------------------------------------------------------------------------ sources


def test_folder_source(folder: Path) -> None:
    ds, info = load_dataset(folder)
    assert info.class_names == ["cat", "dog", "emu"]
    assert (info.num_examples, info.num_classes, info.image_size) == (15, 3, (16, 16))
    assert info.skipped == [] and info.source == f"folder {folder} (3 classes)"
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.int64
    seen = list(ds.as_numpy_iterator())
    assert len(seen) == 15
    for image, label in seen:
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
        expected = {0: (200, 10, 10), 1: (10, 200, 10), 2: (10, 10, 200)}[int(label)]
        assert np.abs(image.astype(int) - expected).max() <= 8  # JPEG/palette rounding
    assert sorted(_labels(ds)) == [0] * 5 + [1] * 5 + [2] * 5
    ds2, info2 = load_dataset(str(folder))  # str and Path alike
    assert info2.num_examples == 15


def test_folder_grayscale_and_mixed_sizes_median(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    _save(root / "a" / "1.png", np.full((8, 12), 50, np.uint8))  # grayscale "L"
    _save(root / "a" / "2.png", np.zeros((10, 30, 3), np.uint8))
    _save(root / "b" / "3.jpg", np.zeros((20, 40, 3), np.uint8), "JPEG")
    ds, info = load_dataset(root)
    assert info.image_size == (10, 30)  # median h of (8, 10, 20), median w of (12, 30, 40)
    shapes = sorted(x.shape for x, _ in ds.as_numpy_iterator())
    assert shapes == [(8, 12, 3), (10, 30, 3), (20, 40, 3)]
    gray = next(x for x, _ in ds.as_numpy_iterator() if x.shape == (8, 12, 3))
    assert (gray == 50).all()


def test_arrays_sources() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (10, 12, 14, 3), dtype=np.uint8)
    ds, info = load_dataset((rgb, np.arange(10) % 5))
    assert (info.num_examples, info.num_classes, info.image_size, info.class_names) == (10, 5, (12, 14), None)
    x0, y0 = next(iter(ds))
    np.testing.assert_array_equal(x0.numpy(), rgb[0])
    assert y0.dtype == tf.int64

    gray = np.full((4, 9, 9), 77, np.uint8)
    ds, info = load_dataset((gray, np.array([[0], [1], [0], [1]])))  # labels (N, 1)
    x, _ = next(iter(ds))
    assert x.shape == (9, 9, 3) and (x.numpy() == 77).all()

    flt = np.full((3, 6, 6, 1), 0.5, np.float32)
    flt[1] = 1.0
    ds, info = load_dataset((flt, [0, 1, 2]))
    images = [x for x, _ in ds.as_numpy_iterator()]
    assert images[0].dtype == np.uint8 and (images[0] == 128).all() and (images[1] == 255).all()
    assert info.image_size == (6, 6)


def test_tf_dataset_sources() -> None:
    images = np.random.default_rng(1).integers(0, 256, (9, 8, 10, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 3], np.int32)
    ds, info = load_dataset(tf.data.Dataset.from_tensor_slices((images, labels)))
    assert (info.num_examples, info.num_classes, info.image_size) == (9, 4, (8, 10))
    assert info.class_names is None and info.source == "tf.data.Dataset"
    assert _labels(ds) == labels.tolist() and ds.element_spec[1].dtype == tf.int64

    dicts = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "id": np.arange(9)})
    ds, info = load_dataset(dicts, num_classes=10)
    assert info.num_classes == 10 and _labels(ds) == labels.tolist()

    # varied sizes, float grayscale images: converted and measured
    def gen():
        for h in (6, 8, 30):
            yield np.full((h, 10, 1), 1.0, np.float32), 1

    var = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec([None, None, 1], tf.float32), tf.TensorSpec([], tf.int64))
    )
    ds, info = load_dataset(var)
    assert info.image_size == (8, 10) and info.num_classes == 2
    first = next(iter(ds))[0].numpy()
    assert first.shape == (6, 10, 3) and (first == 255).all()
    assert image_size_of(ds) == (8, 10) and image_size_of(info) == (8, 10)


def test_tfds_source_mock() -> None:
    with tfds.testing.mock_data(num_examples=12):
        ds, info = load_dataset("cifar10", split="train")
        assert (info.num_examples, info.num_classes, info.image_size) == (12, 10, (32, 32))
        assert info.class_names is not None and len(info.class_names) == 10
        assert info.source == "tfds cifar10 split train"
        assert ds.element_spec[0].shape.as_list() == [32, 32, 3] and ds.element_spec[1].dtype == tf.int64
        assert len(_labels(ds)) == 12

        _, info = load_dataset("tfds:cifar10:test", split="train")  # name:split overrides split=
        assert info.source == "tfds cifar10 split test"

        ds, info = load_dataset("mnist:test")  # grayscale -> RGB
        assert info.image_size == (28, 28) and ds.element_spec[0].shape.as_list() == [28, 28, 3]

        ds, info = load_dataset("oxford_flowers102", split="validation")  # variable size: measured
        shapes = np.array([x.shape[:2] for x, _ in ds.as_numpy_iterator()])
        assert info.image_size == (int(round(np.median(shapes[:, 0]))), int(round(np.median(shapes[:, 1]))))
        assert info.num_classes == 102


def test_tfds_few_shot_mock() -> None:
    with tfds.testing.mock_data(num_examples=200):
        ds, info = load_dataset("cifar10:train", examples_per_class=3, seed=4)
        labels = _labels(ds)
        assert info.num_examples == 30 == len(labels)
        assert np.bincount(labels, minlength=10).tolist() == [3] * 10
        again, _ = load_dataset("cifar10:train", examples_per_class=3, seed=4)
        assert [x.tobytes() for x, _ in again.as_numpy_iterator()] == [x.tobytes() for x, _ in ds.as_numpy_iterator()]


def test_tfds_num_classes_narrower_than_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with tfds.testing.mock_data(num_examples=30):
        all_labels = _labels(load_dataset("cifar10:train")[0])
        with pytest.raises(DataError, match=r"label not in \[0, 5\)"):
            load_dataset("cifar10:train", num_classes=5)
        ds, info = load_dataset("cifar10:train", num_classes=5, strict=False)
        assert _labels(ds) == [y for y in all_labels if y < 5] and info.num_classes == 5
        assert info.num_examples == 30 - len(info.skipped) and len(info.skipped) > 0
        assert f"skipped {len(info.skipped)} of 30 images" in capsys.readouterr().out


def test_tfds_prepared_data_no_mock(tmp_path: Path) -> None:
    """A really prepared dataset (tfds's offline DummyMnist: 20 train examples) in a custom data_dir."""
    tfds.testing.DummyMnist(data_dir=str(tmp_path)).download_and_prepare()
    ds, info = load_dataset("dummy_mnist", data_dir=str(tmp_path))
    assert (info.num_examples, info.num_classes, info.image_size) == (20, 10, (28, 28))
    assert len(_labels(ds)) == 20 and ds.element_spec[0].shape.as_list() == [28, 28, 3]
    _, info = load_dataset("tfds:dummy_mnist:train[:25%]", data_dir=str(tmp_path))
    assert info.num_examples == 5
    start = time.monotonic()
    with pytest.raises(DataError, match="tfds dataset 'dummy_mnist', split 'validation'"):
        load_dataset("dummy_mnist", split="validation", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10  # prepared: a bad split is reported, no download is tried


def test_unknown_source_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no folder and no tensorflow-datasets dataset named 'not_a_dataset_xyz'"):
        load_dataset("not_a_dataset_xyz")
    with pytest.raises(DataError, match="missing does not exist: pass a folder with one sub-folder"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset(tmp_path / "file.png")
    with pytest.raises(DataError, match="unsupported source"):
        load_dataset(42)


def test_tfds_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No mock: the data is not prepared in a fresh data_dir and the network is unreachable."""
    from tensorflow_datasets.core.download import downloader

    def offline(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (network blocked by the test)")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    retries = downloader.MAX_RETRIES
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", split="train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 20
    msg = str(err.value)
    for part in ("'cifar10'", "not downloaded", "offline", "tfds build cifar10", "data_dir=", "folder"):
        assert part in msg
    assert downloader.MAX_RETRIES == retries  # restored


# ------------------------------------------------------------------------------------------------ few-shot


def test_sample_few_shot() -> None:
    labels = np.repeat(np.arange(4), [5, 6, 7, 8])
    idx = sample_few_shot(labels, 3, seed=0)
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3, 3]
    assert idx.tolist() == sorted(idx.tolist()) and len(set(idx.tolist())) == 12
    np.testing.assert_array_equal(idx, sample_few_shot(labels, 3, seed=0))
    assert not np.array_equal(idx, sample_few_shot(labels, 3, seed=1))
    with pytest.raises(DataError, match=r"class 0 has only 5 examples.*examples_per_class=6"):
        sample_few_shot(labels, 6)
    with pytest.raises(DataError, match=r"class 4 has only 0 examples"):
        sample_few_shot(labels, 2, num_classes=5)


def test_few_shot_load_dataset_arrays_and_folder(folder: Path) -> None:
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1) * np.ones((1, 4, 4, 3), np.uint8)
    labels = np.arange(40) % 4
    ds, info = load_dataset((images, labels), examples_per_class=2, seed=3)
    got = list(ds.as_numpy_iterator())
    assert info.num_examples == 8 == len(got)
    assert np.bincount([int(y) for _, y in got]).tolist() == [2, 2, 2, 2]
    picked = [int(x[0, 0, 0]) for x, _ in got]
    assert all(labels[p] == y for p, (_, y) in zip(picked, got))  # images still match their labels
    assert picked == sample_few_shot(labels, 2, seed=3).tolist()
    _, info_again = load_dataset((images, labels), examples_per_class=2, seed=3)
    ds_other, _ = load_dataset((images, labels), examples_per_class=2, seed=4)
    assert [int(x[0, 0, 0]) for x, _ in ds_other.as_numpy_iterator()] != picked

    ds, info = load_dataset(folder, examples_per_class=4)
    assert info.num_examples == 12 and np.bincount(_labels(ds)).tolist() == [4, 4, 4]
    with pytest.raises(DataError, match=r"class 0 \('cat'\) has only 5 examples"):
        load_dataset(folder, examples_per_class=6)


def test_few_shot_tf_dataset_needs_stable_order() -> None:
    labels = np.arange(30) % 3
    base = tf.data.Dataset.from_tensor_slices((np.zeros((30, 4, 4, 3), np.uint8), labels))
    ds, info = load_dataset(base, examples_per_class=2)
    assert info.num_examples == 6 and sorted(_labels(ds)) == [0, 0, 1, 1, 2, 2]
    assert int(ds.cardinality()) == 6
    shuffled = base.shuffle(30, reshuffle_each_iteration=True)
    ds, _ = load_dataset(shuffled, examples_per_class=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="different order on each pass"):
        for _ in range(5):  # one reshuffle could by chance agree on the kept positions
            _labels(ds)


def test_digits_real_data() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    ds, info = load_dataset((images, digits.target), examples_per_class=5, seed=0)
    assert (info.num_examples, info.num_classes, info.image_size) == (50, 10, (8, 8))
    x, y = next(iter(train_pipeline(ds, info, resize=16, crop=12, batch_size=10, seed=0)))
    assert x.shape == (10, 12, 12, 3) and y.shape == (10, 10)
    assert float(tf.reduce_max(x)) <= 1.0 and float(tf.reduce_min(x)) >= 0.0


# ------------------------------------------------------------------------------------------------ bad data


def _bad_folder(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    for c in ("a", "b"):
        for i in range(14):
            _save(root / c / f"{i}.png", _solid(8, 8, (i, i, i)))
    (root / "a" / "notes.txt").write_text("not an image")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def test_bad_files_strict_and_lenient(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _bad_folder(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    msg = str(err.value)
    assert "2 bad image file(s)" in msg and "notes.txt (not an image file)" in msg and "truncated.png" in msg
    assert "strict=False" in msg
    ds, info = load_dataset(root, strict=False)
    assert info.num_examples == 28 == len(_labels(ds))
    assert sorted(os.path.basename(p) for p, _ in info.skipped) == ["notes.txt", "truncated.png"]
    assert "skipped 2 of 30 images: " in capsys.readouterr().out


def test_empty_class_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "d"
    _save(root / "ant" / "1.png", _solid(8, 8, (1, 2, 3)))
    (root / "bee").mkdir()
    (root / "bee" / ".DS_Store").write_bytes(b"x")  # hidden files do not count
    _save(root / "cow" / "1.png", _solid(8, 8, (1, 2, 3)))
    with pytest.raises(DataError, match=r"class folder .*bee is empty: add images or remove the folder"):
        load_dataset(root)
    ds, info = load_dataset(root, strict=False)
    assert info.class_names == ["ant", "cow"] and info.num_classes == 2 and sorted(_labels(ds)) == [0, 1]
    assert info.skipped == [(str(root / "bee"), "empty class folder: class dropped")]
    assert "skipped 0 of 2 images and 1 class folder(s)" in capsys.readouterr().out


def test_folder_without_class_subfolders(tmp_path: Path) -> None:
    _save(tmp_path / "x" / "1.png", _solid(8, 8, (0, 0, 0)))
    for strict in (True, False):
        with pytest.raises(DataError, match=r"no class sub-folders \(1 files directly in it\).*own sub-folder"):
            load_dataset(tmp_path / "x", strict=strict)


def test_labels_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    images = np.zeros((6, 4, 4, 3), np.uint8)
    labels = np.array([0, 1, 2, 7, -1, 2])
    with pytest.raises(DataError, match=r"example 3 \(label 7\): label not in \[0, 3\)"):
        load_dataset((images, labels), num_classes=3)
    with pytest.raises(DataError, match=r"example 4 \(label -1\): negative label"):
        load_dataset((images, labels))
    ds, info = load_dataset((images, labels), num_classes=3, strict=False)
    assert info.num_examples == 4 and _labels(ds) == [0, 1, 2, 2]
    assert [item for item, _ in info.skipped] == ["example 3", "example 4"]
    assert "skipped 2 of 6 images" in capsys.readouterr().out
    # same through a tf.data.Dataset source
    tfd = tf.data.Dataset.from_tensor_slices((images, labels))
    with pytest.raises(DataError, match=r"example 3 \(label 7\)"):
        load_dataset(tfd, num_classes=3)
    ds, info = load_dataset(tfd, num_classes=3, strict=False)
    assert _labels(ds) == [0, 1, 2, 2] and len(info.skipped) == 2


def test_length_mismatch_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    images = np.zeros((5, 4, 4, 3), np.uint8)
    with pytest.raises(DataError, match="5 images but 4 labels: pass exactly one label per image"):
        load_dataset((images, [0, 1, 0, 1]))
    ds, info = load_dataset((images, [0, 1, 0, 1]), strict=False)
    assert info.num_examples == 4 and info.skipped[0][0] == "image 4"
    assert "skipped 1 of 5 images" in capsys.readouterr().out

    floats = np.full((3, 4, 4, 3), 0.5, np.float32)
    floats[1] = 200.0  # forgot to divide by 255
    with pytest.raises(DataError, match=r"example 1 .*float image values not in \[0, 1\]"):
        load_dataset((floats, [0, 1, 0]))
    ds, info = load_dataset((floats, [0, 1, 0]), strict=False)
    assert info.num_examples == 2 and info.skipped[0][0] == "example 1"
    with pytest.raises(DataError, match="images must be an array"):
        load_dataset((np.zeros((3, 4, 4, 5), np.uint8), [0, 1, 2]))
    with pytest.raises(DataError, match="labels must be N integer class indices"):
        load_dataset((images, np.full(5, 0.5)))


# ------------------------------------------------------------------------------------------------ image files


def _images_by_name(ds: tf.data.Dataset, folder: Path) -> dict[str, np.ndarray]:
    """Decoded images of a one-class, flat folder, by file name (the loader keeps the sorted name order)."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    images = [x for x, _ in ds.as_numpy_iterator()]
    assert len(images) == len(names)
    return dict(zip(names, images))


def _pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _png(width: int, height: int, bit_depth: int = 8, colour_type: int = 2, pixels: bytes = b"") -> bytes:
    """A hand-made PNG (any header, even one PIL refuses to write)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def test_every_8bit_format_decodes_exactly_like_pil(tmp_path: Path) -> None:
    """Whichever decoder the scan picks (TensorFlow's or PIL), the pixels are PIL's, for every mode."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    cls = tmp_path / "d" / "c"
    _save(cls / "jpeg_rgb.jpg", noise, "JPEG")
    _save(cls / "jpeg_444.jpg", noise, "JPEG", quality=95, subsampling=0)
    _save(cls / "jpeg_l.jpg", noise, "JPEG", mode="L")
    _save(cls / "jpeg_progressive.jpg", noise, "JPEG", progressive=True)
    _save(cls / "jpeg_cmyk.jpg", noise, "JPEG", mode="CMYK")
    _save(cls / "png_rgb.png", noise)
    _save(cls / "png_l.png", noise, mode="L")
    _save(cls / "png_p.png", noise, mode="P")
    _save(cls / "png_p_transparent.png", noise, mode="P", transparency=3)
    _save(cls / "png_la.png", noise, mode="LA")
    _save(cls / "png_rgba.png", noise, mode="RGBA")
    _save(cls / "png_1bit.png", noise, mode="1")
    _save(cls / "gif.gif", noise, "GIF")
    _save(cls / "gif_l.gif", noise, "GIF", mode="L")
    _save(cls / "gif_transparent.gif", noise, "GIF", mode="P", transparency=0)
    _save(cls / "bmp.bmp", noise, "BMP")
    _save(cls / "tiff_cmyk.tif", noise, "TIFF", mode="CMYK")
    _save(cls / "webp.webp", noise, "WEBP")
    _save(cls / "ppm.ppm", noise, "PPM")
    _save(cls / "png_named.jpg", noise, "PNG")  # the extension lies: the content decides
    _save(cls / "jpeg_named.png", noise, "JPEG")
    _save(cls / "one_pixel.png", noise[:1, :1])
    red, blue = _solid(10, 12, (220, 20, 20)), _solid(10, 12, (20, 20, 220))
    Image.fromarray(red).save(cls / "animated.gif", save_all=True, append_images=[Image.fromarray(blue)])
    ds, info = load_dataset(tmp_path / "d")
    assert info.skipped == [] and info.num_examples == 23
    got = _images_by_name(ds, cls)
    for name, image in got.items():
        np.testing.assert_array_equal(image, _pil_rgb(cls / name), err_msg=name)
    assert got["one_pixel.png"].shape == (1, 1, 3)
    assert (got["animated.gif"] == (220, 20, 20)).all()  # the first frame
    np.testing.assert_array_equal(got["png_named.jpg"], noise)
    assert got["jpeg_named.png"].shape == noise.shape


RAMP16 = np.arange(65536, dtype=np.uint16).reshape(256, 256)


def _high_depth_cases(cls: Path) -> dict[str, np.ndarray]:
    """File name -> the 8-bit values it must decode to (gray ones repeated over 3 channels)."""
    r = RAMP16.astype(np.float64)
    by_257 = np.round(r / 257).astype(np.uint8)
    Image.fromarray(RAMP16).save(cls / "gray16.png")  # PIL mode I;16
    Image.fromarray(RAMP16).save(cls / "gray16_named.jpg", format="PNG")
    Image.fromarray(RAMP16).save(cls / "gray16.tif")  # I;16
    Image.fromarray(RAMP16.astype(">u2")).save(cls / "gray16b.tif")  # I;16B
    Image.fromarray(RAMP16.astype(np.int32)).save(cls / "int32_16bit_range.tif")  # I, values in [0, 65535]
    wide = np.linspace(-(2**31), 2**31 - 1, 65536).astype(np.int32).reshape(256, 256)
    Image.fromarray(wide).save(cls / "int32_wide.tif")  # I, negative and huge: min-max
    unit = (r / 65535).astype(np.float32)
    Image.fromarray(unit).save(cls / "float_unit.tif")  # F in [0, 1]
    Image.fromarray((unit * 25 - 5).astype(np.float32)).save(cls / "float_wide.tif")  # F in [-5, 20]: min-max
    rgb16 = np.stack([RAMP16, 65535 - RAMP16, RAMP16 // 2], axis=-1)
    (cls / "rgb16.png").write_bytes(tf.io.encode_png(rgb16).numpy())
    (cls / "rgba16.png").write_bytes(tf.io.encode_png(np.concatenate([rgb16, rgb16[..., :1]], -1)).numpy())
    gray = lambda a: np.repeat(a[..., None], 3, axis=-1)  # noqa: E731
    wide_f = wide.astype(np.float64)
    stretch = lambda a: np.round((a - a.min()) * 255 / (a.max() - a.min())).astype(np.uint8)  # noqa: E731
    f_wide = (unit * 25 - 5).astype(np.float32).astype(np.float64)
    return {
        "gray16.png": gray(by_257),
        "gray16_named.jpg": gray(by_257),
        "gray16.tif": gray(by_257),
        "gray16b.tif": gray(by_257),
        "int32_16bit_range.tif": gray(by_257),
        "int32_wide.tif": gray(stretch(wide_f)),
        "float_unit.tif": gray(np.round(unit.astype(np.float64) * 255).astype(np.uint8)),
        "float_wide.tif": gray(stretch(f_wide)),
        "rgb16.png": np.round(rgb16 / 257).astype(np.uint8),
        "rgba16.png": np.round(rgb16 / 257).astype(np.uint8),
    }


def test_high_bit_depths_scaled_to_8_bits_never_clipped(tmp_path: Path) -> None:
    cls = tmp_path / "d" / "c"
    cls.mkdir(parents=True)
    expected = _high_depth_cases(cls)
    ds, info = load_dataset(tmp_path / "d")
    assert info.skipped == [] and info.num_examples == len(expected)
    got = _images_by_name(ds, cls)
    for name, want in expected.items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        ramp = got[name][..., 0].reshape(-1)
        assert ramp.min() == 0 and ramp.max() == 255, name
        assert (np.diff(ramp.astype(int)) >= 0).all(), name  # monotonic along the ramp
        assert (ramp == 255).mean() < 0.01, name  # scaled, not clipped at 255
    assert (np.diff(got["rgb16.png"][..., 1].reshape(-1).astype(int)) <= 0).all()  # the falling channel too


def _write_bad_files(cls: Path) -> dict[str, str]:
    """Bad files of several kinds -> the start of the reason each must be reported with."""
    noise = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    reasons = {}
    for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif")]:
        data = _save(cls / f"whole.{ext}", noise, fmt).read_bytes()
        (cls / f"whole.{ext}").unlink()
        (cls / f"truncated.{ext}").write_bytes(data[: len(data) // 2])
        reasons[f"truncated.{ext}"] = "truncated"
    (cls / "zero_bytes.jpg").write_bytes(b"")
    reasons["zero_bytes.jpg"] = "empty file (0 bytes)"
    (cls / "text.jpg").write_text("this is not a JPEG")
    reasons["text.jpg"] = "not an image file"
    (cls / "zero_size.png").write_bytes(_png(0, 0))
    reasons["zero_size.png"] = "not an image file"
    return reasons


def test_bad_images_named_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "d"
    bad = _write_bad_files(root / "a")
    for i in range(3):
        _save(root / "a" / f"good{i}.png", _solid(6, 6, (i, i, i)))
        _save(root / "b" / f"good{i}.jpg", _solid(6, 6, (i, i, i)), "JPEG")
    with pytest.raises(DataError) as err:
        load_dataset(root)  # raised here, while loading: before any training step
    msg = str(err.value)
    assert f"{len(bad)} bad image file(s) in {root}" in msg and "strict=False" in msg
    for name, why in bad.items():
        assert f"{root / 'a' / name} ({why}" in msg
    ds, info = load_dataset(root, strict=False)
    assert {os.path.basename(p): why for p, why in info.skipped}.keys() == bad.keys()
    for item, why in info.skipped:
        assert why.startswith(bad[os.path.basename(item)]), (item, why)
    assert info.num_examples == 6 == len(_labels(ds))  # the rest decodes, nothing else dropped
    out = capsys.readouterr().out
    assert f"skipped {len(bad)} of {len(bad) + 6} images: {info.skipped[0][0]} ({info.skipped[0][1]})" in out
    assert f"({len(bad)} in all, listed in info.skipped)" in out
    record = info.skipped_record()
    assert record["skipped"] == len(bad)
    assert [r["item"] for r in record["skipped_items"]] == [p for p, _ in info.skipped]


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    _save(root / "a" / "small.png", _solid(8, 8, (1, 2, 3)))  # 64 pixels: fine
    _save(root / "a" / "bomb.png", _solid(32, 32, (1, 2, 3)))  # 1024 pixels: over 2 x 100
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=r"bomb\.png \(decompression bomb: 1024 pixels, over PIL's limit of 200"):
        load_dataset(root)
    ds, info = load_dataset(root, strict=False)
    assert [os.path.basename(p) for p, _ in info.skipped] == ["bomb.png"] and len(_labels(ds)) == 1


def test_class_with_only_bad_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "d"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (root / "broken" / "2.png").write_bytes(b"")
    _save(root / "fine" / "1.png", _solid(6, 6, (9, 9, 9)))
    _save(root / "other" / "1.png", _solid(6, 6, (7, 7, 7)))
    with pytest.raises(DataError, match=r"2 bad image file\(s\).*broken/1\.jpg \(truncated .*broken/2\.png \(empty"):
        load_dataset(root)
    ds, info = load_dataset(root, strict=False)
    assert info.class_names == ["fine", "other"] and sorted(_labels(ds)) == [0, 1]
    assert info.skipped[-1] == (str(root / "broken"), "no readable images: class dropped")
    assert "skipped 2 of 4 images and 1 class folder(s)" in capsys.readouterr().out


def test_only_regular_files_are_opened_and_nothing_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    cat = root / "cat"
    _save(cat / "1.png", _solid(6, 6, (200, 0, 0)))
    _save(tmp_path / "elsewhere" / "2.png", _solid(6, 6, (0, 200, 0)))
    (cat / "2.png").symlink_to(tmp_path / "elsewhere" / "2.png")  # symlink to an image: used
    fifo = cat / "fifo.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(cat / "sock.png"))
    (cat / "null.jpg").symlink_to(os.devnull)  # a device, through a symlink
    (cat / "broken.jpg").symlink_to(cat / "missing.jpg")
    (cat / "dir.jpg").mkdir()  # a folder named like an image: a (here empty) nested folder
    _save(cat / "nested.png" / "3.png", _solid(6, 6, (0, 0, 200)))
    (cat / "loop").symlink_to(cat, target_is_directory=True)  # a symlink loop: walked once
    _save(root / "dog" / "1.png", _solid(6, 6, (9, 9, 9)))
    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: opened.append(os.fspath(path)) or real_open(path, *a, **k))
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(load_dataset(root)), daemon=True)
    worker.start()
    worker.join(timeout=120)
    if worker.is_alive():  # release a reader blocked on the FIFO before failing
        os.close(real_open(fifo, os.O_RDWR | os.O_NONBLOCK))
        pytest.fail("load_dataset hung on a special file")
    sock.close()
    ds, info = result[0]
    assert info.skipped == [] and info.num_examples == 4 and info.class_names == ["cat", "dog"]
    opened_here = sorted(os.path.basename(p) for p in opened if p.startswith(str(root)))
    assert opened_here == ["1.png", "1.png", "2.png", "3.png"]  # no FIFO, socket, device, broken link, folder
    colours = sorted(tuple(x[0, 0]) for x, _ in ds.as_numpy_iterator())
    assert colours == [(0, 0, 200), (0, 200, 0), (9, 9, 9), (200, 0, 0)]


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    _save(root / "a" / "ok.png", _solid(6, 6, (1, 1, 1)))
    locked = _save(root / "a" / "locked.png", _solid(6, 6, (1, 1, 1)))
    locked.chmod(0)  # stops reads unless the tests run as root: the open is refused below in any case
    real_open = os.open

    def refusing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(DataError, match=r"locked\.png \(cannot read it: permission denied\)"):
        load_dataset(root)
    ds, info = load_dataset(root, strict=False)
    assert info.skipped == [(str(locked), "cannot read it: permission denied")] and len(_labels(ds)) == 1
    locked.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_unlistable_sub_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    _save(root / "a" / "1.png", _solid(6, 6, (1, 1, 1)))
    _save(root / "a" / "private" / "2.png", _solid(6, 6, (1, 1, 1)))
    real_scandir = os.scandir

    def refusing_scandir(path: Any = ".") -> Any:
        if os.fspath(path).endswith("private"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    with pytest.raises(DataError, match=r"private \(cannot list this folder: Permission denied\)"):
        load_dataset(root)
    _, info = load_dataset(root, strict=False)
    assert info.num_examples == 1 and info.skipped[0][0] == str(root / "a" / "private")


def test_file_names_with_any_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = os.fsencode(tmp_path / "d")
    weird_class, odd_class = b"caf\xe9 \xff", "ünï cödé\nclass".encode()  # not UTF-8; UTF-8 with a newline
    for cls in (weird_class, odd_class):
        os.makedirs(os.path.join(root, cls))
    png = _save(tmp_path / "x.png", _solid(6, 6, (50, 60, 70))).read_bytes()
    bmp = _save(tmp_path / "x.bmp", _solid(6, 6, (80, 90, 100)), "BMP").read_bytes()  # PIL-decoded
    files = {
        os.path.join(root, weird_class, b"\xfe name.png"): png,
        os.path.join(root, weird_class, b"bmp \x80.bmp"): bmp,
        os.path.join(root, odd_class, "ça\tva\n.png".encode()): png,
    }
    for path, data in files.items():
        with open(path, "wb") as f:
            f.write(data)
    ds, info = load_dataset(root)  # bytes root; str below
    assert info.class_names == ["caf\\xe9 \\xff", "ünï cödé\\nclass"]
    assert sorted(tuple(x[0, 0]) for x, _ in ds.as_numpy_iterator()) == [(50, 60, 70), (50, 60, 70), (80, 90, 100)]
    bad = os.path.join(root, weird_class, b"broken \xff\n.jpg")
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError) as err:
        load_dataset(os.fsdecode(root))
    shown = os.fsdecode(bad).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    assert shown.replace("\n", "\\n") + " (not an image file)" in str(err.value)
    str(err.value).encode("utf-8")  # printable: no surrogates left
    ds, info = load_dataset(os.fsdecode(root), strict=False)
    assert len(_labels(ds)) == 3 and info.skipped[0][0].endswith("caf\\xe9 \\xff/broken \\xff\\n.jpg")
    print(info.skipped, info.class_names, info.source)
    json.dumps(info.skipped_record(), ensure_ascii=False).encode("utf-8")
    assert "broken \\xff\\n.jpg (not an image file)" in capsys.readouterr().out


@pytest.mark.parametrize("name, fmt", [("a.jpg", "JPEG"), ("a.png", "PNG"), ("a.bmp", "BMP"), ("a.gif", "GIF")])
def test_file_changed_after_loading_is_named_by_the_pipeline(tmp_path: Path, name: str, fmt: str) -> None:
    root = tmp_path / "d"
    noise = np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    path = _save(root / "c" / name, noise, fmt)
    _save(root / "c" / "b.png", noise)
    _save(root / "c" / "c.png", noise)
    ds, info = load_dataset(root)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated after the up-front check
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"image file {re.escape(str(root / 'c' / name))}: .*Fix: remove or"):
        list(ds.as_numpy_iterator())
    path.unlink()  # gone
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"image file {re.escape(str(root / 'c' / name))}: "):
        list(ds.as_numpy_iterator())
    path.write_bytes(data)  # back: decodes again
    assert len(list(ds.as_numpy_iterator())) == 3 == info.num_examples


def test_last_file_changed_after_loading_is_named(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _save(root / "c" / "a.png", _solid(6, 6, (1, 1, 1)))
    last = _save(root / "c" / "z.jpg", _solid(6, 6, (1, 1, 1)), "JPEG")
    ds, _ = load_dataset(root)
    last.write_bytes(b"gone bad")
    assert int(ds.cardinality()) == 2
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"image file {re.escape(str(last))}: could not be decoded now"):
        list(ds.as_numpy_iterator())


def test_skipped_record_is_capped() -> None:
    info = DatasetInfo(1, 1, (4, 4), skipped=[(f"example {i}", "negative label") for i in range(1500)])
    record = info.skipped_record()
    assert record["skipped"] == 1500 and len(record["skipped_items"]) == 1000
    assert record["skipped_items"][999] == {"item": "example 999", "reason": "negative label"}
    assert info.skipped_record(limit=2)["skipped_items"][-1]["item"] == "example 1"


def test_transfer_records_skipped_images(tmp_path: Path) -> None:
    from bit_keras.recipes.transfer import transfer

    root = tmp_path / "d"
    for c, rgb in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
        for i in range(4):
            _save(root / c / f"{i}.png", _solid(12, 12, rgb))
    noise = _save(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
    (root / "b" / "cut.png").write_bytes(noise.read_bytes()[:2000])
    transfer("BiT-tiny", root, weights=None, strict=False, steps=1, batch_size=4, resize=12, crop=8,
             output_dir=tmp_path / "run", progress=False)
    dataset = json.loads((tmp_path / "run" / "hyperparams.json").read_text())["dataset"]
    assert dataset["skipped"] == 1
    [item] = dataset["skipped_items"]
    assert item["item"] == str(root / "b" / "cut.png") and item["reason"].startswith("truncated")


# ------------------------------------------------------------------------------------------------ mixup


def test_mixup_properties() -> None:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((6, 5, 5, 3)), tf.float32)
    y = tf.one_hot([0, 1, 2, 3, 4, 0], 5)
    same_x, same_y = mixup(x, y, 0.0)
    assert same_x is x and same_y is y
    mx, my = mixup(x, y, 0.4, seed=7)
    np.testing.assert_allclose(tf.reduce_sum(my, axis=1).numpy(), 1.0, atol=1e-6)
    lam = float(my[1, 1])  # example 1 is class 1, its partner in the reversed batch (example 4) is class 4
    assert 0.0 <= lam <= 1.0
    np.testing.assert_allclose(mx.numpy(), lam * x.numpy() + (1 - lam) * x.numpy()[::-1], atol=1e-5)
    np.testing.assert_allclose(mixup(x, y, 0.4, seed=7)[0].numpy(), mx.numpy())  # reproducible
    lams = {round(float(mixup(x, y, 0.4, seed=s)[1][1, 1]), 6) for s in range(8)}
    assert len(lams) > 1  # lambda varies with the seed
    sx, sy = mixup(x, y, 0.1)  # stateful draw
    np.testing.assert_allclose(tf.reduce_sum(sy, axis=1).numpy(), 1.0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ pipelines


def _tagged(n: int = 12, size: int = 8) -> tuple[tf.data.Dataset, DatasetInfo, np.ndarray]:
    """n distinct asymmetric images, label i for image i (so a batch can be matched to its sources)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    ds, info = load_dataset((images, np.arange(n)))
    return ds, info, images


@pytest.mark.parametrize("input_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_train_pipeline_shapes_and_ranges(input_range: tuple[float, float]) -> None:
    ds, info, _ = _tagged()
    out = train_pipeline(ds, info, resize=10, crop=6, batch_size=5, input_range=input_range, seed=0)
    assert out.element_spec[0].shape.as_list() == [5, 6, 6, 3]
    assert out.element_spec[1].shape.as_list() == [5, 12]
    batches = list(out.take(6).as_numpy_iterator())  # repeats beyond 12 examples
    assert len(batches) == 6
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert x.min() >= input_range[0] and x.max() <= input_range[1]
        assert (y.sum(axis=1) == 1).all() and set(np.unique(y)) <= {0.0, 1.0}
    allx = np.concatenate([x for x, _ in batches])
    assert allx.min() < input_range[0] + 0.1 and allx.max() > input_range[1] - 0.1


def test_train_pipeline_no_repeat_drops_remainder_and_mixup() -> None:
    ds, info, _ = _tagged()
    out = train_pipeline(ds, info, resize=8, crop=8, batch_size=5, repeat=False, cache=False)
    assert len(list(out)) == 2  # 12 // 5
    mixed = train_pipeline(ds, info, resize=8, crop=8, batch_size=4, mixup_alpha=0.5, seed=1)
    for _, y in mixed.take(3):
        np.testing.assert_allclose(tf.reduce_sum(y, axis=1).numpy(), 1.0, atol=1e-6)
    assert any(np.sum(y.numpy() > 0, axis=1).max() == 2 for _, y in mixed.take(3))  # really mixed


def test_train_pipeline_reproducible() -> None:
    ds, info, _ = _tagged()
    kwargs = dict(resize=12, crop=8, batch_size=4)
    a = [x for x, _ in train_pipeline(ds, info, seed=5, mixup_alpha=0.2, **kwargs).take(4).as_numpy_iterator()]
    b = [x for x, _ in train_pipeline(ds, info, seed=5, mixup_alpha=0.2, **kwargs).take(4).as_numpy_iterator()]
    c = [x for x, _ in train_pipeline(ds, info, seed=6, mixup_alpha=0.2, **kwargs).take(4).as_numpy_iterator()]
    d = [
        x
        for x, _ in train_pipeline(ds, info, seed=5, mixup_alpha=0.2, cache=False, **kwargs).take(4).as_numpy_iterator()
    ]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    np.testing.assert_array_equal(np.stack(a), np.stack(d))  # caching does not change the stream
    assert not np.array_equal(np.stack(a), np.stack(c))


def test_flip_false_is_deterministic_flip_true_mirrors_sometimes() -> None:
    ds, info, images = _tagged(n=12, size=8)
    expect = images.astype(np.float32) / 255.0
    no_flip = train_pipeline(ds, info, resize=8, crop=8, batch_size=6, flip=False, seed=0)
    for x, y in no_flip.take(4).as_numpy_iterator():
        for image, onehot in zip(x, y):
            np.testing.assert_allclose(image, expect[onehot.argmax()], atol=1e-6)
    mirrored = kept = 0
    for x, y in train_pipeline(ds, info, resize=8, crop=8, batch_size=6, seed=0).take(6).as_numpy_iterator():
        for image, onehot in zip(x, y):
            src = expect[onehot.argmax()]
            if np.allclose(image, src[:, ::-1], atol=1e-6):
                mirrored += 1
            else:
                np.testing.assert_allclose(image, src, atol=1e-6)
                kept += 1
    assert mirrored > 0 and kept > 0


def test_eval_pipeline_keeps_every_example() -> None:
    ds, info, images = _tagged(n=7, size=8)
    out = eval_pipeline(ds, info, crop=4, batch_size=3, input_range=(-1.0, 1.0))
    batches = list(out.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [3, 3, 1]
    assert np.concatenate([y for _, y in batches]).tolist() == list(range(7))
    x = np.concatenate([x for x, _ in batches])
    assert x.shape == (7, 4, 4, 3) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    assert batches[0][1].dtype == np.int64
    direct = tf.image.resize(images.astype(np.float32), (4, 4)).numpy() / 127.5 - 1.0
    np.testing.assert_allclose(x, direct, atol=1e-5)  # resized straight to the crop size
