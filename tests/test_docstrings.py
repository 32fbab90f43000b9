"""The runnable examples in the public docstrings run and print what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "bit_keras",
    "bit_keras.layers",
    "bit_keras.resnet",
    "bit_keras.zoo",
    "bit_keras.weights",
    "bit_keras.models",
    "bit_keras.labels",
    "bit_keras.hyperrule",
    "bit_keras.upstream",
    "bit_keras.distribute",
    "bit_keras.demo",
    "bit_keras.plots",
    "bit_keras.pretrain",
    "bit_keras.transfer",
    "bit_keras.download",
    "bit_keras.atomic",
    "bit_keras.cli",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch, tmp_path):
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
