"""The tutorial notebooks in ``examples/`` run end to end in smoke mode (offline, tiny, seconds each).

Each notebook is executed in a fresh ``python3`` kernel started from the repository root with
``BIT_KERAS_SMOKE=1`` in its environment (the ``e2e`` tier); a failing cell raises ``nbclient``'s
``CellExecutionError``, whose message shows the cell and its traceback, and what the cells print must hold. The
committed files must also be what ``examples/_build_notebooks.py`` writes (same JSON, outputs cleared).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
EXPECTED = ["01_load_and_classify.ipynb", "02_transfer_with_hyperrule.ipynb", "03_pretrain_export_serve.ipynb"]


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


def test_notebooks_are_generated_and_cleared():
    spec = importlib.util.spec_from_file_location("_build_notebooks", EXAMPLES / "_build_notebooks.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert sorted(builder.NOTEBOOKS) == EXPECTED
    for path in NOTEBOOKS:
        assert json.loads(path.read_text(encoding="utf-8")) == json.loads(builder.build(path.name)), (
            f"{path.name} is out of date: run python examples/_build_notebooks.py")
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not cleared"
        first_code = next(c for c in nb.cells if c.cell_type == "code").source
        assert '"google.colab" in sys.modules' in first_code and "%pip install" in first_code
        assert any('os.environ.get("BIT_KERAS_SMOKE") == "1"' in c.source for c in nb.cells)


# What the smoke runs print, and what must be true of it: a cell that prints a wrong number does not fail.
# Each regular expression must match the notebook's printed output; its group, when it has one, is a number
# that must be at most the bound.
PRINTED = {
    "01_load_and_classify": [
        (r"\(0, 255\) model on pixels +vs \(0, 1\) model: max \|logit diff\| = (\S+)", 1e-4),
        (r"\(-1, 1\) model on 2x - 1 +vs \(0, 1\) model: max \|logit diff\| = (\S+)", 1e-4),
        (r"hub\.KerasLayer feature \(2, 512\) \| max \|diff\| to the Keras 3 model: (\S+)", 1e-4),
        (r"tf-keras fine-tuning: 45 trainable weights", None),
    ],
    "02_transfer_with_hyperrule": [
        (r"validation after 4 steps: top-1 (\S+), top-5", 1.0),
    ],
    "03_pretrain_export_serve": [
        (r"checksum problems: \[\]", None),
        (r"feature \(25, 512\) \| URL vs handle: max \|diff\| (\S+)", 1e-6),
        (r"from http://127\.0\.0\.1:\d+/me/bit-tiny-digits/feature_vector/1, 5 per class: test top-1", None),
        (r"server stopped", None),
    ],
}


def test_every_notebook_has_its_printed_checks():
    assert sorted(PRINTED) == [p.stem for p in NOTEBOOKS]


@pytest.mark.e2e
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIT_KERAS_SMOKE", "1")  # the kernel inherits this process's environment
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    for var in ("BIT_KERAS_WEIGHTS_URL", "BIT_KERAS_HOME", "BIT_KERAS_REGISTRY", "TFHUB_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError (with the cell's source and traceback) on the first failing cell
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                      if o.get("output_type") == "stream" and o.get("name") == "stdout")
    for pattern, bound in PRINTED[path.stem]:
        match = re.search(pattern, printed)
        assert match, f"{path.name} did not print {pattern!r}:\n{printed[-3000:]}"
        if bound is not None:
            assert 0 <= float(match.group(1)) <= bound, (path.name, match.group(0))
