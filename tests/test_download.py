"""Tests for bit_keras.download against a loopback HTTP server."""

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from bit_keras import download as dl
from bit_keras.download import DownloadError, cache_dir, download, sha256sum, url_to_cache_path

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
PATH = "/bit/BiT-M-R50x1.npz"
CHUNK = 16 * 1024


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    root = tmp_path / "bk_home"
    monkeypatch.setenv("BIT_KERAS_HOME", str(root))
    monkeypatch.setattr(dl, "_RETRY_DELAY", 0.01)
    return root


@pytest.fixture
def server(loopback_server):
    loopback_server.files[PATH] = DATA
    return loopback_server


def fetch(server, **kw):
    kw = {"progress": False, "timeout": 5.0, "chunk_size": CHUNK, **kw}
    return download(server.url(PATH), **kw)


def part_of(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def ranges(server):
    return [h.get("range") for h in server.requests_for(PATH)]


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    assert not (tmp_path / "x").exists()
    monkeypatch.delenv("BIT_KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "bit_keras"
    assert not (tmp_path / ".cache").exists()


def test_full_download(server, home):
    path = fetch(server)
    assert path == url_to_cache_path(server.url(PATH))
    assert path == home / "downloads" / f"127.0.0.1_{server.port}" / "bit" / "BiT-M-R50x1.npz"
    assert path.read_bytes() == DATA
    assert not part_of(path).exists()
    assert ranges(server) == [None]


def test_second_call_does_not_hit_network(server):
    first = fetch(server, sha256=SHA, expected_size=len(DATA))
    n = len(server.requests)
    assert fetch(server, sha256=SHA, expected_size=len(DATA)) == first
    assert fetch(server) == first
    assert len(server.requests) == n


def test_existing_dest_that_does_not_match_is_replaced(server, tmp_path):
    dest = tmp_path / "w.npz"
    dest.write_bytes(b"stale")
    assert fetch(server, dest=dest, expected_size=len(DATA)).read_bytes() == DATA


def test_interruption_mid_body_resumes_within_one_call(server):
    server.cut_after[PATH] = 100_000
    path = fetch(server, sha256=SHA)
    assert path.read_bytes() == DATA
    assert ranges(server) == [None, "bytes=100000-"]


def test_resume_across_processes(server):
    dest = url_to_cache_path(server.url(PATH))
    dest.parent.mkdir(parents=True)
    part_of(dest).write_bytes(DATA[:123_456])
    assert fetch(server, sha256=SHA, expected_size=len(DATA)).read_bytes() == DATA
    assert ranges(server) == ["bytes=123456-"]
    assert not part_of(dest).exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "w.npz"
    part_of(dest).write_bytes(b"garbage that must be discarded")
    server.cut_after[PATH] = 50_000  # and a second Range request after a cut
    assert fetch(server, dest=dest, sha256=SHA).read_bytes() == DATA
    assert ranges(server) == ["bytes=30-", "bytes=50000-"]


def test_416_on_complete_part_verifies_it(server, tmp_path):
    dest = tmp_path / "w.npz"
    part_of(dest).write_bytes(DATA)
    assert fetch(server, dest=dest, sha256=SHA).read_bytes() == DATA
    assert ranges(server) == [f"bytes={len(DATA)}-"]


def test_416_on_oversized_part_restarts(server, tmp_path):
    dest = tmp_path / "w.npz"
    part_of(dest).write_bytes(DATA + b"extra")
    assert fetch(server, dest=dest).read_bytes() == DATA
    assert ranges(server) == [f"bytes={len(DATA) + 5}-", None]


def test_wrong_expected_size(server):
    dest = url_to_cache_path(server.url(PATH))
    with pytest.raises(DownloadError) as e:
        fetch(server, expected_size=len(DATA) + 1)
    assert str(len(DATA) + 1) in str(e.value) and str(len(DATA)) in str(e.value)
    assert not dest.exists() and not part_of(dest).exists()


def test_server_file_shorter_than_expected(server):
    server.files[PATH] = DATA[:1000]
    dest = url_to_cache_path(server.url(PATH))
    with pytest.raises(DownloadError, match="expected_size"):
        fetch(server, expected_size=len(DATA))
    assert not dest.exists()


def test_short_body_after_retries_fails_and_keeps_part(server):
    server.cut_after[PATH] = 1000
    dest = url_to_cache_path(server.url(PATH))
    with pytest.raises(DownloadError, match="Re-run to resume") as e:
        fetch(server, retries=0)
    assert server.url(PATH) in str(e.value)
    assert not dest.exists()
    assert part_of(dest).read_bytes() == DATA[:1000]
    assert fetch(server).read_bytes() == DATA  # a later run resumes
    assert ranges(server)[-1] == "bytes=1000-"


def test_sha256(server):
    dest = url_to_cache_path(server.url(PATH))
    wrong = "0" * 64
    with pytest.raises(DownloadError) as e:
        fetch(server, sha256=wrong)
    assert wrong in str(e.value) and SHA in str(e.value)
    assert not dest.exists() and not part_of(dest).exists()
    assert fetch(server, sha256=SHA.upper()).read_bytes() == DATA
    assert sha256sum(dest) == SHA


def test_offline_fails_fast(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/bit/w.npz"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as e:
        download(url, progress=False)
    assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert url in msg and "local path" in msg and "could not reach 127.0.0.1" in msg
    assert not url_to_cache_path(url).exists()


def test_404_fails_at_once(server):
    url = server.url("/missing.npz")
    with pytest.raises(DownloadError) as e:
        download(url, progress=False)
    assert "404" in str(e.value) and url in str(e.value)
    assert len(server.requests) == 1


def test_5xx_is_retried(server):
    server.status_override[PATH] = 503
    with pytest.raises(DownloadError, match="503"):
        fetch(server, retries=2)
    assert len(server.requests) == 3
    del server.status_override[PATH]
    assert fetch(server).read_bytes() == DATA


def test_url_to_cache_path(tmp_path):
    root = tmp_path
    assert url_to_cache_path("https://Storage.example.com/a/b.npz?x=1#f", root) == (
        root / "downloads" / "storage.example.com" / "a" / "b.npz")
    assert url_to_cache_path("http://h/a.npz").parent == cache_dir() / "downloads" / "h"
    for bad in ["http://h/a/../../etc/passwd", "http://h/%2e%2e/x", "http://h/a/./b",
                "http://h/dir/", "http://h", "http:///a.npz"]:
        with pytest.raises(ValueError) as e:
            url_to_cache_path(bad, root)
        assert bad in str(e.value)


def test_local_inputs(tmp_path):
    f = tmp_path / "w.npz"
    f.write_bytes(DATA)
    assert download(f.as_uri(), sha256=SHA, progress=False) == f
    assert download(str(f), expected_size=len(DATA), progress=False) == f
    assert download(f, progress=False) == f
    with pytest.raises(DownloadError, match="no file at"):
        download((tmp_path / "nope.npz").as_uri(), progress=False)
    with pytest.raises(DownloadError, match="no file at"):
        download(str(tmp_path / "nope.npz"), progress=False)
    with pytest.raises(DownloadError, match="expected_size"):
        download(str(f), expected_size=1, progress=False)
    assert f.read_bytes() == DATA  # a local file is never deleted


def test_progress_output(server, capsys):
    path = fetch(server, progress=True)
    out = capsys.readouterr().out
    assert server.url(PATH) in out and str(path) in out
    assert f"{len(DATA)}/{len(DATA)}" in out
