"""Tests for bit_keras.models.download against a loopback HTTP server."""

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from bit_keras.models import download as dl
from bit_keras.models.download import DownloadError, cache_dir, download, quarantine, sha256sum, url_to_cache_path

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


def corrupt_of(path: Path) -> Path:
    return path.with_name(path.name + ".corrupt")


def is_data(path: Path) -> None:
    """A validator: the file must be exactly DATA."""
    if path.read_bytes() != DATA:
        raise ValueError(f"not the weights ({path.stat().st_size} bytes)")


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


# --------------------------------------------------------------------------- sizes the server gets wrong


def test_content_length_longer_than_body_fails_after_retries_and_keeps_part(server):
    server.length_override[PATH] = len(DATA) + 100  # announces 100 bytes it never sends
    dest = url_to_cache_path(server.url(PATH))
    with pytest.raises(DownloadError, match="Re-run to resume") as e:
        fetch(server, retries=2)
    assert server.url(PATH) in str(e.value) and str(len(DATA) + 100) in str(e.value)
    assert len(server.requests_for(PATH)) == 3
    assert not dest.exists()
    assert part_of(dest).read_bytes() == DATA
    del server.length_override[PATH]
    assert fetch(server, validate=is_data).read_bytes() == DATA  # a later call resumes it
    assert ranges(server)[-1] == f"bytes={len(DATA)}-"


def test_truncated_body_with_honest_content_length_resumes_later(server):
    server.files[PATH] = DATA[:100_000]
    server.length_override[PATH] = len(DATA)  # e.g. a proxy that cut the transfer
    dest = url_to_cache_path(server.url(PATH))
    with pytest.raises(DownloadError, match=f"100000 of the {len(DATA)} bytes"):
        fetch(server, retries=1)
    assert not dest.exists() and part_of(dest).read_bytes() == DATA[:100_000]
    server.files[PATH] = DATA
    del server.length_override[PATH]
    assert fetch(server, sha256=SHA).read_bytes() == DATA
    assert ranges(server)[-1] == "bytes=100000-"


def test_body_longer_than_content_length_is_an_error(server):
    server.length_override[PATH] = 200_000  # the body is 300_000 bytes
    dest = url_to_cache_path(server.url(PATH))
    with pytest.raises(DownloadError) as e:
        fetch(server, retries=2)
    msg = str(e.value)
    assert "more than the 200000 bytes it announced" in msg  # seen at once, before the retries
    assert not dest.exists()
    assert part_of(dest).read_bytes() == DATA[:200_000]  # kept: the prefix is right
    del server.length_override[PATH]
    assert fetch(server).read_bytes() == DATA
    assert ranges(server)[-1] == "bytes=200000-"


def test_body_longer_than_content_length_on_a_connection_left_open(server):
    server.length_override[PATH] = 200_000
    server.linger.add(PATH)  # the server ignores "Connection: close"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="more than the 200000 bytes it announced"):
        fetch(server, retries=0)
    assert time.monotonic() - t0 < 3


def test_connection_left_open_does_not_stall_the_download(server):
    server.linger.add(PATH)
    t0 = time.monotonic()
    assert fetch(server, timeout=20.0).read_bytes() == DATA  # not 20 s waiting for bytes past the end
    assert time.monotonic() - t0 < 3


def test_chunked_transfer_without_content_length(server):
    server.chunked.add(PATH)
    assert fetch(server, sha256=SHA).read_bytes() == DATA
    assert ranges(server) == [None]


def test_chunked_transfer_cut_mid_body_resumes(server):
    server.chunked.add(PATH)
    server.cut_after[PATH] = 100_000
    assert fetch(server, sha256=SHA).read_bytes() == DATA
    assert len(ranges(server)) == 2 and ranges(server)[1].startswith("bytes=")


# --------------------------------------------------------------------------- validation


def test_validate_sees_the_complete_file_before_it_is_placed(server):
    dest = url_to_cache_path(server.url(PATH))
    seen = []

    def check(path: Path) -> None:
        seen.append((path, path.read_bytes() == DATA, dest.exists()))

    assert fetch(server, validate=check) == dest
    assert seen == [(part_of(dest), True, False)]
    assert fetch(server, validate=check) == dest  # cached: validated again, no request
    assert seen[1:] == [(dest, True, True)] and len(server.requests) == 1


