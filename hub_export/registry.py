"""A versioned, checksummed model registry laid out by TF Hub-style handle.

``<root>/<publisher>/<name>/<variant>/<version>/`` holds one SavedModel and its ``metadata.json``
(architecture, upstream data, classes, input spec, parameter count, per-file and overall sha256,
creation and publication time, bit_keras version). A handle is ``publisher/name/variant/version``:
segments of letters, digits, ``.``, ``_`` and ``-`` starting with a letter or digit, and an integer version.

* Publishing is atomic (copied into ``<root>/.publish-*``, checksummed, renamed into place) and never
  replaces a version: publish the next one.
* The root is the ``root`` argument, else ``$BIT_KERAS_REGISTRY``, else ``<bit_keras cache>/registry``.
* Version directories that resolve (through symlinks) outside the root are treated as absent.

Example:
    >>> import tempfile, pathlib, bit_keras, hub_export
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
    >>> registry = Registry(tmp / "registry")
    >>> path = registry.publish(hub_export.export(model, tmp / "export"), "me/tiny-bit/feature-vector/1")
    >>> registry.verify("me/tiny-bit/feature-vector/1")
    []
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from bit_keras.atomic import atomic_path
from bit_keras.errors import HandleNotFoundError, InvalidHandleError, RegistryError, VersionExistsError

__all__ = [
    "HandleNotFoundError",
    "InvalidHandleError",
    "REGISTRY_ENV",
    "Registry",
    "RegistryError",
    "VersionExistsError",
    "default_root",
    "parse_handle",
]

REGISTRY_ENV = "BIT_KERAS_REGISTRY"
METADATA_FILE = "metadata.json"
SAVED_MODEL_FILE = "saved_model.pb"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"0|[1-9][0-9]{0,8}")
_CHUNK = 1 << 20


def parse_handle(handle: str) -> tuple[str, str, str, int]:
    """Split and validate ``publisher/name/variant/version``.

    Example:
        >>> parse_handle("google/bit-m-r50x1/feature-vector/1")
        ('google', 'bit-m-r50x1', 'feature-vector', 1)
    """
    parts = handle.split("/") if isinstance(handle, str) else []
    if len(parts) != 4 or not all(_SEGMENT.fullmatch(p) for p in parts[:3]) or not _VERSION.fullmatch(parts[3]):
        raise InvalidHandleError(
            f"invalid handle {handle!r}: expected publisher/name/variant/version, e.g. "
            "'me/bit-m-r50x1/feature-vector/1' (segments of letters, digits, '.', '_', '-' starting with a "
            "letter or digit; version an integer without leading zeros)")
    return parts[0], parts[1], parts[2], int(parts[3])


def default_root() -> Path:
    """``$BIT_KERAS_REGISTRY``, else ``<bit_keras cache>/registry`` (cache: ``$BIT_KERAS_HOME`` or ``~/.cache/bit_keras``).

    Example:
        >>> import os
        >>> os.environ["BIT_KERAS_REGISTRY"] = "/srv/models"
        >>> default_root().as_posix()
        '/srv/models'
        >>> del os.environ["BIT_KERAS_REGISTRY"]
    """
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return Path(env).expanduser()
    from bit_keras.models.download import cache_dir

    return cache_dir() / "registry"


def _copy_file(src: Path, dst: Path) -> tuple[str, int]:
    """Copy one file, returning its (sha256, size) computed from the bytes written."""
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
    shutil.copystat(src, dst)
    return digest.hexdigest(), size


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _overall(files: Mapping[str, Mapping[str, Any]]) -> str:
    """One sha256 over the sorted ``<sha256>  <path>`` lines (the ``sha256sum`` format)."""
    lines = "".join(f"{files[p]['sha256']}  {p}\n" for p in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def _content_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(posix relative path, path) of every file of a model directory except ``metadata.json``, sorted."""
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(directory).as_posix()
            if rel != METADATA_FILE:
                yield rel, path


