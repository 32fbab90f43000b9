#!/usr/bin/env python
"""A/B a patch of ``bit_keras/layers.py`` against the current layers, on a whole BiT-R50x1, in one process.

The patch is applied to a temporary copy of ``layers.py``; its ``GroupNorm`` / ``StandardizedConv2D``
methods are swapped into the real classes while the model's ``tf.function`` is traced, so both variants
(and the ``keras.applications.ResNet50V2`` baseline) run side by side, interleaved round by round.

Two measures, because a shared machine makes wall time noisy:

* ``cpu ms/img``: process CPU time per image with one TF thread (``--threads 1``, the default): the work
  done, nearly immune to other processes;
* ``img/s``: wall-clock throughput with the threads given (best round).

Example:
    python benchmarks/proposals/ab_layers.py benchmarks/proposals/groupnorm_two_pass.patch \\
        --mode train --size 128 --batch 16 --rounds 3
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def patched_layers(patch: Path) -> Any:
    """Apply ``patch`` (a unified diff of bit_keras/layers.py) to a temporary copy and import it.

    Example:
        mod = patched_layers(Path("benchmarks/proposals/groupnorm_two_pass.patch"))
    """
    tmp = Path(tempfile.mkdtemp(prefix="ab-layers-"))
    (tmp / "bit_keras").mkdir()
    shutil.copy(REPO / "bit_keras" / "layers.py", tmp / "bit_keras" / "layers.py")
    subprocess.run(["patch", "-p1", "-s", "-d", str(tmp), "-i", str(patch.resolve())], check=True)
    spec = importlib.util.spec_from_file_location("patched_layers", tmp / "bit_keras" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class Swap:
    """Context manager: inside it, ``bit_keras.layers`` runs the patched module's code: its module-level
    functions, and the methods of ``GroupNorm`` / ``StandardizedConv2D`` (``super()`` rebound to the real
    classes).

    Example:
        with Swap(mod): step()   # traces the tf.function with the patched layers
    """

    NAMES = ("GroupNorm", "StandardizedConv2D")

    def __init__(self, module: Any | None):
        import bit_keras.layers as current

        self.module, self.current = module, current
        self.saved: list[tuple[Any, str, Any]] = []

    def _set(self, owner: Any, attr: str, value: Any) -> None:
        self.saved.append((owner, attr, vars(owner).get(attr, _MISSING)))
        setattr(owner, attr, value)

    def __enter__(self) -> "Swap":
        if self.module is None:
            return self
        for attr, value in vars(self.module).items():
            if isinstance(value, types.FunctionType) and value.__module__ == self.module.__name__:
                self._set(self.current, attr, value)
        for name in self.NAMES:
            cls, new = getattr(self.current, name), getattr(self.module, name)
            for attr, value in vars(new).items():
                if isinstance(value, types.FunctionType):
                    self._set(cls, attr, _rebind(value, cls))
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, attr, value in reversed(self.saved):
            if value is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, value)
        self.saved.clear()


_MISSING = object()


def _rebind(fn: types.FunctionType, cls: type) -> types.FunctionType:
    """``fn`` with its ``__class__`` cell (zero-argument ``super()``) pointing at ``cls``."""
    if "__class__" not in fn.__code__.co_freevars:
        return fn
    cells = tuple(types.CellType(cls) if name == "__class__" else cell
                  for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()))
    rebound = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, cells)
    rebound.__kwdefaults__ = fn.__kwdefaults__
    return rebound


def make_step(which: str, module: Any | None, args: argparse.Namespace) -> Callable[[], Any]:
    """A traced step of ``current`` / ``patched`` bit_keras R50x1 or the ``baseline``."""
    import numpy as np

    from bit_keras import bench

    case = bench.BASELINE_CASE if which == "baseline" else bench.BIT_CASE
    spec = bench.CaseSpec(case, args.mode, args.variant, args.precision, args.arch, args.size, args.batch)
    bench._set_policy(args.precision)
    try:
        with Swap(module if which == "patched" else None):
            model = bench.build_model(spec)
            images, labels = bench._inputs(spec)
            if args.mode == "inference":
                step = bench.inference_step(model, images, args.variant)
            else:
                step = bench.train_step(model, images, labels, args.variant, args.precision)
            np.asarray(step())  # traces inside the swap
            np.asarray(step())
    finally:
        bench._set_policy("float32")
    return step


def measure(step: Callable[[], Any], batch: int, seconds: float) -> tuple[float, float]:
    """(process CPU ms per image, wall images/s) over at least two steps and ``seconds``."""
    import numpy as np

    n, c0, w0 = 0, time.process_time(), time.perf_counter()
    while n < 2 or time.perf_counter() - w0 < seconds:
        np.asarray(step())
        n += 1
    return (time.process_time() - c0) / (n * batch) * 1000, n * batch / (time.perf_counter() - w0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("patch", type=Path)
    p.add_argument("--mode", choices=("inference", "train"), default="train")
    p.add_argument("--variant", choices=("eager", "function", "xla"), default="function")
    p.add_argument("--precision", default="float32")
    p.add_argument("--arch", default="R50x1")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1, help="TF intra-op threads (0: TF's default)")
    args = p.parse_args(argv)

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    module = patched_layers(args.patch)
    steps = {w: make_step(w, module, args) for w in ("current", "patched", "baseline")}
    results: dict[str, list[tuple[float, float]]] = {w: [] for w in steps}
    for _ in range(args.rounds):
        for which, step in steps.items():
            results[which].append(measure(step, args.batch, args.seconds))
    print(f"{args.mode} {args.variant} {args.precision} {args.arch} {args.size} px batch {args.batch}, "
          f"{args.threads or 'default'} thread(s), {args.rounds} rounds, load {os.getloadavg()[0]:.1f}")
    best_cpu = {w: min(c for c, _ in r) for w, r in results.items()}
    best_ips = {w: max(i for _, i in r) for w, r in results.items()}
    print("| layers | cpu ms/img (best) | img/s (best) | vs current (cpu time) | vs current (img/s) |")
    print("|---|---|---|---|---|")
    for which in results:
        print(f"| {which} | {best_cpu[which]:.1f} | {best_ips[which]:.2f} | "
              f"{best_cpu['current'] / best_cpu[which]:.2f}x | {best_ips[which] / best_ips['current']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
