"""A tiny loopback HTTP file server for tests (127.0.0.1, ephemeral port).

Example::

    with LoopbackServer({"/w/a.npz": b"abc"}) as server:
        url = server.url("/w/a.npz")          # http://127.0.0.1:<port>/w/a.npz
        server.cut_after["/w/a.npz"] = 1      # next GET drops the connection after 1 body byte
        server.status_override["/w/b"] = 503  # every request for /w/b answers 503
        server.ignore_range = True            # answer 200 with the full body even to Range requests
        server.length_override["/w/a.npz"] = 9  # send "Content-Length: 9" whatever the body's size
        server.content_types["/w/a.npz"] = "text/html; charset=utf-8"
        server.chunked.add("/w/a.npz")        # Transfer-Encoding: chunked, no Content-Length
        server.redirects["/old.npz"] = "/w/a.npz"  # 302 Found with this Location
        server.linger.add("/w/a.npz")         # keep the connection open after the body
        server.requests                       # [(path, {lower-cased header: value}), ...]

Supports GET/HEAD and ``Range: bytes=N-`` / ``bytes=N-M`` (206 + Content-Range,
416 past the end). An empty body (``files[path] = b""``) is served as such. The
overrides apply to every response for their path until removed (``cut_after``
is one-shot).
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


def _member(paths: set, path: str) -> bool:
    return path in paths or path.lstrip("/") in paths


class LoopbackServer:
    """Serve ``files`` ({path: bytes}) on 127.0.0.1 from a daemon thread.

    Attributes (all mutable while running): ``files``, ``ignore_range``,
    ``cut_after`` ({path: nbytes}, one-shot), ``status_override`` ({path: code}),
    ``length_override`` ({path: the Content-Length to announce; the body is unchanged}),
    ``content_types`` ({path: Content-Type}, default ``application/octet-stream``),
    ``chunked`` (paths sent with chunked transfer encoding), ``redirects``
    ({path: Location} answered with 302), ``linger`` (paths whose connection stays
    open after the body even when the client asked for ``Connection: close``),
    ``requests`` (list of ``(path, headers)`` with lower-cased header names).
    """

    def __init__(self, files: dict[str, bytes] | None = None, *, ignore_range: bool = False):
        self.files = {_norm(k): v for k, v in (files or {}).items()}
        self.ignore_range = ignore_range
        self.cut_after: dict[str, int] = {}
        self.status_override: dict[str, int] = {}
        self.length_override: dict[str, int] = {}
        self.content_types: dict[str, str] = {}
        self.chunked: set[str] = set()
        self.redirects: dict[str, str] = {}
        self.linger: set[str] = set()
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
            length = _lookup(st.length_override, path)
            ctype = _lookup(st.content_types, path) or "application/octet-stream"
            chunked = _member(st.chunked, path)
            location = _lookup(st.redirects, path)
            linger = _member(st.linger, path)
        data = _lookup(st.files, path)
        if location is not None and code is None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
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
        self.send_header("Content-Type", ctype)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:  # the full length, even when cut
            self.send_header("Content-Length", str(end - start if length is None else length))
        self.end_headers()
        if not body:
            return
        chunk = data[start:end] if cut is None else data[start:min(end, start + cut)]
        try:
            if chunked:
                for i in range(0, len(chunk), 8192):
                    piece = chunk[i:i + 8192]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                if cut is None:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(chunk)
            self.wfile.flush()
        except ConnectionError:
            pass
        if cut is not None:
            self.close_connection = True  # the client sees a short body
        elif linger:
            self.close_connection = False  # wait for another request until the client hangs up
