"""The loop of the test worker processes (tests/backend_checks.py, tests/jax_worker.py): run named steps in turn.

Each step prints ``== <name> <backend>`` when it starts, then ``ok <name> <backend> (<seconds> s)`` when it
returned, or ``FAILED <name> <backend>`` and the traceback (on stdout, so the parent sees it in order) when it
raised; the loop goes on with the next step. The parent tests (tests/test_backends.py,
tests/test_transfer_jax.py) split the output on the ``== `` lines and look for ``ok``/``FAILED``, so this format
is their protocol. No Keras import here: what a step needs before or after it is the caller's.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Iterable


def run_steps(steps: Iterable[tuple[str, Callable[[], object]]], backend: str) -> int:
    """Run each ``(name, step)`` in turn; the process exit code: 1 if any step raised, else 0."""
    failed = []
    for name, step in steps:
        print(f"== {name} {backend}", flush=True)
        start = time.perf_counter()
        try:
            step()
        except Exception:
            failed.append(name)
            print(f"FAILED {name} {backend}", flush=True)
            traceback.print_exc(file=sys.stdout)
        else:
            print(f"ok {name} {backend} ({time.perf_counter() - start:.1f} s)", flush=True)
    return 1 if failed else 0