def test_fresh_download_failing_validation_is_quarantined(server):
    dest = url_to_cache_path(server.url(PATH))

    def not_zip(path: Path) -> None:
        raise ValueError("File is not a zip file")

    with pytest.raises(DownloadError) as e:
        fetch(server, validate=not_zip)
    msg = str(e.value)
    assert server.url(PATH) in msg and "File is not a zip file" in msg and "next call downloads it again" in msg
    assert isinstance(e.value.__cause__, ValueError)
    assert not dest.exists() and not part_of(dest).exists()
    assert corrupt_of(dest).read_bytes() == DATA
    assert len(server.requests) == 1  # a bad format is not retried
    assert fetch(server, validate=is_data).read_bytes() == DATA  # the next call downloads it again
    assert ranges(server) == [None, None]


def test_validator_without_message_is_named(server):
    def fails(path: Path) -> None:
        raise KeyError()

    with pytest.raises(DownloadError, match="failed validation: KeyError"):
        fetch(server, validate=fails)


def test_cached_file_failing_validation_is_downloaded_again_once(server):
    dest = url_to_cache_path(server.url(PATH))
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"truncated")
    assert fetch(server, validate=is_data).read_bytes() == DATA
    assert corrupt_of(dest).read_bytes() == b"truncated"
    assert ranges(server) == [None]


def test_cached_file_failing_validation_and_bad_again(server):
    dest = url_to_cache_path(server.url(PATH))
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old junk")
    server.files[PATH] = b"new junk"
    with pytest.raises(DownloadError, match="not the weights"):
        fetch(server, validate=is_data)
    assert len(server.requests) == 1  # downloaded again once, not in a loop
    assert not dest.exists() and not part_of(dest).exists()
    assert corrupt_of(dest).read_bytes() == b"new junk"  # replaced the older one


def test_cached_file_with_wrong_sha256_is_quarantined_and_replaced(server):
    dest = url_to_cache_path(server.url(PATH))
    dest.parent.mkdir(parents=True)
    dest.write_bytes(DATA[:-1] + b"!")
    assert fetch(server, sha256=SHA).read_bytes() == DATA
    assert corrupt_of(dest).read_bytes() == DATA[:-1] + b"!"


def test_sha256_mismatch_never_reaches_dest(server):
    dest = url_to_cache_path(server.url(PATH))
    with pytest.raises(DownloadError, match="next call downloads it again"):
        fetch(server, sha256="1" * 64)
    assert not dest.exists() and not part_of(dest).exists()
    assert corrupt_of(dest).read_bytes() == DATA


def test_validate_on_a_local_file_never_moves_it(tmp_path):
    f = tmp_path / "w.npz"
    f.write_bytes(b"junk")
    with pytest.raises(DownloadError, match="not the weights"):
        download(str(f), validate=is_data, progress=False)
    assert f.read_bytes() == b"junk" and not corrupt_of(f).exists()
    f.write_bytes(DATA)
    assert download(f.as_uri(), validate=is_data, progress=False) == f


def test_quarantine(tmp_path):
    f = tmp_path / "w.npz"
    f.write_bytes(b"one")
    assert quarantine(f) == tmp_path / "w.npz.corrupt"
    assert not f.exists() and (tmp_path / "w.npz.corrupt").read_bytes() == b"one"
    f.write_bytes(b"two")
    assert quarantine(f).read_bytes() == b"two"  # replaces the older one
    with pytest.raises(DownloadError, match="could not move") as e:
        quarantine(f)  # gone
    assert str(f) in str(e.value)


# --------------------------------------------------------------------------- obvious non-files


HTML = b"""<!DOCTYPE html>\n<html>\n<head><title>Sign in \x1b[31m</title></head>\n<body>""" + b"x" * 500


def assert_nothing_cached(server, path=PATH):
    dest = url_to_cache_path(server.url(path))
    assert not dest.exists() and not part_of(dest).exists() and not corrupt_of(dest).exists()


