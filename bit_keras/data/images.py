"""Image files of a folder source: listed without opening anything but regular files, checked up front by
decoding each fully with PIL, and decoded in the input pipeline by the decoder that reads them exactly.

Every file is opened and fully decoded when the source is built (:func:`scan_files`), so a bad file is named
before training; the scan also picks the decoder the pipeline uses for the file: one of TensorFlow's where it
reads the file exactly like PIL (faster, no Python), else PIL itself. High bit depths are scaled to 8 bits,
never clipped; names with any bytes are passed to TensorFlow as bytes and shown escaped (:func:`printable`).

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from PIL import Image
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(folder / "a.png")
    >>> (folder / "b.jpg").write_bytes(b"not an image") and None
    >>> [(pathlib.Path(s.path).name, s.problem, s.size) for s in scan_files(list_images(str(folder))[0])]
    [('a.png', None, (4, 6)), ('b.jpg', 'not an image file', (0, 0))]
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import tensorflow as tf
from PIL import Image

from bit_keras.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE

_JPEG, _TF8, _PNG16, _PIL = 0, 1, 2, 3  # decode_jpeg (accurate IDCT), decode_image 8-bit, decode_png 16-bit, PIL
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_WIDE_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}  # PIL modes with more than 8 bits per value
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {10: "\\n", 13: "\\r", 9: "\\t"}
_JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # operating-system litter, ignored like hidden files


@dataclass(frozen=True)
class Scan:
    """What the up-front check found about one file: why it is bad, or its size and decode route."""

    path: str
    problem: str | None = None
    size: tuple[int, int] = (0, 0)  # (h, w)
    route: int = _PIL


def printable(text: str) -> str:
    """``text`` (a path or a name) safe to print and to put in JSON: bytes that are not UTF-8 (surrogate-escaped
    by ``os.listdir``) and control characters become backslash escapes; anything else is kept.

    Example:
        >>> printable("cat/café 1.jpg"), printable(os.fsdecode(b"cat/\\xff\\n.jpg"))
        ('cat/café 1.jpg', 'cat/\\\\xff\\\\n.jpg')
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that did not come from undecodable bytes
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL_ESCAPES)


def visible(name: str) -> bool:
    return not name.startswith(".") and name not in _JUNK


def _kind(entry: os.DirEntry[str]) -> str | None:
    """What ``entry`` is, following symlinks, without opening it: "dir", "file" (regular) or None (anything else)."""
    try:
        mode = entry.stat().st_mode
    except OSError:
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else None


