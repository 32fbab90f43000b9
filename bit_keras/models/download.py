"""Robust, resumable downloads of the published BiT weight files.

The BiT checkpoints are multi-GB ``.npz`` files in a public bucket. This module
streams them into ``<dest>.part``, resumes interrupted transfers with HTTP
``Range`` requests (within one call and across processes), checks that the body
has the size the server announced, refuses HTML pages and empty bodies, verifies
``expected_size``, optional SHA-256 and an optional ``validate`` hook, and only
then moves the file atomically to its destination. A file that turns out bad is
moved aside to ``<dest>.corrupt`` (:func:`quarantine`), so the next call
downloads it again. It uses only the standard library (its progress line too:
``bit-keras download`` needs no TensorFlow).

Example:
    >>> from bit_keras.models.download import url_to_cache_path
    >>> url_to_cache_path("https://example.com/bit/BiT-M-R50x1.npz", root="/c").as_posix()
    '/c/downloads/example.com/bit/BiT-M-R50x1.npz'
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from bit_keras.errors import DownloadError

__all__ = ["DownloadError", "cache_dir", "download", "quarantine", "sha256sum", "url_to_cache_path"]

_RETRY_DELAY = 0.5  # seconds before the first retry without progress; doubles each time
_HASH_CHUNK = 1 << 20
_TRAILER_WAIT = 0.5  # seconds to wait for bytes past the announced Content-Length (a server that ignores
#                      our "Connection: close"); one that closes, as servers do, costs nothing
_SNIFF_BYTES = 1024  # the first read of a body is at least this long, to recognise an HTML page
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_HTML_STARTS = (b"<!doctype html", b"<html")


def cache_dir() -> Path:
    """Root of the bit_keras cache: ``$BIT_KERAS_HOME`` or ``~/.cache/bit_keras``.

    The directory is not created.

    Example:
        >>> import os
        >>> os.environ["BIT_KERAS_HOME"] = "/tmp/bk"
        >>> cache_dir().as_posix()
        '/tmp/bk'
        >>> del os.environ["BIT_KERAS_HOME"]
    """
    home = os.environ.get("BIT_KERAS_HOME")
    return Path(home or "~/.cache/bit_keras").expanduser()


def url_to_cache_path(url: str, root: Path | None = None) -> Path:
    """Map a URL to ``<root or cache_dir()>/downloads/<host>[_<port>]/<url path>``.

    The query string and fragment are dropped. URLs whose path has ``.``/``..``
    segments or no file name are refused with ``ValueError``.

    Example:
        >>> url_to_cache_path("http://127.0.0.1:8000/a/b.npz?x=1", root="/r").as_posix()
        '/r/downloads/127.0.0.1_8000/a/b.npz'
    """
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"URL has no host name: {url!r}")
    if parts.port is not None:
        host = f"{host}_{parts.port}"
    path = urllib.parse.unquote(parts.path)
    segments = [s for s in path.split("/") if s]
    bad = {".", ".."}
    if (
        not segments
        or path.endswith("/")
        or any(s in bad or "\\" in s or "\0" in s for s in segments)
        or host in bad
    ):
        raise ValueError(
            f"refusing to map URL {url!r} to a cache path: its path must name a "
            "file and must not contain '.' or '..' segments"
        )
    return Path(root if root is not None else cache_dir(), "downloads", host, *segments)


def sha256sum(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp(), "f"); _ = p.write_bytes(b"abc")
        >>> sha256sum(p)[:16]
        'ba7816bf8f01cfea'
    """
    return _hash_prefix(Path(path), None).hexdigest()


