"""Robust, resumable downloads of the published BiT weight files.

The BiT checkpoints are multi-GB ``.npz`` files in a public bucket. This module
streams them into ``<dest>.part``, resumes interrupted transfers with HTTP
``Range`` requests (within one call and across processes), verifies size and
optional SHA-256, and only then moves the file atomically to its destination.
It uses only the standard library (plus ``keras.utils.Progbar`` for progress).

Example:
    >>> from bit_keras.download import url_to_cache_path
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
from pathlib import Path

from bit_keras.errors import DownloadError

__all__ = ["DownloadError", "cache_dir", "download", "sha256sum", "url_to_cache_path"]

_RETRY_DELAY = 0.5  # seconds before the first retry without progress; doubles each time
_HASH_CHUNK = 1 << 20


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
) -> Path:
    """Download ``url`` to ``dest`` (default ``url_to_cache_path(url)``) and return it.

    * An existing ``dest`` that matches ``expected_size``/``sha256`` is returned
      without any network access.
    * ``file://`` URLs and local paths are verified and returned as they are
      (no copy; ``dest`` is ignored).
    * http(s) is streamed into ``<dest>.part``; an existing ``.part`` is resumed
      with ``Range: bytes=N-``. Broken connections and HTTP 5xx are retried up
      to ``retries`` times, each time resuming from the bytes on disk. Unreachable hosts and HTTP 4xx fail at once.
    * The result is checked against the server's size, ``expected_size`` and
      ``sha256`` before it is moved atomically to ``dest``; a failed download
      never leaves a file at ``dest``.

    Raises:
        DownloadError: on any failure; the message says what to do about it.

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
        return _local(url, parts, expected_size, sha256)

    try:
        dest = Path(dest) if dest is not None else url_to_cache_path(url)
    except ValueError as e:
        raise DownloadError(f"could not download {url}: {e}. Pass dest= explicitly.") from e
    dest = dest.expanduser()
    if dest.exists():
        problem = _check(dest, None, expected_size, sha256, None)
        if problem is None:
            return dest
        print(f"Existing {dest} does not match ({problem}); downloading it again.")
        dest.unlink()
    return _Fetcher(url, parts, dest, expected_size, sha256, progress, timeout,
                    retries, chunk_size).run()


# --------------------------------------------------------------------------- helpers


def _local(url, parts, expected_size, sha256) -> Path:
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


class _Transient(Exception):
    """A failure worth retrying (resuming from the bytes on disk)."""


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to a resume request: the ``.part`` may already be complete."""

    def __init__(self, total: int | None):
        super().__init__(total)
        self.total = total


class _Fetcher:
    def __init__(self, url, parts, dest, expected_size, sha256, progress, timeout, retries, chunk_size):
        self.url, self.dest = url, dest
        self.host = parts.hostname or ""
        self.part = dest.with_name(dest.name + ".part")
        self.expected_size, self.sha256 = expected_size, sha256
        self.progress, self.timeout, self.retries = progress, timeout, retries
        self.chunk_size = chunk_size
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
        self.part.unlink(missing_ok=True)
        return self.error(f"downloaded file is corrupt or not the expected one ({problem}); "
                          f"deleted {self.part}",
                          "Check expected_size/sha256, then re-run to download it again.")

    # -- main loop
    def run(self) -> Path:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        if self.progress:
            print(f"Downloading {self.url} to {self.dest}")
        failures, delay = 0, _RETRY_DELAY
        while True:
            before = self._size()
            try:
                if self._attempt():
                    break
                continue  # restart requested: no delay, not a failure
            except _Transient as e:
                failures += 1
                if failures > self.retries:
                    raise self.error(
                        f"gave up after {self.retries} retries: {e}",
                        f"Re-run to resume from the {self._size()} bytes in {self.part}, or "
                        f"download {self.url} elsewhere and put it at {self.dest}.") from None
                if self._size() <= before:  # no progress: back off before retrying
                    time.sleep(delay)
                    delay *= 2
        os.replace(self.part, self.dest)
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
            raise self.error(f"HTTP {e.code} {e.reason} from {self.host}",
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

    def _attempt(self) -> bool:
        """One request. True when .part is complete and verified, False to restart."""
        have = self._size()
        try:
            resp = self._open(have)
        except _RangeNotSatisfiable as e:
            self.total = e.total if e.total is not None else self.total
            known = (self.total, self.expected_size, self.sha256) != (None, None, None)
            if known and _check(self.part, self.total, self.expected_size, self.sha256, None) is None:
                return True
            self._restart()  # unverifiable or wrong: start over from byte 0
            return False
        self.reached = True
        with resp:
            offset, total = self._parse(resp)
            if offset != have:
                if offset != 0:
                    self._restart()
                    raise _Transient(f"server resumed at byte {offset} instead of {have}")
                have = 0  # server ignored Range: start over with this response
            if total is not None:
                if self.expected_size is not None and total != self.expected_size:
                    raise self.mismatch(f"the server reports {total} bytes but "
                                        f"expected_size is {self.expected_size}")
                self.total = total
            self._stream(resp, have)
        size = self._size()
        if self.total is not None and size < self.total:
            raise _Transient(f"connection closed after {size} of {self.total} bytes")
        problem = _check(self.part, self.total, self.expected_size, self.sha256, self.hasher)
        if problem:
            raise self.mismatch(problem)
        if self.bar is not None:
            self.bar.update(size, finalize=True)
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

    def _stream(self, resp, offset: int):
        if self.sha256 and (self.hasher is None or self.hashed != offset):
            self.hasher = _hash_prefix(self.part, offset) if offset else hashlib.sha256()
            self.hashed = offset
        if self.progress and self.total and self.bar is None:
            import keras  # lazily: importing keras is slow

            self.bar = keras.utils.Progbar(self.total, unit_name="B")
        with open(self.part, "ab" if offset else "wb") as f:
            while True:
                try:
                    chunk = resp.read(self.chunk_size)
                except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
                    raise _Transient(f"connection broke after {f.tell()} bytes: {e!r}") from None
                if not chunk:
                    return
                f.write(chunk)
                if self.sha256:
                    self.hasher.update(chunk)
                    self.hashed += len(chunk)
                if self.bar is not None:
                    self.bar.update(f.tell())
