"""The runnable examples in the public docstrings run and print what they show."""

import doctest
import importlib
import pkgutil

import pytest

import bit_keras
import hub_export

# Every module of the package and of hub_export. The command modules are argparse wiring (their behaviour is
# tested through bit_keras.cli) and the sub-package __init__ files only describe their package; every other
# module must show an example.
SUBPACKAGES = ("bit_keras.models", "bit_keras.data", "bit_keras.train", "bit_keras.recipes", "bit_keras.evals")
MODULES = sorted(m.name for pkg in (bit_keras, hub_export)
                 for m in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}.")
                 if not (m.name.startswith("bit_keras.cli.") or m.name in SUBPACKAGES))
MODULES[:0] = ["bit_keras", "hub_export"]
# Modules whose examples export SavedModels or train (5 to 40 s each): the slow tier.
SLOW = {"hub_export", "hub_export.load", "hub_export.registry", "hub_export.saved_model", "bit_keras.recipes.pretrain",
        "bit_keras.recipes.transfer"}


def test_the_slow_modules_exist():
    assert SLOW <= set(MODULES), SLOW - set(MODULES)


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in MODULES])
def test_docstring_examples(name, monkeypatch, tmp_path):
    monkeypatch.setenv("BIT_KERAS_HOME", str(tmp_path))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
