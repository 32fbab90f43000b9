"""Serve a registry over HTTP the way TF Hub does, read-only (stdlib ``ThreadingHTTPServer``).

Routes (GET and HEAD; any other method gets 405):

* ``/<publisher>/<name>/<variant>/<version>?tf-hub-format=compressed``: the SavedModel as a ``tar.gz``
  with its files at the archive root, which is what ``tensorflow_hub`` asks for when it resolves
  ``http://host:port/<handle>`` (it then caches it under ``$TFHUB_CACHE_DIR``);
* ``/<handle>`` without that query (or with ``?format=json``): the model's ``metadata.json``;
* ``/``: an HTML index; ``/models.json`` or ``/?format=json``: the JSON listing.

Only valid handles are looked up (so ``..``, ``%2e%2e``, absolute paths and backslashes never reach
the file system) and a version directory or file that resolves outside the root (a symlink) is
refused with 403. Archives are built once per version and checksum and kept in a temp directory.

Example:
    >>> import tempfile, urllib.request, json
    >>> server = serve(tempfile.mkdtemp())
    >>> json.load(urllib.request.urlopen(f"http://127.0.0.1:{server.port}/models.json"))
    {'models': []}
    >>> server.shutdown()
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tarfile
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bit_keras.atomic import atomic_path
from hub_export.registry import (
    METADATA_FILE,
    HandleNotFoundError,
    InvalidHandleError,
    Registry,
    RegistryError,
    _content_files,
    _inside,
    parse_handle,
)

__all__ = ["RegistryServer", "serve"]

_CHUNK = 1 << 20


class _Forbidden(Exception):
    pass


class RegistryServer(ThreadingHTTPServer):
    """A read-only HTTP server for a :class:`~hub_export.registry.Registry`.

    ``serve_forever()`` runs it in the calling thread; :meth:`start` in a daemon thread.

    Example:
        >>> import tempfile
        >>> server = RegistryServer(tempfile.mkdtemp()).start()
        >>> server.url.startswith("http://127.0.0.1:")
        True
        >>> server.shutdown()
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 0):
        self.registry = Registry(root)
        super().__init__((host, port), _Handler)
        self.host = host
        self.port: int = self.server_address[1]
        self._archives = Path(tempfile.mkdtemp(prefix="bit_keras_registry_archives-"))
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8000``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> RegistryServer:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving, close the socket and delete the cached archives."""
        if self._thread is not None:
            super().shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.server_close()
        shutil.rmtree(self._archives, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def archive(self, handle: str, path: Path, digest: str) -> Path:
        """The ``tar.gz`` of a version directory, built once per (handle, checksum)."""
        key = f"{handle.replace('/', '+')}-{digest[:16]}"
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        target = self._archives / f"{key}.tar.gz"
        with lock:
            if not target.exists():
                with atomic_path(target) as partial:
                    self._write_archive(handle, path, partial)
        return target

    def _write_archive(self, handle: str, path: Path, dest: Path) -> None:
        def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            return info

        # dereference: a symlink inside the root is stored as the file it points to (the hub client accepts
        # only files and directories); one pointing outside the root is refused below.
        with tarfile.open(dest, "w:gz", compresslevel=6, dereference=True) as tar:
            dirs: set[str] = set()
            for rel, file in [(METADATA_FILE, path / METADATA_FILE), *_content_files(path)]:
                if not file.is_file():
                    continue
                if not _inside(file, self.registry.root):
                    raise _Forbidden(f"{handle}: {rel} resolves outside the registry")
                for parent in reversed([p.as_posix() for p in Path(rel).parents if p.as_posix() != "."]):
                    if parent not in dirs:  # the hub client needs each directory before its files
                        dirs.add(parent)
                        tar.add(path / parent, arcname=parent, recursive=False, filter=anonymous)
                tar.add(file, arcname=rel, recursive=False, filter=anonymous)


def serve(root: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 0) -> RegistryServer:
    """Start serving ``root`` in a background thread (port 0 picks a free one); ``.shutdown()`` stops it.

    Example:
        >>> import tempfile, urllib.request
        >>> server = serve(tempfile.mkdtemp())
        >>> urllib.request.urlopen(server.url + "/").status
        200
        >>> server.shutdown()
    """
    return RegistryServer(root, host, port).start()


class _Handler(BaseHTTPRequestHandler):
    server: RegistryServer
    protocol_version = "HTTP/1.1"
    server_version = "bit-keras-registry"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if os.environ.get("BIT_KERAS_REGISTRY_LOG"):
            super().log_message(format, *args)

    # Every method but GET/HEAD: 405 (BaseHTTPRequestHandler would answer 501).
    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self.close_connection = True  # any request body stays unread
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only registry: use GET or HEAD\n", "text/plain",
                   extra={"Allow": "GET, HEAD"})

    def do_GET(self) -> None:
        self._route(body=True)

    def do_HEAD(self) -> None:
        self._route(body=False)

    # ------------------------------------------------------------------ routing

    def _route(self, body: bool) -> None:
        try:
            raw, query = self._split_target()
            if raw in ("", "/"):
                if query.get("format") == ["json"]:
                    return self._json(self._listing(), body)
                return self._send(HTTPStatus.OK, self._index().encode("utf-8"), "text/html; charset=utf-8", body)
            if raw == "/models.json":
                return self._json(self._listing(), body)
            handle = self._handle(raw)
            registry = self.server.registry
            try:
                path = registry.resolve(handle)
            except HandleNotFoundError:
                versions = registry.versions(handle)
                hint = f" Published versions: {', '.join(map(str, versions))}." if versions else ""
                return self._send(HTTPStatus.NOT_FOUND, f"{handle}: not found.{hint}\n".encode(), "text/plain", body)
            if query.get("tf-hub-format") == ["compressed"]:
                return self._archive(handle, path, body)
            meta = registry.show(handle)
            meta.pop("path", None)  # no server paths in answers
            return self._json(meta, body)
        except _Forbidden as e:
            self._send(HTTPStatus.FORBIDDEN, f"{e}\n".encode(), "text/plain", body)
        except InvalidHandleError as e:
            self._send(HTTPStatus.NOT_FOUND, f"{e}\n".encode(), "text/plain", body)
        except ConnectionError:
            self.close_connection = True  # the client went away
        except (RegistryError, OSError) as e:
            self.log_error("%s", e)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error; see the server log\n", "text/plain", body)

    def _split_target(self) -> tuple[str, dict[str, list[str]]]:
        """(raw path, parsed query) of the request target (origin form ``/p?q`` or absolute form)."""
        target = self.path.split("#", 1)[0]
        if not target.startswith("/"):
            parts = urlsplit(target)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
        raw, _, query = target.partition("?")
        return raw, parse_qs(query)

    def _handle(self, raw_path: str) -> str:
        """The handle of a request path; anything but four safe segments is refused."""
        decoded = unquote(raw_path)
        if "\\" in decoded or "\0" in decoded:
            raise _Forbidden("backslashes and NUL are not allowed in paths")
        segments = decoded.strip("/").split("/")
        if decoded.startswith("//") or any(s in ("..", ".") for s in segments):
            raise _Forbidden(f"path {raw_path!r} tries to leave the registry")
        handle = "/".join(segments)
        parse_handle(handle)
        path = self.server.registry.path_of(handle)
        if path.exists() and not _inside(path, self.server.registry.root):
            raise _Forbidden(f"{handle} resolves outside the registry")
        return handle

    # ------------------------------------------------------------------ responses

    def _listing(self) -> dict[str, Any]:
        models = self.server.registry.list()
        base = f"http://{self.headers.get('Host') or f'{self.server.host}:{self.server.port}'}"
        for m in models:
            m.pop("path", None)
            m["url"] = f"{base}/{m['handle']}"
        return {"models": models}

    def _index(self) -> str:
        rows = "".join(
            f"<tr><td><a href=\"/{html.escape(m['handle'])}\">{html.escape(m['handle'])}</a></td>"
            f"<td>{html.escape(str(m['kind']))}</td><td>{html.escape(str(m['arch']))}</td>"
            f"<td>{html.escape(str(m['upstream']))}</td><td>{m['parameters']}</td>"
            f"<td>{html.escape(str(m['published']))}</td></tr>"
            for m in self._listing()["models"])
        return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>bit-keras model registry</title>"
                "</head><body><h1>bit-keras model registry</h1>"
                "<p>Load a model with <code>hub.KerasLayer(\"&lt;url&gt;\")</code> or "
                "<code>hub_export.load.load_layer(\"&lt;url&gt;\")</code>; JSON listing at "
                "<a href=\"/models.json\">/models.json</a>.</p>"
                "<table><tr><th>handle</th><th>kind</th><th>arch</th><th>upstream</th><th>parameters</th>"
                f"<th>published</th></tr>{rows}</table></body></html>\n")

    def _json(self, data: Any, body: bool) -> None:
        self._send(HTTPStatus.OK, (json.dumps(data, indent=2) + "\n").encode("utf-8"), "application/json", body)

    def _archive(self, handle: str, path: Path, body: bool) -> None:
        digest = self.server.registry.show(handle).get("checksums", {}).get("overall") or "unverified"
        archive = self.server.archive(handle, path, digest)
        size = archive.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Encoding", "identity")
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Disposition", f"attachment; filename=\"{handle.replace('/', '_')}.tar.gz\"")
        self.end_headers()
        if body:
            with open(archive, "rb") as f:
                shutil.copyfileobj(f, self.wfile, _CHUNK)

    def _send(self, status: HTTPStatus, data: bytes, content_type: str, body: bool = True,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