def _symlinks(directory: Path) -> list[Path]:
    """Every symlink (to a file or a directory) under ``directory``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        found += [Path(dirpath, n) for n in dirnames + filenames if Path(dirpath, n).is_symlink()]
    return found


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


class Registry:
    """A model registry rooted at ``root`` (default: :func:`default_root`).

    Example:
        >>> import tempfile
        >>> Registry(tempfile.mkdtemp()).list()
        []
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser().absolute() if root is not None else default_root().absolute()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ------------------------------------------------------------------ lookup

    def path_of(self, handle: str) -> Path:
        """Where ``handle`` lives (or would live); validates the handle, does not check existence.

        Example:
            >>> Registry("/r").path_of("me/m/v/2").as_posix()
            '/r/me/m/v/2'
        """
        publisher, name, variant, version = parse_handle(handle)
        return self.root / publisher / name / variant / str(version)

    def versions(self, handle_prefix: str) -> list[int]:
        """Published versions of ``publisher/name/variant`` (a full handle's version is ignored), sorted.

        Example:
            >>> import tempfile
            >>> Registry(tempfile.mkdtemp()).versions("me/m/v")
            []
        """
        parts = handle_prefix.strip("/").split("/")[:3]
        base = self.path_of("/".join(parts) + "/0").parent
        if not base.is_dir():
            return []
        return sorted(int(p.name) for p in base.iterdir()
                      if _VERSION.fullmatch(p.name) and self._is_model_dir(p))

    def next_handle(self, handle: str) -> str:
        """``handle`` with the version after the highest published one (or the handle itself if free).

        Example:
            >>> import tempfile
            >>> Registry(tempfile.mkdtemp()).next_handle("me/m/v/1")
            'me/m/v/1'
        """
        publisher, name, variant, version = parse_handle(handle)
        existing = self.versions(handle)
        nxt = max(existing) + 1 if existing and version in existing else version
        return f"{publisher}/{name}/{variant}/{nxt}"

    def _is_model_dir(self, path: Path) -> bool:
        return path.is_dir() and (path / SAVED_MODEL_FILE).is_file() and _inside(path, self.root)

    def resolve(self, handle: str) -> Path:
        """The directory of a published handle (a SavedModel dir for ``tf.saved_model.load``/``hub.load``).

        Raises:
            InvalidHandleError: a malformed handle.
            HandleNotFoundError: nothing published under it (published versions are named), or it
                resolves outside the registry root.

        Example:
            >>> import tempfile
            >>> try:
            ...     Registry(tempfile.mkdtemp()).resolve("me/m/v/1")
            ... except HandleNotFoundError as e:
            ...     print(type(e).__name__)
            HandleNotFoundError
        """
        path = self.path_of(handle)
        if path.exists() and not _inside(path, self.root):
            raise HandleNotFoundError(f"{handle}: {path} resolves outside the registry root {self.root}; "
                                      "refusing to use it (remove the symlink)")
        if not self._is_model_dir(path):
            versions = self.versions(handle)
            hint = (f" Published versions: {', '.join(map(str, versions))}." if versions
                    else " bit-keras registry list shows what is published.")
            raise HandleNotFoundError(f"no model published as {handle!r} in registry {self.root}.{hint}")
        return path

    def show(self, handle: str) -> dict[str, Any]:
        """The ``metadata.json`` of a published handle, plus ``path``.

        Example:
            >>> import tempfile
            >>> try:
            ...     Registry(tempfile.mkdtemp()).show("me/m/v/1")
            ... except HandleNotFoundError:
            ...     print("not published")
            not published
        """
        path = self.resolve(handle)
        try:
            meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RegistryError(f"{handle}: cannot read {path / METADATA_FILE} ({e}); run "
                                f"'bit-keras registry verify {handle}'") from e
        return {**meta, "handle": handle, "path": str(path)}

    def list(self) -> list[dict[str, Any]]:
        """A summary of every published model, sorted by handle (versions numerically).

        Example:
            >>> import tempfile
            >>> Registry(tempfile.mkdtemp()).list()
            []
        """
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.glob("*/*/*/*")):
            handle = path.relative_to(self.root).as_posix()
            try:
                parse_handle(handle)
            except InvalidHandleError:
                continue  # temp dirs (".publish-*") and stray files
            if not self._is_model_dir(path):
                continue
            try:
                meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            arch = meta.get("architecture") or {}
            out.append({
                "handle": handle,
                "path": str(path),
                "kind": meta.get("kind"),
                "arch": arch.get("arch") if isinstance(arch, dict) else arch,
                "zoo_name": meta.get("zoo_name"),
                "upstream": meta.get("upstream"),
                "num_classes": (meta.get("classes") or {}).get("num_classes"),
                "parameters": meta.get("parameters"),
                "fine_tunable": meta.get("fine_tunable"),
                "size_bytes": meta.get("size_bytes"),
                "sha256": (meta.get("checksums") or {}).get("overall"),
                "published": meta.get("published"),
            })
        out.sort(key=lambda m: (*m["handle"].split("/")[:3], int(m["handle"].split("/")[3])))
        return out

    # ------------------------------------------------------------------ changes

    def publish(self, export_dir: str | os.PathLike, handle: str,
                metadata: Mapping[str, Any] | None = None) -> Path:
        """Copy an exported SavedModel into the registry under ``handle``; returns the version directory.

        ``metadata.json`` is the export's own metadata (if any) updated with ``metadata`` and with the
        registry's fields: ``handle``, per-file and overall ``checksums``, ``size_bytes``, ``published``,
        ``bit_keras_version``. Nothing appears under the handle until everything is copied; a failure
        leaves neither a partial version nor temp directories behind.

        Raises:
            VersionExistsError: the version is taken (the message suggests the next one).
            RegistryError: ``export_dir`` is not a SavedModel directory or holds a symlink.

        Example:
            >>> import tempfile, pathlib, bit_keras, hub_export
            >>> tmp = pathlib.Path(tempfile.mkdtemp())
            >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
            >>> Registry(tmp / "r").publish(hub_export.export(model, tmp / "e"), "me/tiny/fv/1").name
            '1'
        """
        import bit_keras

        final = self.ensure_available(handle)
        source = Path(export_dir).expanduser()
        if not (source / SAVED_MODEL_FILE).is_file():
            raise RegistryError(f"{source} is not a SavedModel directory (no {SAVED_MODEL_FILE}); "
                                "create one with hub_export.export(model, dir)")
        meta: dict[str, Any] = {}
        if (source / METADATA_FILE).is_file():
            try:
                meta = dict(json.loads((source / METADATA_FILE).read_text(encoding="utf-8")))
            except (ValueError, TypeError) as e:
                raise RegistryError(f"{source / METADATA_FILE} is not a JSON object ({e}); fix or delete it") from e
        meta.update(metadata or {})

        created_parents = [p for p in (final.parent, final.parent.parent, final.parent.parent.parent)
                           if not p.exists()]
        links = _symlinks(source)
        if links:
            raise RegistryError(f"{links[0]} is a symlink; the registry holds regular files only. "
                                "Copy the target into the export instead")
        try:
            with atomic_path(final, directory=True, replace=False) as build:
                files: dict[str, dict[str, Any]] = {}
                for rel, src in _content_files(source):
                    dst = build / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    sha, size = _copy_file(src, dst)
                    files[rel] = {"sha256": sha, "size": size}
                if "parameters" not in meta:
                    meta["parameters"] = _count_parameters(build)
                meta.update({
                    "handle": handle,
                    "checksums": {"algorithm": "sha256", "overall": _overall(files), "files": files},
                    "size_bytes": sum(f["size"] for f in files.values()),
                    "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "bit_keras_version": bit_keras.__version__,
                })
                meta.setdefault("created", meta["published"])
                for key in ("architecture", "upstream", "classes", "input"):
                    meta.setdefault(key, None)
                (build / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
                self.ensure_available(handle)
        except FileExistsError as e:  # someone published the same version meanwhile
            for parent in created_parents:
                _rmdir_if_empty(parent)
            raise VersionExistsError(self._exists_message(handle)) from e
        except BaseException:
            for parent in created_parents:
                _rmdir_if_empty(parent)
            raise
        return final

    def _exists_message(self, handle: str) -> str:
        return (f"{handle} is already published in {self.root}; versions are never overwritten. Publish as "
                f"{self.next_handle(handle)} instead (or remove the old version first)")

    def ensure_available(self, handle: str) -> Path:
        """The directory ``handle`` would be published to; raises if the version is taken.

        Raises:
            InvalidHandleError: a malformed handle.
            VersionExistsError: something is already there (the message suggests the next version).

        Example:
            >>> Registry("/nonexistent").ensure_available("me/m/v/1").as_posix()
            '/nonexistent/me/m/v/1'
        """
        final = self.path_of(handle)
        if final.exists() or final.is_symlink():
            raise VersionExistsError(self._exists_message(handle))
        return final

    def verify(self, handle: str) -> list[str]:
        """Check a published model against the checksums in its ``metadata.json``.

        Returns:
            The problems found (missing, modified or unexpected files; a bad overall checksum);
            an empty list means the model is intact.

        Example:
            >>> import tempfile, pathlib, bit_keras, hub_export
            >>> tmp = pathlib.Path(tempfile.mkdtemp())
            >>> model = bit_keras.resnet_v2((1, 1, 1, 1), width=0.25, num_classes=None, groups=8)
            >>> registry = Registry(tmp / "r")
            >>> path = registry.publish(hub_export.export(model, tmp / "e"), "me/tiny/fv/1")
            >>> _ = (path / "saved_model.pb").write_bytes(b"tampered")
            >>> registry.verify("me/tiny/fv/1")[0].startswith("modified file saved_model.pb")
            True
        """
        path = self.resolve(handle)
        try:
            meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
            expected = meta["checksums"]["files"]
            overall = meta["checksums"]["overall"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            return [f"{METADATA_FILE}: missing, unreadable or without checksums ({type(e).__name__}: {e})"]
        problems = []
        seen = set()
        for rel, file in _content_files(path):
            seen.add(rel)
            if not _inside(file, self.root):
                problems.append(f"file {rel} resolves outside the registry root")
                continue
            if rel not in expected:
                problems.append(f"unexpected file {rel} (not in {METADATA_FILE})")
                continue
            sha, size = _hash_file(file)
            want = expected[rel]
            if sha != want.get("sha256") or size != want.get("size"):
                problems.append(f"modified file {rel}: sha256 {sha[:16]}... ({size} bytes), expected "
                                f"{str(want.get('sha256'))[:16]}... ({want.get('size')} bytes)")
        problems += [f"missing file {rel}" for rel in sorted(set(expected) - seen)]
        if _overall(expected) != overall:
            problems.append(f"overall checksum in {METADATA_FILE} does not match its per-file checksums "
                            "(the metadata was edited)")
        return problems

    def remove(self, handle: str) -> None:
        """Delete a published version (atomically: renamed away, then deleted).

        Example:
            >>> import tempfile
            >>> try:
            ...     Registry(tempfile.mkdtemp()).remove("me/m/v/1")
            ... except HandleNotFoundError:
            ...     print("nothing to remove")
            nothing to remove
        """
        path = self.resolve(handle)
        trash = self.root / f".remove-{uuid.uuid4().hex[:12]}"
        os.rename(path, trash)
        shutil.rmtree(trash)
        for parent in (path.parent, path.parent.parent, path.parent.parent.parent):
            _rmdir_if_empty(parent)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def _count_parameters(saved_model_dir: Path) -> int | None:
    """Total size of the variables in a SavedModel's checkpoint (None if it has none readable)."""
    index = saved_model_dir / "variables" / "variables.index"
    if not index.is_file():
        return None
    import tensorflow as tf

    try:
        listing = tf.train.list_variables(str(saved_model_dir / "variables" / "variables"))
    except Exception:  # noqa: BLE001  (not a TF checkpoint: the count is informational only)
        return None
    total = 0
    for name, shape in listing:
        if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"):
            n = 1
            for d in shape:
                n *= d
            total += n
    return total
