"""Atomic writes: a file or folder appears complete or not at all (temp name in the same folder, then rename).

Every writer of bit-keras goes through :func:`atomic_path`: weight files, ``.keras`` models, JSON records,
plots, SavedModel exports and registry versions. A crash or an exception mid-write leaves the old file (or
nothing) and no half-written one; the temporary is removed.

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "metrics.json"
    >>> write_json(p, {"top1": 0.5}); p.read_text().strip()
    '{\\n  "top1": 0.5\\n}'
    >>> try:
    ...     with atomic_path(p) as tmp:
    ...         _ = tmp.write_text("half")
    ...         raise RuntimeError("crash mid-write")
    ... except RuntimeError:
    ...     pass
    >>> p.read_text().strip()  # the old file, untouched
    '{\\n  "top1": 0.5\\n}'
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write to; on success rename it to ``path``.

    ``directory=True``: the temporary is a new empty folder (for SavedModels and registry versions);
    ``replace=False``: refuse (``FileExistsError``) when ``path`` exists by the time of the rename, so that a
    folder is never replaced. On an exception the temporary is deleted and ``path`` is untouched. The parent
    folder is created.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "export"
        >>> with atomic_path(target, directory=True) as tmp:
        ...     _ = (tmp / "saved_model.pb").write_bytes(b"...")
        >>> sorted(p.name for p in target.iterdir())
        ['saved_model.pb']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if not replace and path.exists():
            raise FileExistsError(f"{path} appeared while it was being written; refusing to replace it")
        if directory and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # an empty target folder may be taken over
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def json_default(value: Any) -> Any:
    """JSON for numpy values and paths (anything else as its string)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    return str(value)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2, default=json_default) + "\n")


def save_model(model: Any, path: str | os.PathLike) -> None:
    """``model.save`` (a ``.keras`` file) atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)
