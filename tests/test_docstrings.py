"""The runnable examples in the public docstrings run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import bit_keras

# Every module of the package; the bench modules run theirs in tests/test_bench.py. The command modules
# are argparse wiring (their behaviour is tested through bit_keras.cli), the rest must show an example.
MODULES = sorted(m.name for m in pkgutil.walk_packages(bit_keras.__path__, "bit_keras.")
                 if not m.name.startswith(("bit_keras.bench", "bit_keras.commands")))
MODULES.insert(0, "bit_keras")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch, tmp_path):
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
