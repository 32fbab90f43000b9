"""The demo's own parts: its data split, the command line, the table and the plots.

The demo's whole run (pre-train, export, publish, transfer vs scratch) is the end-to-end story in
tests/test_story.py.
"""

import json

import numpy as np
import pytest

import bit_keras.recipes.demo
from bit_keras.cli import main as cli_main
from bit_keras.errors import MissingFileError
from bit_keras.recipes.demo import format_table
from bit_keras.data.digits import load_digits_split
from bit_keras.plots import plot_run


def test_digits_split_is_disjoint_and_stratified():
    data = load_digits_split(size=16)
    assert data.num_upstream_classes == 20 and data.num_downstream_classes == 5
    assert data.upstream_images.shape[1:] == (16, 16, 3) and data.upstream_images.dtype == np.uint8
    # Rotated copies: class c + 5 is class c rotated by 90 degrees.
    n = len(data.upstream_labels) // 4
    np.testing.assert_array_equal(data.upstream_labels[n:2 * n], data.upstream_labels[:n] + 5)
    pool, test = data.downstream_pool_labels, data.downstream_test_labels
    assert abs(len(pool) - len(test)) <= 5
    assert len(np.bincount(test)) == 5 and min(np.bincount(test)) >= 80
    assert len(np.bincount(pool)) == 5 and min(np.bincount(pool)) >= 80
    with pytest.raises(ValueError, match="disjoint"):
        load_digits_split((0, 1), (1, 2))


def test_cli_demo_runs_the_demo(tmp_path, monkeypatch):
    """`bit-keras demo [--quick]` runs run_demo (--quick: the QUICK budget, a smoke run)."""
    calls = []
    monkeypatch.setattr(bit_keras.recipes.demo, "run_demo", lambda *a, **k: calls.append((a, k)) or {})
    assert cli_main(["demo", "--quick", "--output", str(tmp_path), "--no-progress"]) == 0
    assert cli_main(["demo"]) == 0
    assert calls == [((str(tmp_path),), {"quick": True, "progress": False}),
                     (("runs/demo",), {"quick": False, "progress": True})]


def test_format_table():
    table = format_table({"examples_per_class": [1, 5], "transfer": [0.7, 0.9], "scratch": [0.5, 0.8],
                          "transfer_std": [0.05, 0.01], "scratch_std": [0.1, 0.02], "seeds": [0, 1, 2]})
    assert "| 5 | 0.900 ± 0.010 | 0.800 ± 0.020 |" in table


def test_plot_run_from_a_history(tmp_path):
    history = {"step": [1, 2, 3], "loss": [2.0, 1.5, 1.0], "lr": [0.001, 0.002, 0.003], "images_per_s": [1, 1, 1],
               "val_step": [3], "val_top1": [0.5], "val_top5": [1.0], "val_loss": [1.0]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    assert cli_main(["plot", str(tmp_path)]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 5000
    with pytest.raises(MissingFileError, match="history.json does not exist"):
        plot_run(tmp_path / "nope")
