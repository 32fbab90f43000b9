"""The model zoo on every Keras 3 backend: tests/backend_checks.py run in one subprocess per backend, which runs
that backend's checks in turn; each check is its own test here.

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
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT = 900  # one backend's checks, all of them

CHECKS = {
    "tensorflow": ["parity", "gradients", "files"],
    "jax": ["parity", "gradients", "files", "tensorflow_only"],
    "torch": ["parity", "gradients", "files", "torch_program", "tensorflow_only"],
}
CASES = [(backend, check) for backend, checks in CHECKS.items() for check in checks]


def _torch_python() -> str | None:
    configured = os.environ.get("BIT_KERAS_TORCH_PYTHON")
    if configured:
        return configured
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return None


def torch_python() -> str:
    python = _torch_python()
    if python is None:
        pytest.fail(
            "the PyTorch backend tests need a Python with torch and keras: set BIT_KERAS_TORCH_PYTHON to one, e.g.\n"
            "  python3.11 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install -r .ci/torch-requirements.txt\n"
            "  export BIT_KERAS_TORCH_PYTHON=/tmp/torch-venv/bin/python   (.ci/run does this)"
        )
    return python


def jax_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JAX's persistent compilation cache for this pytest session's subprocesses (tests/test_transfer_jax.py
    shares it): a process reuses what an earlier one compiled (same program, same executable), every op
    included, instead of compiling it again; it starts empty every session."""
    cache = tmp_path_factory.getbasetemp() / "jax-compilation-cache"
    cache.mkdir(exist_ok=True)
    return cache


class BackendRuns:
    """One ``python -m tests.backend_checks <checks...>`` process per backend, for the checks of the tests this
    session selected. All start together at the first request (the backends' imports and compiles overlap on
    the machine's cores) and each check's output is its own section of its backend's output."""

    def __init__(self, checks: dict[str, list[str]], cache: Path) -> None:
        self.checks, self.cache = checks, cache
        self.procs: dict[str, subprocess.Popen] = {}
        self.outputs: dict[str, str] = {}

    def _start(self) -> None:
        for backend, checks in self.checks.items():
            python = _torch_python() if backend == "torch" else sys.executable
            if python is None:
                continue  # its tests fail with torch_python()'s message
            env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
                   "JAX_COMPILATION_CACHE_DIR": str(self.cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
            if backend == "jax":
                env["JAX_ENABLE_X64"] = "1"  # the float64 reference; float32 models stay float32
            self.procs[backend] = subprocess.Popen(
                [python, "-m", "tests.backend_checks", *checks], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)

    def output(self, backend: str, check: str) -> str:
        """What ``check`` printed on ``backend``; fails unless it passed."""
        if not self.procs and not self.outputs:
            self._start()
        if backend == "torch":
            torch_python()
        if backend not in self.outputs:
            proc = self.procs[backend]
            try:
                self.outputs[backend], _ = proc.communicate(timeout=WORKER_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.outputs[backend] = proc.communicate()[0] + f"\n(killed after {WORKER_TIMEOUT} s)"
        out = self.outputs[backend]
        header = f"== {check} {backend}\n"
        assert header in out, f"{check} never started on {backend}:\n{out[-4000:]}"
        section = out.split(header, 1)[1].split("\n== ", 1)[0]
        assert f"ok {check} {backend}" in section, section[-4000:] if section.strip() else out[-4000:]
        code = self.procs[backend].returncode  # non-zero: a check failed (its test says which), or the process
        assert code == 0 or "\nFAILED " in out, f"the {backend} checks' process exited {code}:\n{out[-4000:]}"
        return section


@pytest.fixture(scope="module")
def backend_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendRuns]:
    selected = {(item.callspec.params["backend"], item.callspec.params["check"]) for item in request.session.items
                if item.module is sys.modules[__name__] and item.originalname == "test_backend"}
    checks = {backend: [c for c in checks if (backend, c) in selected] for backend, checks in CHECKS.items()}
    runs = BackendRuns({b: c for b, c in checks.items() if c}, jax_cache(tmp_path_factory))
    yield runs
    for proc in runs.procs.values():  # a test that failed early leaves no process behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "check"), CASES, ids=[f"{b}-{c}" for b, c in CASES])
def test_backend(backend: str, check: str, backend_runs: BackendRuns) -> None:
    print(backend_runs.output(backend, check))


def test_every_check_runs_somewhere() -> None:
    from tests import backend_checks

    assert {c for checks in CHECKS.values() for c in checks} == set(backend_checks.CHECKS)
