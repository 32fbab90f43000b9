"""The architecture holds: one direction of imports, no cycles, light commands without TensorFlow, data tables
that the README shows as they are."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bit_keras", "hub_export")

E, A, P, B = "bit_keras.errors", "bit_keras.atomic", "bit_keras.plots", "bit_keras.backend"
MODELS, DATA, TRAIN = "bit_keras.models", "bit_keras.data", "bit_keras.train"
RECIPES, CLI, HUB, FACADE = "bit_keras.recipes", "bit_keras.cli", "hub_export", "bit_keras"
EVALS = "bit_keras.evals"
# Who may import whom (the README's "Architecture" section draws this table).
ALLOWED: dict[str, set[str]] = {
    E: set(),
    A: {E},
    B: {E},
    P: {E, A},
    MODELS: {E, A, B},
    DATA: {E, A, B},
    TRAIN: {E, A, B, MODELS},
    HUB: {E, A, B, MODELS, FACADE},  # the facade for __version__ only
    # evals sits at the recipes' level; the demo (a recipe) runs the few-shot probe, so evals imports no recipe.
    EVALS: {E, A, B, P, MODELS, DATA, TRAIN},
    RECIPES: {E, A, B, P, MODELS, DATA, TRAIN, HUB, EVALS},
    CLI: {E, A, B, P, MODELS, DATA, TRAIN, HUB, RECIPES, EVALS, FACADE},
    FACADE: {E},  # everything else is reached lazily (PEP 562), by name, not by import
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                     for alias in node.names]
        else:
            continue
        out |= {name for name in names if name in MODULES}
    return out


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _unit(module: str) -> str:
    parts = module.split(".")
    if parts[0] == HUB:
        return HUB
    if len(parts) > 1 and f"bit_keras.{parts[1]}" in (MODELS, DATA, TRAIN, RECIPES, EVALS, CLI):
        return f"bit_keras.{parts[1]}"
    return module


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_is_read_inside_functions_too():
    # bit_keras.cli imports its command modules by name, and cli.zoo imports presets inside a function.
    assert "bit_keras.models.presets" in GRAPH["bit_keras.cli.zoo"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_cycle():
    assert _cycles(GRAPH) == []


def test_no_package_cycle_and_imports_go_down_only():
    units: dict[str, set[str]] = {}
    upward = []
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = _unit(module), _unit(target)
            if a == b:
                continue
            units.setdefault(a, set()).add(b)
            if b not in ALLOWED[a]:
                upward.append(f"{module} -> {target}")
    assert upward == []
    assert _cycles(units) == []
    assert set(units) <= set(ALLOWED)


def test_no_benchmark_code_in_the_package():
    bench = [m for m in MODULES if "bench" in m and m != "bit_keras.cli.bench"]
    assert bench == []
    # The bench command only finds a checkout's benchmarks/ and hands over its arguments.
    assert not any(name.startswith("benchmarks") for name in GRAPH["bit_keras.cli.bench"])
    for path in MODULES.values():
        assert "import timm" not in path.read_text() and "import torch" not in path.read_text(), path


def _run(code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


NO_TF = "assert not {'tensorflow', 'keras', 'tf_keras'} & set(sys.modules), sorted(m for m in sys.modules if 'tensorflow' in m)[:5]"


def test_importing_the_packages_loads_no_tensorflow():
    _run(f"import sys, bit_keras, hub_export; bit_keras.list_models(); bit_keras.get_model_info('BiT-M-R50x1'); "
         f"bit_keras.ARCHS['R50x1'].param_count(1000); hub_export.Registry; {NO_TF}")


@pytest.mark.parametrize("argv", [["list"], ["list", "BiT-M-*", "--markdown"], ["info", "BiT-M-R152x4"],
                                  ["registry", "list"], ["registry", "verify"]])
def test_light_commands_load_no_tensorflow(argv, tmp_path):
    out = _run(f"import sys; from bit_keras.cli import main; code = main({argv!r}); assert code == 0, code; {NO_TF}",
               env={"BIT_KERAS_REGISTRY": str(tmp_path), "BIT_KERAS_HOME": str(tmp_path)})
    assert out.strip()


def test_download_and_registry_show_load_no_tensorflow(tmp_path, loopback_server):
    import numpy as np

    from bit_keras.models.npz import write_npz

    body = tmp_path / "w.npz"
    write_npz({"resnet/group_norm/gamma": np.ones(4, "float32")}, body)
    loopback_server.files["/bit/BiT-S-R50x1.npz"] = body.read_bytes()
    env = {"BIT_KERAS_HOME": str(tmp_path / "home"), "BIT_KERAS_WEIGHTS_URL": loopback_server.url("/bit/"),
           "BIT_KERAS_REGISTRY": str(tmp_path / "registry")}
    out = _run(f"import sys; from bit_keras.cli import main; assert main(['download', 'BiT-S-R50x1']) == 0; "
               f"assert main(['registry', 'show', 'me/x/fv/1']) == 1; {NO_TF}", env=env)
    assert out.strip().endswith("BiT-S-R50x1.npz")


def test_registry_server_loads_no_tensorflow(tmp_path):
    _run(f"import sys; from bit_keras.cli import hub; from hub_export.server import RegistryServer; "
         f"s = RegistryServer({str(tmp_path)!r}, '127.0.0.1', 0); s.shutdown(); {NO_TF}")


def test_readme_model_table_is_the_presets_table():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- model-table: bit-keras list --markdown -->\n", "\n<!-- /model-table -->"
    assert start in readme and end in readme
    shown = readme.split(start, 1)[1].split(end, 1)[0]
    table = _run("from bit_keras.cli import main; main(['list', '--markdown'])")  # a fresh process: built-ins only
    assert shown.strip() == table.strip()