def list_images(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Visible regular files under ``folder`` in sorted walk order, and the sub-folders that cannot be listed.

    Nothing is opened. Symlinks are followed (a folder reached twice, e.g. through a symlink loop, is
    walked once); FIFOs, sockets, devices and broken symlinks are not image files and are ignored.
    """
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            st = os.stat(here)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(here) as it:
                entries = sorted((e for e in it if visible(e.name)), key=lambda e: e.name)
        except OSError as err:
            problems.append((here, f"cannot list this folder: {err.strerror or err}"))
            continue
        kinds = [(e.path, _kind(e)) for e in entries]
        files += [path for path, kind in kinds if kind == "file"]
        stack += reversed([path for path, kind in kinds if kind == "dir"])
    return files, problems


def _open_regular(path: str) -> BinaryIO:
    """Open ``path`` for reading without blocking (O_NONBLOCK), refusing anything but a regular file."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _reason(err: BaseException) -> str:
    """Why PIL (or the file system) could not give an image, in words."""
    text = str(err)
    if isinstance(err, Image.DecompressionBombError):
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", text)
        pixels, limit = found.groups() if found else ("?", "?")
        return (
            f"decompression bomb: {pixels} pixels, over PIL's limit of {limit} (2 x PIL.Image.MAX_IMAGE_PIXELS); "
            "raise PIL.Image.MAX_IMAGE_PIXELS if the image is genuine"
        )
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image file"
    if isinstance(err, DataError):
        return text
    if isinstance(err, OSError) and err.errno is not None:
        return f"cannot read it: {(err.strerror or text).lower()}"
    if isinstance(err, EOFError) or "truncated" in text.lower():
        return f"truncated ({text or type(err).__name__})"
    return f"corrupt image ({type(err).__name__}: {text})"


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Values of any bit depth -> uint8, scaled, never clipped.

    16-bit values (PIL modes ``I;16*``): ``round(v / 257)``, 0 -> 0 and 65535 -> 255. 32-bit integer and
    float values (modes ``I``, ``F``) are scaled by the range they span: float in [0, 1] -> ``v * 255``;
    [0, 255] -> as is; [0, 65535] -> ``v / 257``; any other range (negative values, larger) is stretched
    min-max onto [0, 255]. NaN counts as the smallest value, +-inf as the largest/smallest finite one.

    Example:
        >>> _scale_to_uint8(np.array([0, 257, 32896, 65535], np.uint16)).tolist()
        [0, 1, 128, 255]
        >>> _scale_to_uint8(np.array([0.0, 0.5, 1.0], np.float32)).tolist(), _scale_to_uint8(np.array([-2, 2])).tolist()
        ([0, 128, 255], [0, 255])
    """
    v = values.astype(np.float64)
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        return np.round(v / 257.0).astype(np.uint8)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    v = np.nan_to_num(v, nan=lo, posinf=hi, neginf=lo)
    if lo >= 0 and hi <= 1 and values.dtype.kind == "f":
        v = v * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        v = v / 257.0
    else:
        v = (v - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(v)
    return np.round(v).astype(np.uint8)


def _rgb_array(im: Image.Image) -> np.ndarray:
    """A PIL image as uint8 RGB [H, W, 3]: wide modes scaled (:func:`_scale_to_uint8`), alpha dropped."""
    if im.mode in _WIDE_MODES:
        return np.repeat(_scale_to_uint8(np.asarray(im))[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _plain_gif(im: Image.Image) -> bool:
    """One frame, no transparency, the frame fills the canvas: then TensorFlow decodes it exactly like PIL."""
    full = bool(im.tile) and tuple(im.tile[0][1]) == (0, 0, *im.size)
    return full and "transparency" not in im.info and not im.is_animated


def _route(im: Image.Image, header: bytes) -> int:
    """The pipeline's decoder for an opened (not yet loaded) image; ``header``: the file's first 26 bytes."""
    if im.format in ("JPEG", "MPO"):
        return _JPEG if im.mode in ("RGB", "L") else _PIL  # CMYK/YCCK: PIL
    if im.format == "PNG" and header.startswith(_PNG_SIGNATURE) and len(header) > 24 and not im.is_animated:
        return {8: _TF8, 16: _PNG16}.get(header[24], _PIL)  # IHDR bit depth; 1, 2, 4 bits: PIL
    if im.format == "GIF" and _plain_gif(im):
        return _TF8
    return _PIL


def _scan_file(path: str) -> Scan:
    """Open and fully decode one file with PIL (``load()``, and the RGB conversion where PIL will decode it)."""
    try:
        with _open_regular(path) as f:
            header = f.read(26)
            if not header:
                return Scan(path, "empty file (0 bytes)")
            f.seek(0)
            with Image.open(f) as im:
                route = _route(im, header)
                im.load()
                if route == _PIL:
                    _rgb_array(im)
                w, h = im.size
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        return Scan(path, _reason(err))
    return Scan(path, None, (h, w), route) if w * h else Scan(path, f"no pixels ({w}x{h})")


def scan_files(paths: Sequence[str]) -> list[Scan]:
    """:func:`_scan_file` on every path, on a thread pool (PIL releases the GIL while decoding)."""
    with ThreadPoolExecutor(max_workers=min(32, 4 * (os.cpu_count() or 1))) as pool:
        return list(pool.map(_scan_file, paths))


def _pil_decode(path: bytes) -> tuple[np.ndarray, bytes]:
    """The PIL decoder of the pipeline: (uint8 RGB image, b"") or (empty image, why it failed)."""
    try:
        with _open_regular(os.fsdecode(path)) as f, Image.open(f) as im:
            return _rgb_array(im), b""
    except Exception as err:  # noqa: BLE001 - reported, with the file's name, by decode_files
        return np.zeros([0, 0, 3], np.uint8), _reason(err).encode()


def _decode(path: tf.Tensor, route: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(uint8 [H, W, 3] image, why it failed or "") through the route chosen by the scan."""

    def read() -> tf.Tensor:
        return tf.io.read_file(path)

    def png16() -> tf.Tensor:
        wide = tf.cast(tf.io.decode_png(read(), channels=3, dtype=tf.uint16), tf.float32)
        return tf.cast(tf.round(wide / 257.0), tf.uint8)  # as _scale_to_uint8

    ok = tf.constant("")
    image, why = tf.switch_case(
        route,
        [
            lambda: (tf.io.decode_jpeg(read(), channels=3, dct_method="INTEGER_ACCURATE"), ok),  # PIL's IDCT
            lambda: (tf.io.decode_image(read(), channels=3, expand_animations=False), ok),
            lambda: (png16(), ok),
            lambda: tuple(tf.numpy_function(_pil_decode, [path], [tf.uint8, tf.string], stateful=False)),
        ],
    )
    image.set_shape([None, None, 3])
    return image, why


def decode_files(paths: np.ndarray, names: list[str], routes: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    """(image, label) of each file in order; a file that fails to decode now stops iteration naming it.

    A decode error cannot be caught inside a tf.data graph, so the decoded stream goes through
    ``ignore_errors`` and then every element is checked to be the next one expected (a final end marker
    included): a missing element is a file that failed to decode, and the InvalidArgumentError raised
    names it. Nothing is dropped silently.
    """
    n = len(paths)
    shown = tf.constant(names + ["(end)"])
    ds = tf.data.Dataset.from_tensor_slices((paths, routes, labels, np.arange(n, dtype=np.int64)))
    ds = ds.map(lambda p, r, y, i: (*_decode(p, r), y, i), num_parallel_calls=AUTOTUNE, deterministic=True)
    end = tf.data.Dataset.from_tensors((tf.zeros([0, 0, 3], tf.uint8), "", tf.constant(-1, tf.int64), np.int64(n)))

    def check(k: tf.Tensor, el: tuple[tf.Tensor, ...]) -> tuple[tf.Tensor, tf.Tensor]:
        image, why, label, i = el
        lost = tf.not_equal(i, k)
        why = tf.where(lost, "could not be decoded now (it decoded when the data was loaded: changed since?)", why)
        message = tf.strings.join(["image file ", tf.gather(shown, k), ": ", why, ". Fix: remove or replace it"])
        done = tf.debugging.Assert(tf.logical_and(tf.logical_not(lost), tf.equal(why, "")), [message])
        with tf.control_dependencies([done]):
            return tf.identity(image), label

    ds = ds.ignore_errors().concatenate(end).enumerate().map(check, num_parallel_calls=AUTOTUNE)
    return ds.filter(lambda x, y: y >= 0).apply(tf.data.experimental.assert_cardinality(n))


def class_folders(root: str) -> list[str]:
    """The sorted visible sub-folders of ``root`` (the classes); DataError if ``root`` is no folder or has none."""
    if not os.path.isdir(root):
        what = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"{printable(root)} {what}: pass a folder with one sub-folder of images per class")
    try:
        with os.scandir(root) as it:
            entries = sorted((e for e in it if visible(e.name)), key=lambda e: e.name)
    except OSError as err:
        raise DataError(f"cannot list folder {printable(root)}: {err.strerror or err}") from err
    class_dirs = [e.name for e in entries if _kind(e) == "dir"]
    if not class_dirs:
        raise DataError(
            f"folder {printable(root)} has no class sub-folders ({len(entries)} files directly in it): put the "
            f"images of each class in their own sub-folder, e.g. {printable(os.path.join(root, 'cat', '1.jpg'))}"
        )
    return class_dirs


def raise_bad_files(root: str, bad: list[tuple[str, str]], limit: int = 10) -> None:
    listed = "; ".join(f"{printable(p)} ({why})" for p, why in bad[:limit])
    more = f"; ... and {len(bad) - limit} more" if len(bad) > limit else ""
    raise DataError(
        f"{len(bad)} bad image file(s) in {printable(root)}: {listed}{more}. Fix: remove or replace them, "
        "or pass strict=False to skip them (they are then listed in info.skipped)"
    )
