"""The ``.npz`` weight-file format: reading headers and arrays safely, writing atomically. NumPy only.

The official BiT files hold flat float arrays under ``resnet/...`` keys (layout:
:meth:`bit_keras.models.spec.ArchSpec.weight_shapes`). :func:`inspect_npz` reads the member headers alone
(shapes and dtypes, no data), so that a member claiming an absurd size is refused before anything is
allocated and a download can be validated cheaply; :func:`read_npz` then reads the data with its CRC
checked. Anything that is not a well-formed ``.npz`` of plain arrays raises
:class:`~bit_keras.errors.WeightFileError` with ``err.unreadable`` set.

Example:
    >>> import os, tempfile, numpy as np
    >>> path = write_npz({"resnet/group_norm/gamma": np.ones(8, "float32")}, os.path.join(tempfile.mkdtemp(), "w.npz"))
    >>> inspect_npz(path)
    {'resnet/group_norm/gamma': ((8,), dtype('float32'))}
"""

from __future__ import annotations

import contextlib
import math
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from bit_keras.atomic import atomic_path
from bit_keras.errors import WeightFileError

Header = tuple[tuple[int, ...], np.dtype]
"""``(shape, dtype)`` of one array, as :func:`inspect_npz` reports it."""

_NPY_MAGIC = b"\x93NUMPY"
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data more than ~1032:1
# What the zip and .npy readers raise on a damaged file (zipfile raises RuntimeError for encrypted
# members, NotImplementedError for unknown compression methods, zlib.error for a damaged deflate stream).
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, zlib.error,
                NotImplementedError, RuntimeError)
SAVE_FIX = "write weight files with bit_keras.save_npz, or numpy.savez with one float array per official key"


def _unreadable(message: str) -> WeightFileError:
    """A WeightFileError for a file that cannot be read as an ``.npz`` at all.

    Such errors carry ``unreadable = True``: a downloaded copy of the file is damaged and worth fetching again
    (:func:`bit_keras.models.create.load_weights` moves it aside), unlike a well-formed file that does not fit the model.
    """
    err = WeightFileError(message)
    err.unreadable = True  # type: ignore[attr-defined]
    return err


def _corrupt(path: Path, err: BaseException) -> WeightFileError:
    return _unreadable(
        f"weight file {path} is corrupt or truncated ({type(err).__name__}: {err}); "
        "delete it and download it again"
    )


@contextlib.contextmanager
def _damage_reported(path: Path) -> Iterator[None]:
    """Turn what the zip and .npy readers raise on a damaged file into a WeightFileError naming ``path``."""
    try:
        yield
    except WeightFileError:
        raise
    except _READ_ERRORS as err:
        raise _corrupt(path, err) from err


