"""The command line's one error handler: every command turns bit-keras errors into one line and exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bit_keras import cli
from bit_keras.errors import UnknownModelError

ROOT = Path(__file__).resolve().parents[1]


def _fails_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"bit-keras {argv[0]}: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def test_unknown_model_names_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails_with_one_line(capsys, ["info", "BiT-S-R50x9"], "'BiT-S-R50x9'", "BiT-S-R50x1")
    assert "Closest names" in line


def test_download_of_unpublished_weights(capsys: pytest.CaptureFixture[str]) -> None:
    _fails_with_one_line(capsys, ["download", "BiT-L-R50x1"], "JFT-300M", "BiT-M-R50x1")


def test_download_http_error(capsys: pytest.CaptureFixture[str], loopback_server, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIT_KERAS_WEIGHTS_URL", loopback_server.url("/bit/"))
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path))
    _fails_with_one_line(capsys, ["download", "BiT-S-R50x1"], "HTTP 404", "BiT-S-R50x1.npz")
    assert not list(tmp_path.rglob("*.npz"))


def test_multi_line_messages_become_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # A weight file of another architecture: the loader's message lists problems on several lines.
    import bit_keras

    path = bit_keras.save_npz(bit_keras.resnet_v2((1, 1, 1, 1), 0.25, groups=8), tmp_path / "tiny.npz")
    _fails_with_one_line(capsys, ["export", "BiT-S-R50x1", "--weights", str(path), "--handle", "me/x/fv/1",
                                  "--registry", str(tmp_path / "reg")], "missing keys", "create the model")


@pytest.mark.parametrize("argv, needle", [
    (["transfer", "--model", "BiT-tiny", "--weights", "none", "--dataset", "./no/such/folder"], "does not exist"),
    (["pretrain", "--model", "BiT-tiny", "--preset", "tiny", "--dataset", "./no/such/folder"], "does not exist"),
    (["evaluate", "/no/such/run", "--dataset", "./no/such/folder"], "/no/such/run"),
    (["plot", "/no/such/run"], "history.json"),
    (["export", "BiT-S-R50x9", "--handle", "me/x/fv/1"], "Closest names"),
])
def test_commands_report_errors_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    _fails_with_one_line(capsys, argv, needle)


def test_registry_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    reg = ["--registry", str(tmp_path)]
    _fails_with_one_line(capsys, ["registry", "show", "me/x/fv/1", *reg], "me/x/fv/1")
    _fails_with_one_line(capsys, ["registry", "remove", "not-a-handle", *reg], "publisher/name/variant/version")


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownModelError):
        cli.main(["info", "BiT-S-R50x9", "--debug"])
    with pytest.raises(UnknownModelError):
        cli.main(["--debug", "info", "BiT-S-R50x9"])


def test_unexpected_errors_are_one_line_too(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import bit_keras.models.presets

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(bit_keras.models.presets, "list_models", broken)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bit-keras list: unexpected KeyError: 'boom'") and "--debug" in err, err
    assert "\n" not in err


def test_one_line() -> None:
    assert cli.one_line("a:\n  b\n  c\n") == "a: b; c"
    assert cli.one_line("") == ""


def test_entry_point_prints_one_line_and_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "bit_keras.cli", "info", "BiT-M-R50x9"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("bit-keras info: error: Unknown BiT model 'BiT-M-R50x9'")
    debug = subprocess.run([sys.executable, "-m", "bit_keras.cli", "--debug", "info", "BiT-M-R50x9"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UnknownModelError" in debug.stderr
