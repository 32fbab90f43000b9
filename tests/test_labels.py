"""Tests for bit_keras.models.labels: the official label files, downloaded from a loopback mirror."""

from __future__ import annotations

from pathlib import Path

import pytest

import bit_keras.models.download
from bit_keras.models.download import url_to_cache_path
from bit_keras.errors import DownloadError
from bit_keras.models.labels import LabelFileError, get_labels

NAME = "BiT-S-R50x1"  # an ILSVRC-2012 head: 1000 classes, ilsvrc2012_wordnet_lemmas.txt
FILE = "/bit/ilsvrc2012_wordnet_lemmas.txt"
LEMMAS = [f"class_{i}, lemma {i}" for i in range(1000)]
GOOD = ("\n".join(LEMMAS) + "\n").encode()


@pytest.fixture
def server(loopback_server, monkeypatch, tmp_path):
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BIT_KERAS_WEIGHTS_URL", loopback_server.url("/bit/"))
    monkeypatch.setattr(bit_keras.models.download, "_RETRY_DELAY", 0.01)
    loopback_server.files[FILE] = GOOD
    return loopback_server


def cached(server) -> Path:
    return url_to_cache_path(server.url(FILE))


def corrupt(server) -> Path:
    return cached(server).with_name(cached(server).name + ".corrupt")


def test_label_file_is_downloaded_once(server):
    assert get_labels(NAME) == LEMMAS
    assert get_labels(NAME) == LEMMAS
    assert len(server.requests_for(FILE)) == 1
    assert cached(server).read_bytes() == GOOD


@pytest.mark.parametrize("body, problem", [
    (b"only\ntwo", "the label file has 2 lines but BiT-S-R50x1 has 1000 classes"),
    ("\n".join(LEMMAS[:4] + [" "] + LEMMAS[5:]).encode(), "line 5 of the label file is empty"),
    (b"\xff\xfe" + GOOD, "not UTF-8 text"),
    (GOOD.replace(b"class_7,", b"class\0_7,"), "NUL bytes"),
])
def test_bad_label_file_never_lands_in_the_cache(server, body, problem):
    server.files[FILE] = body
    with pytest.raises(LabelFileError) as e:
        get_labels(NAME)
    assert isinstance(e.value, DownloadError) and isinstance(e.value, ValueError)
    msg = str(e.value)
    assert problem in msg and server.url(FILE) in msg and "next call downloads it again" in msg
    assert not cached(server).exists()
    assert corrupt(server).read_bytes() == body
    server.files[FILE] = GOOD
    assert get_labels(NAME) == LEMMAS  # the next call downloads it again
    assert len(server.requests_for(FILE)) == 2


def test_bad_cached_label_file_is_replaced(server):
    # e.g. left by a version that did not check what it downloaded
    path = cached(server)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"<html>Sign in</html>\n")
    assert get_labels(NAME) == LEMMAS
    assert len(server.requests_for(FILE)) == 1
    assert corrupt(server).read_bytes() == b"<html>Sign in</html>\n"


def test_unchecked_bad_file_is_quarantined(server, monkeypatch, tmp_path):
    # A download() that hands back a file without calling validate (or a file changed after the check).
    path = cached(server)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"only\ntwo\n")
    monkeypatch.setattr(bit_keras.models.download, "download", lambda url, **kw: path)
    with pytest.raises(LabelFileError) as e:
        get_labels(NAME)
    msg = str(e.value)
    assert "has 2 lines but BiT-S-R50x1 has 1000 classes" in msg and "the next call downloads it again" in msg
    assert not path.exists() and corrupt(server).read_bytes() == b"only\ntwo\n"


def test_html_page_for_the_label_file(server):
    server.content_types[FILE] = "text/html"
    with pytest.raises(DownloadError, match="HTML page") as e:
        get_labels(NAME)
    assert not isinstance(e.value, LabelFileError)
    assert not cached(server).exists() and not corrupt(server).exists()


def test_label_file_not_found(server):
    del server.files[FILE]
    with pytest.raises(DownloadError, match="HTTP 404"):
        get_labels(NAME)
    assert not cached(server).exists()