def check_weight_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path when it names a regular file; WeightFileError saying what to pass otherwise."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.npz"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise _unreadable(f"weight file {path} is a directory; pass the .npz file inside it{hint}")
    if not path.exists():
        raise _unreadable(f"weight file {path} does not exist")
    if not path.is_file():
        raise _unreadable(f"weight file {path} is not a regular file; pass the path of an .npz file")
    return path


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, archive_size: int) -> Header:
    """Shape and dtype of one ``.npy`` member, read from its header only, checked against the zip directory."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise _unreadable(f"weight file {path}: member {name!r} is encrypted; {SAVE_FIX}")
    if info.header_offset + info.compress_size > archive_size:
        raise _unreadable(
            f"weight file {path} is corrupt or truncated: member {name!r} claims {info.compress_size} bytes "
            f"at offset {info.header_offset} of a {archive_size}-byte file; delete it and download it again"
        )
    if (info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) or (
        info.compress_type == zipfile.ZIP_DEFLATED
        and info.file_size > info.compress_size * _DEFLATE_MAX_RATIO + 1024
    ):
        raise _unreadable(
            f"weight file {path} is corrupt: member {name!r} claims {info.file_size} bytes from "
            f"{info.compress_size} stored bytes, which its compression cannot produce; "
            "delete it and download it again"
        )
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
        except ValueError as err:
            raise _unreadable(
                f"weight file {path}: member {name!r} is not a .npy array ({err}); the file is damaged or "
                f"was not written by numpy.savez; {SAVE_FIX}"
            ) from err
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # 3.0 is only written for structured dtypes with non-latin-1 field names: never weights
            raise _unreadable(
                f"weight file {path}: member {name!r} uses .npy format version {version[0]}.{version[1]}, "
                f"which holds structured arrays, not weights; {SAVE_FIX}"
            )
        header_bytes = f.tell()
    key = name[: -len(".npy")]
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise _unreadable(f"weight file {path}: array {key!r} declares the invalid shape {shape!r}; {SAVE_FIX}")
    if dtype.hasobject:
        raise _unreadable(
            f"weight file {path}: array {key!r} is an object (pickled) array of dtype {dtype}; weight files "
            f"hold plain float arrays and pickles are never loaded (they can run code); {SAVE_FIX}"
        )
    declared = math.prod(shape) * dtype.itemsize
    if header_bytes + declared != info.file_size:
        raise _unreadable(
            f"weight file {path} is corrupt: array {key!r} declares shape {tuple(shape)} of {dtype} "
            f"({declared} bytes) but its member holds {info.file_size - header_bytes} bytes of data; "
            "delete it and download it again"
        )
    return tuple(shape), dtype


def inspect_npz(path: str | os.PathLike) -> dict[str, Header]:
    """Key -> ``(shape, dtype)`` of every array of an ``.npz`` file, from the member headers alone.

    No array data is read, so this is cheap even for multi-GB files, and a member that declares more data
    than it holds (or an absurd size) is refused before anything is allocated. Anything that is not a
    well-formed ``.npz`` of plain arrays raises :class:`WeightFileError`: a missing file, a directory, a
    0-byte file, a ``.npy`` file, a file that is not a zip (or a damaged or truncated one), a zip member
    that is not a ``.npy`` array, an object (pickled) array, a header that disagrees with the member's
    size, an archive with no arrays. Usable as a download validator (a callable that raises).

    Example:
        >>> import os, tempfile, numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
        >>> np.savez(path, **{"resnet/group_norm/gamma": np.ones(8, "float32")})
        >>> inspect_npz(path)
        {'resnet/group_norm/gamma': ((8,), dtype('float32'))}
        >>> np.save(path[:-1] + "y", np.ones(3))
        >>> inspect_npz(path[:-1] + "y")
        Traceback (most recent call last):
        ...
        bit_keras.errors.WeightFileError: weight file ....npy is a single .npy array, not an .npz archive ...
    """
    path = check_weight_file(path)
    size = path.stat().st_size
    if size == 0:
        raise _unreadable(f"weight file {path} is empty (0 bytes), as left by an interrupted download or copy; "
                          "delete it and download it again")
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic == _NPY_MAGIC:
        raise _unreadable(
            f"weight file {path} is a single .npy array, not an .npz archive of named arrays; a weight file "
            f"maps every official key to its array: {SAVE_FIX}"
        )
    headers: dict[str, Header] = {}
    with _damage_reported(path), zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise _unreadable(
                    f"weight file {path} is a zip archive but not an .npz: its member {info.filename!r} is "
                    f"not a .npy array; {SAVE_FIX}"
                )
            key = info.filename[: -len(".npy")]
            if key in headers:
                raise _unreadable(f"weight file {path} is corrupt: it holds array {key!r} twice; "
                                  "delete it and download it again")
            headers[key] = _member_header(zf, info, path, size)
    if not headers:
        raise _unreadable(f"weight file {path} is an empty .npz (no arrays): it holds no weights; "
                          "delete it and download it again, or pass the right file")
    return headers


def iter_arrays(path: Path, headers: Mapping[str, Header]) -> Iterator[tuple[str, np.ndarray]]:
    """The arrays of ``headers`` one at a time, each checked against its header; damage raises WeightFileError."""
    with _damage_reported(path), zipfile.ZipFile(path) as zf:
        for key, (shape, dtype) in headers.items():
            with zf.open(key + ".npy") as f:
                array = np.lib.format.read_array(f, allow_pickle=False)
                trailing = f.read(1)  # reaching the end makes zipfile check the CRC
            if trailing or array.shape != tuple(shape) or array.dtype != dtype:
                raise _unreadable(f"weight file {path} changed while it was read (array {key!r}); "
                                  "load it again once it is complete")
            yield key, array


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of a weight file, with anything but a well-formed ``.npz`` reported clearly.

    The headers are checked first (:func:`inspect_npz`), then the data is read (its CRC checked).

    Example:
        >>> read_npz("/no/such/file.npz")
        Traceback (most recent call last):
        ...
        bit_keras.errors.WeightFileError: weight file /no/such/file.npz does not exist
    """
    path = Path(path)
    return dict(iter_arrays(path, inspect_npz(path)))


def write_npz(arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write ``arrays`` (key -> array) as an uncompressed ``.npz`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)
