"""Interleaved rounds over warm worker processes: the protocol, the round-robin scheduler and the ratio maths.

Standard library only, so that every worker can use it: the TensorFlow rows (``harness.py --worker``), timm's
peer (``timm_peer.py``, run by a PyTorch-only interpreter) and the backend comparison (``benchmarks/backends.py``).

A *worker* builds its case once, warms it up and says ``READY``; then the coordinator runs *rounds*: in each
round every worker in turn times one repeat of its step (A B C A B C ...) while the others block on reading
their stdin (using no CPU). A slow moment of a shared machine thus lands on one round of every case instead of
on one case, and a ratio between two cases is computed per round (the two repeats ran seconds apart), then
summarised as the median of the per-round ratios with its spread (min-max).

The line protocol (one JSON object per line; anything else a worker prints is ignored):

* worker -> coordinator: ``READY {...}`` once built and warm (e.g. ``{"first_call_s": 3.2}``), or
  ``FAILED {"error": ...}``; ``TIME {...}`` after each request (e.g. ``{"images_per_s": 7.1,
  "cpu_ms_per_image": 270.0}``); ``RESULT {...}`` after ``finish`` (peak memory, checks, profile);
* coordinator -> worker: ``{"op": "time", "row": ...}`` (``row`` names one of several steps a worker may
  serve; ``null`` for its only one) and ``{"op": "finish"}``; end of input ends the worker.

Example (the scheduler and the maths, with stand-in workers):
    >>> class Fake:
    ...     def __init__(self, name, rate): self.name, self.rate, self.calls = name, rate, 0
    ...     def measure(self, row=None):
    ...         self.calls += 1
    ...         return {"images_per_s": self.rate * (2 if self.calls == 2 else 1)}  # a fast 2nd round for all
    >>> a, b = Fake("a", 10.0), Fake("b", 5.0)
    >>> rounds = run_rounds([a, b], 3)
    >>> [r["images_per_s"] for r in rounds["a"]], [r["images_per_s"] for r in rounds["b"]]
    ([10.0, 20.0, 10.0], [5.0, 10.0, 5.0])
    >>> ratio_stats([r["images_per_s"] for r in rounds["a"]], [r["images_per_s"] for r in rounds["b"]])
    {'median': 2.0, 'min': 2.0, 'max': 2.0, 'rounds': 3}
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

READY, FAILED, TIME, RESULT = "READY ", "FAILED ", "TIME ", "RESULT "


# --------------------------------------------------------------------------- ratio maths


def ratio_stats(numerator: Sequence[float | None], denominator: Sequence[float | None]) -> dict[str, Any] | None:
    """Median and min-max of the per-round ratios ``numerator[i] / denominator[i]`` (rates measured in the
    same round), over the rounds where both were measured; None when there is none.

    Example:
        >>> ratio_stats([6.0, 5.0, 6.6], [5.0, 5.0, 6.0])
        {'median': 1.1, 'min': 1.0, 'max': 1.2, 'rounds': 3}
        >>> ratio_stats([6.0, None], [5.0, 4.0])["rounds"], ratio_stats([1.0], [None]) is None
        (1, True)
    """
    per_round = [a / b for a, b in zip(numerator, denominator) if a and b]
    if not per_round:
        return None
    return {"median": round(statistics.median(per_round), 4), "min": round(min(per_round), 4),
            "max": round(max(per_round), 4), "rounds": len(per_round)}


def format_ratio(stats: Mapping[str, Any] | None) -> str:
    """``"1.10x (1.00-1.20, 3 rounds)"``, or ``""``.

    Example:
        >>> format_ratio({'median': 1.1, 'min': 1.0, 'max': 1.2, 'rounds': 3})
        '1.10x (1.00-1.20, 3 rounds)'
        >>> format_ratio({'median': 0.5, 'min': 0.5, 'max': 0.5, 'rounds': 1})
        '0.50x (1 round)'
    """
    if not stats:
        return ""
    if stats["rounds"] == 1:
        return f"{stats['median']:.2f}x (1 round)"
    return f"{stats['median']:.2f}x ({stats['min']:.2f}-{stats['max']:.2f}, {stats['rounds']} rounds)"


# --------------------------------------------------------------------------- the scheduler


class Worker(Protocol):
    """What :func:`run_rounds` needs of a worker: a name and one timed repeat per call."""

    name: str

    def measure(self, row: str | None = None) -> dict[str, Any]: ...


def run_rounds(workers: Sequence[Worker], rounds: int, row: str | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, list[dict[str, Any] | None]]:
    """Run ``rounds`` rounds; in each, every worker times one repeat in turn (A B C A B C ...).

    Returns ``{worker name: [one result per round]}``; a worker whose ``measure`` raises gets ``None`` for that
    round and every later one (it is not asked again), and the others go on.

    Example:
        >>> class Broken:
        ...     name = "broken"
        ...     def measure(self, row=None): raise RuntimeError("worker stopped")
        >>> class Fine:
        ...     name = "fine"
        ...     def measure(self, row=None): return {"images_per_s": 1.0}
        >>> run_rounds([Broken(), Fine()], 2)
        {'broken': [None, None], 'fine': [{'images_per_s': 1.0}, {'images_per_s': 1.0}]}
    """
    results: dict[str, list[dict[str, Any] | None]] = {w.name: [] for w in workers}
    failed: set[str] = set()
    for r in range(rounds):
        for worker in workers:
            if worker.name in failed:
                results[worker.name].append(None)
                continue
            try:
                results[worker.name].append(worker.measure(row))
            except Exception as e:  # noqa: BLE001 - one failing worker does not stop the others
                failed.add(worker.name)
                results[worker.name].append(None)
                if log:
                    log(f"  {worker.name}: {type(e).__name__}: {e}")
        if log:
            log(f"  round {r + 1}/{rounds} done")
    return results


# --------------------------------------------------------------------------- the worker side


def serve(measure: Callable[[str | None], dict[str, Any]], finish: Callable[[], dict[str, Any]],
          ready: Mapping[str, Any], stdin: Iterable[str] | None = None, out: Any = None) -> int:
    """A worker's loop: say ``READY``, then answer ``time`` requests with ``TIME`` and ``finish`` with
    ``RESULT``, until the end of input.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> serve(lambda row: {"images_per_s": 2.0}, lambda: {"peak_mem_mb": 1.0}, {"first_call_s": 0.5},
        ...       ['{"op": "time", "row": null}', '{"op": "finish"}'], out)
        0
        >>> print(out.getvalue().strip())
        READY {"first_call_s": 0.5}
        TIME {"images_per_s": 2.0}
        RESULT {"peak_mem_mb": 1.0}
    """
    out = out or sys.stdout
    stdin = sys.stdin if stdin is None else stdin

    def say(prefix: str, payload: Mapping[str, Any]) -> None:
        out.write(prefix + json.dumps(payload) + "\n")
        out.flush()

    say(READY, ready)
    for line in stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request["op"] == "time":
            say(TIME, measure(request.get("row")))
        elif request["op"] == "finish":
            say(RESULT, finish())
    return 0


def serve_or_fail(prepare: Callable[[], tuple[Callable[[str | None], dict[str, Any]], Callable[[], dict[str, Any]],
                                               Mapping[str, Any]]]) -> int:
    """Run ``prepare()`` (build and warm up: returns ``(measure, finish, ready)``) and :func:`serve`; when it
    raises, say ``FAILED {"error": ...}`` instead."""
    try:
        measure, finish, ready = prepare()
    except Exception as e:  # noqa: BLE001 - reported on the row
        import traceback

        traceback.print_exc()
        message = str(e).splitlines()[0][:300] if str(e) else ""
        print(FAILED + json.dumps({"error": f"{type(e).__name__}: {message}"}), flush=True)
        return 1
    return serve(measure, finish, ready)


# --------------------------------------------------------------------------- the coordinator side


class WorkerError(RuntimeError):
    """A worker failed to start, stopped, or did not answer in time."""


class SubprocessWorker:
    """A warm worker process speaking the line protocol.

    ``cmd`` starts it; :meth:`start` waits for ``READY`` (building and warming up are not timed here), then
    :meth:`measure` times one repeat and :meth:`finish` collects the end-of-run figures and ends the process.
    Its stderr goes to a temporary file whose tail names the reason when it fails.
    """

    def __init__(self, name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 1200.0):
        self.name, self.cmd, self.env, self.timeout = name, list(cmd), dict(env) if env is not None else None, timeout
        self.proc: subprocess.Popen | None = None
        self.ready: dict[str, Any] = {}
        self._lines: queue.Queue = queue.Queue()
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")

    def start(self) -> dict[str, Any]:
        """Start the process and wait for ``READY``; returns its payload (raises :class:`WorkerError`)."""
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        self.ready = self._expect(READY)
        return self.ready

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output

    def _expect(self, prefix: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise WorkerError(f"{self.name}: no answer within {self.timeout:.0f} s") from None
            if line is None:
                raise WorkerError(f"{self.name}: exited {self._returncode()}: {self.stderr_tail()}")
            if line.startswith(FAILED):
                raise WorkerError(json.loads(line[len(FAILED):]).get("error", "failed"))
            if line.startswith(prefix):
                return json.loads(line[len(prefix):])

    def _returncode(self) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def _send(self, request: Mapping[str, Any]) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise WorkerError(f"{self.name}: not started")
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise WorkerError(f"{self.name}: stopped ({e}): {self.stderr_tail()}") from None

    def measure(self, row: str | None = None) -> dict[str, Any]:
        """Time one repeat (the worker's ``TIME`` payload)."""
        self._send({"op": "time", "row": row})
        return self._expect(TIME)

    def finish(self) -> dict[str, Any]:
        """The worker's ``RESULT`` payload; then the process is ended."""
        try:
            self._send({"op": "finish"})
            return self._expect(RESULT)
        finally:
            self.close()

    def close(self) -> None:
        """End the process (closing its input ends the protocol loop)."""
        if self.proc is None:
            return
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr_tail(self, lines: int = 1) -> str:
        """The last non-empty lines of the worker's stderr (why it failed)."""
        self._stderr.seek(0)
        tail = [line for line in self._stderr.read().splitlines() if line.strip()][-lines:]
        return " / ".join(line[:300] for line in tail) or "no output"


class InProcessWorker:
    """The same interface for a case run in this process (``--isolation inprocess``): ``prepare()`` builds
    and warms up and returns ``(measure, finish, ready)``, as for :func:`serve_or_fail`.

    Example:
        >>> w = InProcessWorker("x", lambda: (lambda row: {"images_per_s": 3.0}, lambda: {"peak_mem_mb": 0.0}, {}))
        >>> w.start(), w.measure(), w.finish()
        ({}, {'images_per_s': 3.0}, {'peak_mem_mb': 0.0})
    """

    def __init__(self, name: str, prepare: Callable[[], tuple[Callable, Callable, Mapping[str, Any]]]):
        self.name, self._prepare = name, prepare
        self._measure: Callable | None = None
        self._finish: Callable | None = None
        self.ready: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        try:
            self._measure, self._finish, ready = self._prepare()
        except Exception as e:  # noqa: BLE001 - reported on the row
            message = str(e).splitlines()[0][:300] if str(e) else ""
            raise WorkerError(f"{type(e).__name__}: {message}") from e
        self.ready = dict(ready)
        return self.ready

    def measure(self, row: str | None = None) -> dict[str, Any]:
        assert self._measure is not None, "start() first"
        return self._measure(row)

    def finish(self) -> dict[str, Any]:
        assert self._finish is not None, "start() first"
        return self._finish()

    def close(self) -> None:
        self._measure = self._finish = None


def checkout_env(root: str | os.PathLike, **extra: str) -> dict[str, str]:
    """This environment with ``root`` (the checkout) first on ``PYTHONPATH`` and ``extra`` set.

    Example:
        >>> env = checkout_env("/repo", KERAS_BACKEND="jax")
        >>> env["PYTHONPATH"].split(os.pathsep)[0], env["KERAS_BACKEND"]
        ('/repo', 'jax')
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env
