"""The model zoo on every Keras 3 backend: tests/backend_checks.py run in a subprocess per backend.

TensorFlow and JAX run in this interpreter's environment (``jax[cpu]`` is in the ``test`` extra). PyTorch runs
in the interpreter named by ``BIT_KERAS_TORCH_PYTHON``, or in this one when it has torch: PyPI's Linux torch
for Python 3.12+ is a CUDA build of several GB, so ``.ci/run`` makes a small separate venv with the CPU build
(``.ci/torch-requirements.txt``) and points ``BIT_KERAS_TORCH_PYTHON`` at it. Without either, the PyTorch
tests fail and say how to make one.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECKS = {
    "tensorflow": ["parity", "gradients", "files"],
    "jax": ["parity", "gradients", "files", "tensorflow_only"],
    "torch": ["parity", "gradients", "files", "torch_program", "tensorflow_only"],
}
CASES = [(backend, check) for backend, checks in CHECKS.items() for check in checks]


def torch_python() -> str:
    configured = os.environ.get("BIT_KERAS_TORCH_PYTHON")
    if configured:
        return configured
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    pytest.fail(
        "the PyTorch backend tests need a Python with torch and keras: set BIT_KERAS_TORCH_PYTHON to one, e.g.\n"
        "  python3.11 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install -r .ci/torch-requirements.txt\n"
        "  export BIT_KERAS_TORCH_PYTHON=/tmp/torch-venv/bin/python   (.ci/run does this)"
    )


def run_check(backend: str, check: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend == "jax":
        env["JAX_ENABLE_X64"] = "1"  # the float64 reference; float32 models stay float32
    python = torch_python() if backend == "torch" else sys.executable
    proc = subprocess.run([python, "-m", "tests.backend_checks", check], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"ok {check} {backend}" in proc.stdout, out[-4000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "check"), CASES, ids=[f"{b}-{c}" for b, c in CASES])
def test_backend(backend: str, check: str) -> None:
    print(run_check(backend, check))


def test_every_check_runs_somewhere() -> None:
    from tests import backend_checks

    assert {c for checks in CHECKS.values() for c in checks} == set(backend_checks.CHECKS)