def download(
    url: str,
    dest: str | Path | None = None,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 3,
    chunk_size: int = 1 << 20,
    validate: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (default ``url_to_cache_path(url)``) and return it.

    * An existing ``dest`` that matches ``expected_size``/``sha256`` and passes
      ``validate`` is returned without any network access. One that does not is
      moved aside to ``<dest>.corrupt`` and downloaded again, once.
    * ``file://`` URLs and local paths are verified and returned as they are
      (no copy, never moved; ``dest`` is ignored).
    * http(s) is streamed into ``<dest>.part``; an existing ``.part`` is resumed
      with ``Range: bytes=N-``. Broken connections, bodies shorter or longer than
      the server announced and HTTP 5xx are retried up to ``retries`` times, each
      time resuming from the bytes on disk; after the last one the ``.part`` is
      kept for the next call to resume. Unreachable hosts, HTTP 4xx, an empty body
      and an HTML page (for a URL not ending in ``.html``/``.htm``) fail at once.
    * The complete file is checked against the server's size, ``expected_size``,
      ``sha256`` and ``validate`` before it is moved atomically to ``dest``; a
      failed download never leaves a file at ``dest`` (a complete but bad one is
      moved to ``<dest>.corrupt``, so the next call downloads it again).

    Args:
        validate: called with the path of a complete file (the ``.part`` of a
            fresh download, or a cached ``dest``); it raises any exception when
            the file is not the expected format. Runs on every call that finds
            ``dest`` cached, so keep it cheap.

    Raises:
        DownloadError: on any failure; the message says what to do about it. A
            failed ``validate`` is its ``__cause__``.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp(), "w.npz"); _ = p.write_bytes(b"x")
        >>> download(p.as_uri(), expected_size=1) == p
        True
    """
    url = os.fspath(url)
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return _local(url, parts, expected_size, sha256, validate)

    try:
        dest = Path(dest) if dest is not None else url_to_cache_path(url)
    except ValueError as e:
        raise DownloadError(f"could not download {url}: {e}. Pass dest= explicitly.") from e
    dest = dest.expanduser()
    if dest.is_dir():
        raise DownloadError(f"could not download {url} to {dest}: {dest} is a folder, not a file. "
                            "Remove it, or pass another dest.")
    if dest.exists():
        problem = _check(dest, None, expected_size, sha256, None)
        if problem is None and validate is not None:
            failed = _invalid(validate, dest)
            problem = None if failed is None else f"it failed validation: {_describe(failed)}"
        if problem is None:
            return dest
        moved = quarantine(dest)
        print(f"Cached {dest} is not the expected file ({problem}); moved it to {moved} "
              "and downloading it again.")
    return _Fetcher(url, parts, dest, expected_size, sha256, progress, timeout,
                    retries, chunk_size, validate).run()


def quarantine(path: Path) -> Path:
    """Move the bad file ``path`` aside to ``<name>.corrupt`` beside it and return that path.

    The move is atomic and replaces an older ``.corrupt`` file, so the next
    :func:`download` of the same URL finds nothing cached and downloads it again.
    Keep the ``.corrupt`` file to inspect what was received; delete it to free the space.

    Raises:
        DownloadError: when the file cannot be moved (it is gone, or a folder is in the way).

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp(), "w.npz"); _ = p.write_bytes(b"<html>")
        >>> quarantine(p).name, p.exists()
        ('w.npz.corrupt', False)
    """
    path = Path(path)
    return _move_aside(path, path.with_name(path.name + ".corrupt"))


# --------------------------------------------------------------------------- helpers


def _move_aside(src: Path, target: Path) -> Path:
    try:
        os.replace(src, target)
    except OSError as e:
        raise DownloadError(f"could not move the bad file {src} aside to {target} "
                            f"({e.strerror or e}). Delete {src} by hand, then re-run.") from e
    return target


def _invalid(validate: Callable[[Path], None], path: Path) -> Exception | None:
    """The exception ``validate(path)`` raises, or None when it passes."""
    try:
        validate(path)
    except Exception as e:  # noqa: BLE001 - any exception means "not the expected format"
        return e
    return None


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return text if text else type(e).__name__


def _snippet(data: bytes, limit: int = 200) -> str:
    """The start of ``data`` as one printable line of at most ``limit`` characters."""
    text = data.decode("utf-8", "replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _looks_like_html(data: bytes) -> bool:
    return data.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith(_HTML_STARTS)


def _local(url, parts, expected_size, sha256, validate) -> Path:
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(f"could not open {url}: file:// URLs on other hosts are not supported")
        path = Path(urllib.request.url2pathname(parts.path))
    elif len(parts.scheme) <= 1:  # plain path, or a Windows drive letter
        path = Path(url).expanduser()
    else:
        raise DownloadError(
            f"could not download {url}: unsupported URL scheme {parts.scheme!r}. "
            "Use an http(s):// or file:// URL, or pass a local path."
        )
    if not path.is_file():
        raise DownloadError(f"could not open {url}: no file at {path}. Check the path, or pass an http(s) URL.")
    problem = _check(path, None, expected_size, sha256, None)
    if problem:
        raise DownloadError(f"local file {path} (from {url}) is not the expected file: {problem}")
    failed = None if validate is None else _invalid(validate, path)
    if failed is not None:
        raise DownloadError(f"local file {path} (from {url}) is not the expected file: it failed "
                            f"validation: {_describe(failed)}") from failed
    return path


def _hash_prefix(path: Path, nbytes: int | None):
    """sha256 object fed with the first ``nbytes`` (all if None) bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = nbytes
        while left is None or left > 0:
            block = f.read(_HASH_CHUNK if left is None else min(_HASH_CHUNK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h


def _check(path: Path, total, expected_size, sha256, hasher) -> str | None:
    """Return a description of the mismatch, or None if ``path`` verifies."""
    size = path.stat().st_size
    for name, want in (("size reported by the server", total), ("expected_size", expected_size)):
        if want is not None and size != want:
            return f"{name} is {want} bytes but got {size} bytes"
    if sha256:
        actual = (hasher or _hash_prefix(path, None)).hexdigest()
        if actual.lower() != sha256.lower():
            return f"expected sha256 {sha256.lower()} but got {actual}"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _socket_of(resp):
    """The socket under an ``http.client.HTTPResponse``, or None where it cannot be reached."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    return sock if callable(getattr(sock, "settimeout", None)) else None


class ProgressLine:
    """A one-line byte counter on stdout (``received/total bytes (pct%, MB/s)``), redrawn at most 5 times a second.

    Example:
        >>> bar = ProgressLine(2048)
        >>> bar.update(2048, final=True)  # doctest: +ELLIPSIS
        2048/2048 bytes (100%, ... MB/s)
    """

    def __init__(self, total: int, every: float = 0.2) -> None:
        self.total, self.every = total, every
        self.started = self.shown = time.monotonic()
        self.first: int | None = None

    def update(self, received: int, final: bool = False) -> None:
        now = time.monotonic()
        self.first = received if self.first is None else self.first
        if not final and now - self.shown < self.every:
            return
        self.shown = now
        rate = (received - self.first) / max(now - self.started, 1e-9) / 1e6
        pct = 100 * received // max(self.total, 1)
        print(f"\r{received}/{self.total} bytes ({pct}%, {rate:.1f} MB/s)", end="\n" if final else "", flush=True)


class _Transient(Exception):
    """A failure worth retrying (resuming from the bytes on disk)."""


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to a resume request: the ``.part`` may already be complete."""

    def __init__(self, total: int | None):
        super().__init__(total)
        self.total = total


class _Fetcher:
    def __init__(self, url, parts, dest, expected_size, sha256, progress, timeout, retries, chunk_size,
                 validate):
        self.url, self.dest = url, dest
        self.host = parts.hostname or ""
        self.part = dest.with_name(dest.name + ".part")
        self.corrupt = dest.with_name(dest.name + ".corrupt")
        self.html_ok = urllib.parse.unquote(parts.path).lower().endswith((".html", ".htm"))
        self.expected_size, self.sha256, self.validate = expected_size, sha256, validate
        self.progress, self.timeout, self.retries = progress, timeout, retries
        self.chunk_size = max(1, chunk_size)
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(self.host) else []
        self.opener = urllib.request.build_opener(*handlers)
        self.hasher, self.hashed = None, 0  # sha256 of the first `hashed` bytes of .part
        self.total = None  # full size as announced by the server
        self.bar = None
        self.reached = False  # the server answered at least once in this call

    # -- error helpers
    def error(self, cause: str, fix: str | None = None) -> DownloadError:
        fix = fix or (f"Download {self.url} elsewhere and put it at {self.dest}, "
                      "or pass a local path.")
        return DownloadError(f"could not download {self.url} to {self.dest}: {cause}. {fix}")

    def mismatch(self, problem: str) -> DownloadError:
        """The server announces another file than expected: the partial ``.part`` is of no use."""
        self.part.unlink(missing_ok=True)
        return self.error(f"the server's file is not the expected one ({problem}); "
                          f"deleted {self.part}",
                          "Check the URL and expected_size/sha256.")

    def reject(self, problem: str) -> DownloadError:
        """The complete ``.part`` is bad: move it aside so that the next call starts afresh."""
        moved = _move_aside(self.part, self.corrupt)
        return self.error(
            f"the downloaded file is corrupt or not the expected one ({problem}); moved it to {moved}",
            f"The next call downloads it again. If this keeps happening, {self.url} does not serve the "
            f"expected file: check the URL, or download the file elsewhere and put it at {self.dest}.")

    # -- main loop
    def run(self) -> Path:
        try:
            self.part.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise self.error(f"cannot create the folder {self.part.parent} ({e.strerror or e}; "
                             "is a file in the way?)",
                             "Move that file, pass another dest, or set BIT_KERAS_HOME to another "
                             "cache folder.") from None
        if self.progress:
            print(f"Downloading {self.url} to {self.dest}")
        failures, delay, causes = 0, _RETRY_DELAY, []
        while True:
            before = self._size()
            try:
                if self._attempt():
                    break
                continue  # restart requested: no delay, not a failure
            except _Transient as e:
                failures += 1
                if str(e) not in causes:
                    causes.append(str(e))
                if failures > self.retries:
                    raise self.error(
                        f"gave up after {self.retries} retries: {'; then '.join(causes[:3])}",
                        f"Re-run to resume from the {self._size()} bytes in {self.part}, or "
                        f"download {self.url} elsewhere and put it at {self.dest}.") from None
                if self._size() <= before:  # no progress: back off before retrying
                    time.sleep(delay)
                    delay *= 2
        failed = None if self.validate is None else _invalid(self.validate, self.part)
        if failed is not None:
            raise self.reject(f"it failed validation: {_describe(failed)}") from failed
        try:
            os.replace(self.part, self.dest)
        except OSError as e:
            raise self.error(f"could not move {self.part} to {self.dest} ({e.strerror or e})",
                             f"Check {self.dest} (a folder in the way?), or pass another dest.") from None
        return self.dest

    def _size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def _restart(self):
        self.part.unlink(missing_ok=True)
        self.hasher, self.hashed = None, 0

    def _open(self, have: int):
        headers = {"User-Agent": "bit_keras", "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        req = urllib.request.Request(self.url, headers=headers)
        try:
            return self.opener.open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and have:
                total = e.headers.get("Content-Range", "").rpartition("/")[2]  # "bytes */N"
                raise _RangeNotSatisfiable(int(total) if total.isdigit() else None) from None
            if e.code >= 500:
                raise _Transient(f"HTTP {e.code} {e.reason}") from None
            denied = (" (access denied: the file is not public at this URL, or a proxy or login "
                      "blocks it)" if e.code in (401, 403) else "")
            raise self.error(f"HTTP {e.code} {e.reason} from {self.host}{denied}",
                             "Check the URL (is the model name right?), or download it elsewhere "
                             f"and put it at {self.dest}, or pass a local path.") from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, ConnectionResetError) or (
                    isinstance(reason, TimeoutError) and self.reached):
                raise _Transient(f"connection to {self.host} failed: {reason}") from None
            raise self.error(f"could not reach {self.host} ({reason}): no network?") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
            raise _Transient(f"bad response from {self.host}: {e!r}") from None

    def _announce(self, total: int | None):
        """Record the full size the server announces; a change within one call is an error."""
        if total is None:
            return
        if self.total is not None and total != self.total:
            raise _Transient(f"the server announced a {self.total}-byte file, then a {total}-byte one")
        self.total = total

    def _attempt(self) -> bool:
        """One request. True when .part is complete and verified, False to restart."""
        have = self._size()
        try:
            resp = self._open(have)
        except _RangeNotSatisfiable as e:
            self._announce(e.total)
            known = (self.total, self.expected_size, self.sha256) != (None, None, None)
            if known and _check(self.part, self.total, self.expected_size, self.sha256, None) is None:
                return True
            self._restart()  # unverifiable or wrong: start over from byte 0
            return False
        self.reached = True
        with resp:
            offset, total = self._parse(resp)
            self._refuse_html_type(resp)
            if offset != have:
                if offset != 0:
                    self._restart()
                    raise _Transient(f"server resumed at byte {offset} instead of {have}")
                have = 0  # server ignored Range: start over with this response
            if total is not None and self.expected_size is not None and total != self.expected_size:
                raise self.mismatch(f"the server reports {total} bytes but "
                                    f"expected_size is {self.expected_size}")
            self._announce(total)
            self._stream(resp, have)
        size = self._size()
        if self.total is not None and size < self.total:
            raise _Transient(f"connection closed after {size} of {self.total} bytes")
        problem = _check(self.part, self.total, self.expected_size, self.sha256, self.hasher)
        if problem:
            raise self.reject(problem)
        if self.bar is not None:
            self.bar.update(size, final=True)
        return True

    def _parse(self, resp):
        """(offset of the body in the file, full file size or None)."""
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if resp.status == 206:
            rng = resp.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
            try:
                start_end, _, total = rng.split(" ", 1)[1].partition("/")
                start = int(start_end.split("-")[0])
            except (IndexError, ValueError):
                raise _Transient(f"bad Content-Range {rng!r}") from None
            return start, int(total) if total.isdigit() else None
        return 0, length

    # -- obvious non-files
    def _html_error(self, head: bytes) -> DownloadError:
        return self.error(
            "the server returned an HTML page (an error or login page?) instead of the file; nothing "
            f"was saved. The page begins: {_snippet(head)!r}",
            f"Open {self.url} in a browser to see why (a login, a proxy or captive portal, a wrong "
            f"URL), or download the file elsewhere and put it at {self.dest}, or pass a local path.")

    def _refuse_html_type(self, resp):
        if self.html_ok or not resp.headers.get("Content-Type"):
            return
        if resp.headers.get_content_type() in _HTML_TYPES:
            try:
                head = resp.read(_SNIFF_BYTES)
            except (http.client.HTTPException, OSError):
                head = b""
            raise self._html_error(head)

    # -- the body
    def _read(self, resp, n: int, declared: int | None, received: int, at: int) -> bytes:
        if declared is not None:
            n = min(n, declared - received)
            if n <= 0:
                return b""
        try:
            return resp.read(n)
        except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
            raise _Transient(f"connection broke after {at + received} bytes: {e!r}") from None

    def _stream(self, resp, offset: int):
        # The body's announced size (Content-Length). http.client stops reading there silently and
        # returns short bodies silently: read exactly that much ourselves, then look past it.
        declared = None if getattr(resp, "chunked", False) else getattr(resp, "length", None)
        sock = _socket_of(resp) if declared else None
        if sock is not None:
            resp.length = None
        received = 0
        chunk = self._read(resp, max(self.chunk_size, _SNIFF_BYTES), declared, received, offset)
        if offset == 0 and not chunk and not declared and self.expected_size != 0:
            raise self.error("the server answered with an empty body instead of the file; nothing was "
                             "saved", f"Check the URL, or download the file elsewhere and put it at "
                             f"{self.dest}, or pass a local path.")
        if offset == 0 and not self.html_ok and _looks_like_html(chunk):
            raise self._html_error(chunk)
        if self.sha256 and (self.hasher is None or self.hashed != offset):
            self.hasher = _hash_prefix(self.part, offset) if offset else hashlib.sha256()
            self.hashed = offset
        if self.progress and self.total and self.bar is None:
            self.bar = ProgressLine(self.total)
        try:
            f = open(self.part, "ab" if offset else "wb")
        except OSError as e:
            raise self._write_error(e) from None
        with f:
            while chunk:
                try:
                    f.write(chunk)
                except OSError as e:
                    raise self._write_error(e) from None
                received += len(chunk)
                if self.sha256:
                    self.hasher.update(chunk)
                    self.hashed += len(chunk)
                if self.bar is not None:
                    self.bar.update(offset + received)
                chunk = self._read(resp, self.chunk_size, declared, received, offset)
        if declared is not None and received < declared:
            raise _Transient(f"connection closed after {received} of the {declared} bytes the server "
                             "announced (Content-Length)")
        if sock is not None and self._more_after_body(resp, sock):
            raise _Transient(f"the server sent more than the {declared} bytes it announced "
                             "(Content-Length); its size information is wrong")

    def _more_after_body(self, resp, sock) -> bool:
        """True when bytes follow the announced end of the body (we asked for ``Connection: close``)."""
        try:
            sock.settimeout(min(self.timeout, _TRAILER_WAIT))
            return bool(resp.read(1))
        except (http.client.HTTPException, OSError, ValueError):
            return False  # a timeout: the server keeps the connection open but sends nothing more

    def _write_error(self, e: OSError) -> DownloadError:
        return self.error(f"could not write {self.part} ({e.strerror or e})",
                          "Free some disk space or fix the folder's permissions, pass another dest, "
                          "or set BIT_KERAS_HOME to another cache folder.")
