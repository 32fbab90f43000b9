"""A tiny loopback HTTP file server for tests (127.0.0.1, ephemeral port).

Example::

    with LoopbackServer({"/w/a.npz": b"abc"}) as server:
        url = server.url("/w/a.npz")          # http://127.0.0.1:<port>/w/a.npz
        server.cut_after["/w/a.npz"] = 1      # next GET drops the connection after 1 body byte
        server.status_override["/w/b"] = 503  # every request for /w/b answers 503
        server.ignore_range = True            # answer 200 with the full body even to Range requests
        server.requests                       # [(path, {lower-cased header: value}), ...]

Supports GET/HEAD and ``Range: bytes=N-`` / ``bytes=N-M`` (206 + Content-Range,
416 past the end).
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["LoopbackServer"]


def _norm(path: str) -> str:
    return "/" + path.lstrip("/")


def _lookup(table: dict, path: str, pop: bool = False):
    """``table[path]``, accepting keys with or without the leading slash."""
    for key in (path, path.lstrip("/")):
        if key in table:
            return table.pop(key) if pop else table[key]
    return None


class LoopbackServer:
    """Serve ``files`` ({path: bytes}) on 127.0.0.1 from a daemon thread.

    Attributes (all mutable while running): ``files``, ``ignore_range``,
    ``cut_after`` ({path: nbytes}, one-shot), ``status_override`` ({path: code}),
    ``requests`` (list of ``(path, headers)`` with lower-cased header names).
    """

    def __init__(self, files: dict[str, bytes] | None = None, *, ignore_range: bool = False):
        self.files = {_norm(k): v for k, v in (files or {}).items()}
        self.ignore_range = ignore_range
        self.cut_after: dict[str, int] = {}
        self.status_override: dict[str, int] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{_norm(path)}"

    def requests_for(self, path: str) -> list[dict[str, str]]:
        """Headers of every request made for ``path``."""
        return [h for p, h in self.requests if p == _norm(path)]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: LoopbackServer

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        st = self.state
        path = urlsplit(self.path).path
        with st._lock:
            st.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
            code = _lookup(st.status_override, path)
            cut = _lookup(st.cut_after, path, pop=True) if body else None
        data = _lookup(st.files, path)
        if code is None and data is None:
            code = 404
        if code is not None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        start, end = 0, len(data)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m and not st.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(len(data), int(m.group(2)) + 1) if m.group(2) else len(data)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "none" if st.ignore_range else "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))  # full length, even when cut
        self.end_headers()
        if not body:
            return
        chunk = data[start:end] if cut is None else data[start:min(end, start + cut)]
        try:
            self.wfile.write(chunk)
            self.wfile.flush()
        except ConnectionError:
            pass
        if cut is not None:
            self.close_connection = True  # the client sees a short body