def test_html_page_is_refused(server):
    server.files[PATH] = HTML
    server.content_types[PATH] = "text/html; charset=utf-8"
    with pytest.raises(DownloadError) as e:
        fetch(server, validate=is_data)
    msg = str(e.value)
    assert "the server returned an HTML page (an error or login page?)" in msg
    assert "<!DOCTYPE html> <html> <head><title>Sign in [31m</title>" in msg  # one line, no escape codes
    assert "\n" not in msg and "\x1b" not in msg and "x" * 201 not in msg
    assert len(server.requests) == 1  # not retried
    assert_nothing_cached(server)


def test_html_body_with_a_binary_content_type_is_refused(server):
    server.files[PATH] = b"\n  <html><body>Service unavailable</body></html>"
    with pytest.raises(DownloadError, match="HTML page"):
        fetch(server, chunk_size=4)  # the first read is long enough to recognise it
    assert_nothing_cached(server)


def test_html_page_keeps_a_resumable_part(server):
    dest = url_to_cache_path(server.url(PATH))
    dest.parent.mkdir(parents=True)
    part_of(dest).write_bytes(DATA[:1000])
    server.content_types[PATH] = "text/html"
    with pytest.raises(DownloadError, match="HTML page"):
        fetch(server)
    assert part_of(dest).read_bytes() == DATA[:1000] and not dest.exists()


def test_html_file_is_downloaded_when_asked_for(loopback_server):
    loopback_server.files["/docs/index.html"] = HTML
    loopback_server.content_types["/docs/index.html"] = "text/html"
    path = download(loopback_server.url("/docs/index.html"), progress=False)
    assert path.read_bytes() == HTML


def test_redirect_to_a_login_page_is_refused(server):
    server.redirects["/bit/moved.npz"] = "/login"
    server.files["/login"] = HTML
    server.content_types["/login"] = "text/html"
    with pytest.raises(DownloadError, match="HTML page"):
        download(server.url("/bit/moved.npz"), progress=False)
    assert_nothing_cached(server, "/bit/moved.npz")


@pytest.mark.parametrize("chunked", [False, True])
def test_empty_body_is_refused(server, chunked):
    server.files[PATH] = b""
    if chunked:
        server.chunked.add(PATH)
    with pytest.raises(DownloadError, match="empty body") as e:
        fetch(server)
    assert server.url(PATH) in str(e.value)
    assert len(server.requests) == 1
    assert_nothing_cached(server)


def test_empty_file_when_expected(server):
    server.files[PATH] = b""
    assert fetch(server, expected_size=0).read_bytes() == b""


# --------------------------------------------------------------------------- neighbouring cases


@pytest.mark.parametrize("code", [401, 403])
def test_access_denied_fails_at_once(server, code):
    server.status_override[PATH] = code
    with pytest.raises(DownloadError) as e:
        fetch(server)
    msg = str(e.value)
    assert f"HTTP {code}" in msg and "access denied" in msg and server.url(PATH) in msg
    assert len(server.requests) == 1
    assert_nothing_cached(server)


def test_404_caches_nothing(server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("/bit/nope.npz"), progress=False)
    assert len(server.requests) == 1
    assert_nothing_cached(server, "/bit/nope.npz")


def test_redirect_is_followed(server):
    server.redirects["/old/w.npz"] = PATH
    path = download(server.url("/old/w.npz"), progress=False, sha256=SHA)
    assert path == url_to_cache_path(server.url("/old/w.npz")) and path.read_bytes() == DATA
    server.cut_after[PATH] = 10_000
    path.unlink()
    assert download(server.url("/old/w.npz"), progress=False, sha256=SHA, chunk_size=CHUNK).read_bytes() == DATA
    assert ranges(server)[-1] == "bytes=10000-"  # the Range survives the redirect


def test_parent_folder_is_a_file(server, tmp_path):
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(DownloadError, match="cannot create the folder") as e:
        fetch(server, dest=tmp_path / "blocker" / "sub" / "w.npz")
    assert "blocker" in str(e.value) and "is a file in the way" in str(e.value)
    assert server.requests == []


def test_dest_is_a_folder(server, tmp_path):
    (tmp_path / "w.npz").mkdir()
    with pytest.raises(DownloadError, match="is a folder, not a file"):
        fetch(server, dest=tmp_path / "w.npz")
    assert server.requests == []
