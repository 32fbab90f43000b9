"""The model registry (atomic publish, versions, checksums) and its HTTP server (listing, traversal, methods).

These tests use small fake SavedModel directories (no TensorFlow work); the real SavedModels and the
real ``tensorflow_hub`` client are exercised in ``test_hub_export.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import socket
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import hub_export
from hub_export import (
    HandleNotFoundError,
    InvalidHandleError,
    Registry,
    RegistryError,
    VersionExistsError,
    parse_handle,
    serve,
)

HANDLE = "me/tiny-bit/feature-vector/1"


def fake_export(directory: Path, seed: bytes = b"0") -> Path:
    """A directory shaped like an export: saved_model.pb, variables/, assets/, metadata.json."""
    (directory / "variables").mkdir(parents=True)
    (directory / "assets").mkdir()
    (directory / "saved_model.pb").write_bytes(b"pb" + seed * 100)
    (directory / "variables" / "variables.index").write_bytes(b"index" + seed)
    (directory / "variables" / "variables.data-00000-of-00001").write_bytes(os.urandom(5000))
    (directory / "assets" / "labels.txt").write_text("cat\ndog\n")
    (directory / "metadata.json").write_text(json.dumps({
        "kind": "classifier", "architecture": {"arch": "R14x0.25"}, "upstream": "none",
        "classes": {"num_classes": 2}, "input": {"shape": [None, None, None, 3]}, "parameters": 123}))
    return directory


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def published(registry: Registry, tmp_path: Path) -> Registry:
    registry.publish(fake_export(tmp_path / "export"), HANDLE)
    registry.publish(fake_export(tmp_path / "export2", b"1"), "me/tiny-bit/feature-vector/2")
    registry.publish(fake_export(tmp_path / "export3", b"2"), "other/x/classifier/10")
    return registry


def visible_tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# --------------------------------------------------------------------------- handles and roots


@pytest.mark.parametrize("bad", [
    "a/b/c", "a/b/c/d/1", "a/b/c/x", "a/b/c/01", "a/b/c/-1", "../b/c/1", "a/../c/1", "./b/c/1", "/a/b/c/1",
    "a//c/1", ".hidden/b/c/1", "a/b c/d/1", "a/b/c/1/", "a\\b/c/d/1", "a/b/c/1.0", ""])
def test_invalid_handles_are_refused(bad: str, registry: Registry) -> None:
    with pytest.raises(InvalidHandleError, match="publisher/name/variant/version"):
        parse_handle(bad)
    with pytest.raises(InvalidHandleError):
        registry.path_of(bad)


def test_root_from_argument_env_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIT_KERAS_REGISTRY", raising=False)
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path / "home"))
    assert Registry().root == tmp_path / "home" / "registry"
    monkeypatch.setenv("BIT_KERAS_REGISTRY", str(tmp_path / "env"))
    assert Registry().root == tmp_path / "env"
    assert Registry(tmp_path / "arg").root == tmp_path / "arg"


# --------------------------------------------------------------------------- publish, list, show


def test_publish_writes_checksummed_metadata(published: Registry, tmp_path: Path) -> None:
    path = published.resolve(HANDLE)
    assert path == published.root / "me" / "tiny-bit" / "feature-vector" / "1"
    meta = published.show(HANDLE)
    files = meta["checksums"]["files"]
    assert set(files) == {"saved_model.pb", "variables/variables.index",
                          "variables/variables.data-00000-of-00001", "assets/labels.txt"}
    data = (tmp_path / "export" / "variables" / "variables.data-00000-of-00001").read_bytes()
    assert files["variables/variables.data-00000-of-00001"] == {"sha256": hashlib.sha256(data).hexdigest(),
                                                                "size": len(data)}
    assert len(meta["checksums"]["overall"]) == 64
    for key in ("architecture", "upstream", "classes", "input", "parameters", "created", "published",
                "bit_keras_version"):
        assert meta[key] is not None, key
    assert meta["handle"] == HANDLE and meta["parameters"] == 123
    assert published.verify(HANDLE) == []


def test_list_sorts_versions_numerically_and_skips_temp_dirs(published: Registry, tmp_path: Path) -> None:
    published.publish(fake_export(tmp_path / "e10"), "me/tiny-bit/feature-vector/10")
    (published.root / ".publish-leftover" / "x" / "y").mkdir(parents=True)
    handles = [m["handle"] for m in published.list()]
    assert handles == ["me/tiny-bit/feature-vector/1", "me/tiny-bit/feature-vector/2",
                       "me/tiny-bit/feature-vector/10", "other/x/classifier/10"]
    first = published.list()[0]
    assert first["kind"] == "classifier" and first["arch"] == "R14x0.25" and first["num_classes"] == 2
    assert published.versions("me/tiny-bit/feature-vector") == [1, 2, 10]


def test_version_conflict_names_handle_and_next_version(published: Registry, tmp_path: Path) -> None:
    before = published.show(HANDLE)["checksums"]
    with pytest.raises(VersionExistsError) as err:
        published.publish(fake_export(tmp_path / "again", b"9"), HANDLE)
    assert HANDLE in str(err.value) and "me/tiny-bit/feature-vector/3" in str(err.value)
    assert isinstance(err.value, FileExistsError)
    assert published.show(HANDLE)["checksums"] == before  # untouched


def test_publish_refuses_non_savedmodel(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="not a SavedModel directory"):
        registry.publish(tmp_path / "empty", HANDLE)


def test_interrupted_publish_leaves_nothing(registry: Registry, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    registry.publish(fake_export(tmp_path / "other"), "other/x/y/1")
    tree_before = visible_tree(registry.root)
    real_copy = sys_modules_registry()._copy_file
    calls = []

    def copy_then_die(src: Path, dst: Path):
        calls.append(src)
        if len(calls) > 1:
            raise KeyboardInterrupt("simulated interruption")
        return real_copy(src, dst)

    monkeypatch.setattr(sys_modules_registry(), "_copy_file", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        registry.publish(fake_export(tmp_path / "export"), HANDLE)
    assert len(calls) == 2
    assert not registry.path_of(HANDLE).exists()
    assert not (registry.root / "me").exists()  # parents created for it are gone too
    assert visible_tree(registry.root) == tree_before  # in particular no .publish-* temp dir
    assert [m["handle"] for m in registry.list()] == ["other/x/y/1"]
    with pytest.raises(HandleNotFoundError):
        registry.resolve(HANDLE)

    monkeypatch.setattr(sys_modules_registry(), "_copy_file", real_copy)
    registry.publish(tmp_path / "export", HANDLE)  # the same version can now be published
    assert registry.verify(HANDLE) == []


def sys_modules_registry():
    import sys

    return sys.modules["hub_export.registry"]


# --------------------------------------------------------------------------- verify and remove


def test_verify_catches_modified_missing_and_extra_files(published: Registry) -> None:
    path = published.resolve(HANDLE)
    data = path / "variables" / "variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 1
    data.write_bytes(bytes(raw))
    problems = published.verify(HANDLE)
    assert len(problems) == 1 and problems[0].startswith("modified file variables/variables.data-00000-of-00001")

    (path / "assets" / "labels.txt").unlink()
    (path / "extra.bin").write_bytes(b"x")
    problems = published.verify(HANDLE)
    assert "missing file assets/labels.txt" in problems
    assert any(p.startswith("unexpected file extra.bin") for p in problems)
    assert published.verify("me/tiny-bit/feature-vector/2") == []  # the others are intact


def test_verify_catches_edited_metadata(published: Registry) -> None:
    path = published.resolve(HANDLE)
    meta = json.loads((path / "metadata.json").read_text())
    meta["checksums"]["files"]["saved_model.pb"]["sha256"] = "0" * 64
    (path / "metadata.json").write_text(json.dumps(meta))
    problems = published.verify(HANDLE)
    assert any("overall checksum" in p for p in problems)
    assert any(p.startswith("modified file saved_model.pb") for p in problems)


def test_remove(published: Registry) -> None:
    published.remove("other/x/classifier/10")
    assert not (published.root / "other").exists()
    assert [m["handle"] for m in published.list()] == [HANDLE, "me/tiny-bit/feature-vector/2"]
    with pytest.raises(HandleNotFoundError, match="no model published as 'other/x/classifier/10'"):
        published.remove("other/x/classifier/10")
    with pytest.raises(HandleNotFoundError, match="Published versions: 1, 2"):
        published.resolve("me/tiny-bit/feature-vector/7")


# --------------------------------------------------------------------------- the HTTP server


@pytest.fixture
def server(published: Registry):
    srv = serve(published.root)
    yield srv
    srv.shutdown()


def raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_json_listing_and_index(server, published: Registry) -> None:
    for path in ("/models.json", "/?format=json"):
        status, headers, body = get(server.port, path)
        assert status == 200 and headers["Content-Type"] == "application/json"
        models = json.loads(body)["models"]
        assert [m["handle"] for m in models] == [m["handle"] for m in published.list()]
        assert models[0]["url"] == f"http://127.0.0.1:{server.port}/{HANDLE}"
        assert "path" not in models[0]  # no server file-system paths leak
    status, headers, body = get(server.port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert page.startswith("<!doctype html>") and f'href="/{HANDLE}"' in page and "other/x/classifier/10" in page
    status, _, body = get(server.port, f"/{HANDLE}")
    assert status == 200 and json.loads(body)["checksums"] == published.show(HANDLE)["checksums"]


def test_compressed_archive_has_files_at_root(server, published: Registry) -> None:
    status, headers, body = get(server.port, f"/{HANDLE}?tf-hub-format=compressed")
    assert status == 200 and int(headers["Content-Length"]) == len(body)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert all(m.isfile() or m.isdir() for m in tar.getmembers())
        pb = tar.extractfile("saved_model.pb").read()
    assert names == ["assets/labels.txt", "metadata.json", "saved_model.pb", "variables/variables.data-00000-of-00001",
                     "variables/variables.index"]
    assert pb == (published.resolve(HANDLE) / "saved_model.pb").read_bytes()
    assert gzip.decompress(body)  # a gzip stream
    status, headers, body = get(server.port, f"/{HANDLE}?tf-hub-format=compressed", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_unknown_handles_are_404(server) -> None:
    for path in ("/me/tiny-bit/feature-vector/3?tf-hub-format=compressed", "/nope/a/b/1", "/me/tiny-bit",
                 "/favicon.ico"):
        assert get(server.port, path)[0] == 404, path


def test_only_get_and_head(server) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        status, headers, _ = get(server.port, f"/{HANDLE}", method=method)
        assert status == 405, method
        assert headers["Allow"] == "GET, HEAD"
    assert server.registry.verify(HANDLE) == []


def test_path_traversal_is_refused(server, published: Registry, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    fake_export(outside / "model")
    (outside / "secret.txt").write_text("TOP SECRET")
    # A symlink inside the root that points outside, shaped like a valid handle.
    (published.root / "evil" / "x" / "y").mkdir(parents=True)
    os.symlink(outside / "model", published.root / "evil" / "x" / "y" / "1")
    # A version directory holding a file symlink that points outside.
    os.symlink(outside / "secret.txt", published.resolve(HANDLE) / "assets" / "leak.txt")

    attempts = [
        "/../../../../etc/passwd",
        "/me/tiny-bit/feature-vector/1/../../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/me/%2e%2e/%2e%2e/%2e%2e/1?tf-hub-format=compressed",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        f"/{tmp_path}/outside/model?tf-hub-format=compressed",
        "/..%5C..%5Cetc%5Cpasswd",
        "/me\\..\\..\\etc/passwd",
        "/evil/x/y/1?tf-hub-format=compressed",
        "/evil/x/y/1",
        f"/{HANDLE}?tf-hub-format=compressed",  # contains the leaking symlink
    ]
    for path in attempts:
        status, body = raw_request(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert status in (403, 404), (path, status)
        assert b"TOP SECRET" not in body and b"root:" not in body
    conn_status, _, _ = get(server.port, "/%2e%2e/%2e%2e/etc/passwd")
    assert conn_status in (403, 404)
    # Absolute-form request target (proxy style).
    status, _ = raw_request(server.port, b"GET http://127.0.0.1/../../etc/passwd HTTP/1.1\r\nHost: x\r\n"
                                         b"Connection: close\r\n\r\n")
    assert status in (403, 404)
    assert "evil/x/y/1" not in [m["handle"] for m in published.list()]
    assert any("outside the registry root" in p for p in published.verify(HANDLE))
    # The other models are still served.
    assert get(server.port, "/me/tiny-bit/feature-vector/2?tf-hub-format=compressed")[0] == 200


def test_concurrent_clients(server) -> None:
    # A stalled client (half a request line, never finished) must not block the others.
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.sendall(b"GET /me/tiny")
    results: list[bytes] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            url = f"http://127.0.0.1:{server.port}/{HANDLE}?tf-hub-format=compressed"
            with urllib.request.urlopen(url, timeout=20) as resp:
                results.append(resp.read())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stalled.close()
    assert not errors and len(results) == 8 and len(set(results)) == 1


def test_urllib_404_message(server) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/me/tiny-bit/feature-vector/9?tf-hub-format=compressed")
    assert err.value.code == 404
    assert b"Published versions: 1, 2" in err.value.read()


# --------------------------------------------------------------------------- the CLI


def cli(argv: list[str]) -> int:
    from bit_keras.cli import main

    return main(argv)


def test_cli_registry_commands(published: Registry, capsys: pytest.CaptureFixture) -> None:
    root = str(published.root)
    assert cli(["registry", "list", "--registry", root]) == 0
    out = capsys.readouterr().out
    assert HANDLE in out and "other/x/classifier/10" in out
    assert cli(["registry", "list", "--root", root, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert cli(["registry", "show", HANDLE, "--registry", root]) == 0
    assert json.loads(capsys.readouterr().out)["handle"] == HANDLE
    assert cli(["registry", "verify", "--registry", root]) == 0
    assert capsys.readouterr().out.count("OK") == 3
    (published.resolve(HANDLE) / "saved_model.pb").write_bytes(b"tampered")
    assert cli(["registry", "verify", HANDLE, "--registry", root]) == 1
    assert "modified file saved_model.pb" in capsys.readouterr().out
    assert cli(["registry", "remove", HANDLE, "--registry", root]) == 0
    assert cli(["registry", "show", HANDLE, "--registry", root]) == 1
    assert "no model published" in capsys.readouterr().err
    assert cli(["export", "BiT-S-R50x1", "--handle", "me/tiny-bit/feature-vector/2", "--registry", root]) == 1
    assert "already published" in capsys.readouterr().err  # refused before building anything


# What `from hub_export import X` must give: the function or class of the module that defines it.
EXPORTS = {
    "export": "hub_export.saved_model", "fold_weight_standardization": "hub_export.saved_model",
    "Registry": "hub_export.registry", "default_root": "hub_export.registry", "parse_handle": "hub_export.registry",
    "RegistryServer": "hub_export.server", "serve": "hub_export.server",
    "SavedModelLayer": "hub_export.load", "is_handle": "hub_export.load", "load_layer": "hub_export.load",
    "resolve": "hub_export.load",
    "ExportError": "bit_keras.errors", "HandleNotFoundError": "bit_keras.errors",
    "InvalidHandleError": "bit_keras.errors", "RegistryError": "bit_keras.errors",
    "VersionExistsError": "bit_keras.errors",
}


def test_lazy_exports_are_the_module_objects() -> None:
    """hub_export's names resolve on first use (PEP 562), each to the object its module defines (that importing
    hub_export and using the registry loads no TensorFlow is in tests/test_architecture.py)."""
    import importlib

    from bit_keras.errors import BitKerasError

    assert sorted(hub_export.__all__) == sorted(EXPORTS) and set(EXPORTS) <= set(dir(hub_export))
    for name, module in EXPORTS.items():
        value = getattr(hub_export, name)
        assert value is getattr(importlib.import_module(module), name), name
        assert value.__module__ == module, (name, value.__module__)
        assert not name.endswith("Error") or issubclass(value, BitKerasError), name
    with pytest.raises(AttributeError, match="module 'hub_export' has no attribute 'Exporter'"):
        hub_export.Exporter  # noqa: B018


def test_publish_refuses_symlinks(registry: Registry, tmp_path: Path) -> None:
    export_dir = fake_export(tmp_path / "export")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", export_dir / "assets" / "linked_dir")
    with pytest.raises(RegistryError, match="is a symlink"):
        registry.publish(export_dir, HANDLE)
    assert registry.list() == [] and visible_tree(registry.root) == []
