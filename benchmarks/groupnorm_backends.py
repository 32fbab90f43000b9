"""GroupNorm's hand-written gradient against autodiff of the textbook layer, on each Keras backend.

    python benchmarks/groupnorm_backends.py                       # TensorFlow and JAX from this interpreter
    python benchmarks/groupnorm_backends.py --torch-python /path/to/torch-venv/bin/python

Each backend runs in its own process (``KERAS_BACKEND``), which times forward + backward of
``bit_keras.models.layers.group_norm`` (``keras.ops.custom_gradient``) and of the textbook formula written with
``keras.ops`` (reshape to groups, mean and variance, normalise: the backend differentiates it), alternating the
two (A B A B ...) and reporting the median of the per-round time ratios, so a slow moment of a shared machine
lands on both. Compiled the way each backend trains: ``tf.function`` on TensorFlow, ``jax.jit`` on JAX, eager on
PyTorch (Keras' own training step on torch is eager). Shapes: BiT-R50x1's GroupNorm inputs at 224 px, batch 8.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(8, 56, 56, 256), (8, 28, 28, 512), (8, 14, 14, 1024)]
GROUPS = 32


def _worker(rounds: int) -> dict:
    import numpy as np
    import keras
    from keras import ops

    from bit_keras.models.layers import group_norm

    backend = keras.backend.backend()

    def textbook(x, gamma, beta):
        n, h, w, c = x.shape
        g = ops.reshape(x, (n, h, w, GROUPS, c // GROUPS))
        mean = ops.mean(g, axis=(1, 2, 4), keepdims=True)
        var = ops.mean(ops.square(g - mean), axis=(1, 2, 4), keepdims=True)
        return ops.reshape((g - mean) * ops.rsqrt(var + 1e-5), (n, h, w, c)) * gamma + beta

    def ours(x, gamma, beta):
        return group_norm(x, gamma, beta, GROUPS)

    def compile_step(fn):
        """forward + backward (gradients of sum(y * dy) with respect to x, gamma, beta), compiled."""
        if backend == "tensorflow":
            import tensorflow as tf

            @tf.function
            def step(x, gamma, beta, dy):
                with tf.GradientTape() as tape:
                    tape.watch([x, gamma, beta])
                    loss = tf.reduce_sum(fn(x, gamma, beta) * dy)
                return tape.gradient(loss, [x, gamma, beta])

            return lambda *a: [t.numpy() for t in step(*[tf.constant(v) for v in a])][2]
        if backend == "jax":
            import jax

            step = jax.jit(jax.grad(lambda x, g, b, dy: (fn(x, g, b) * dy).sum(), argnums=(0, 1, 2)))
            arrays = {}

            def run(*a):
                key = id(a[0])
                if key not in arrays:
                    arrays[key] = [jax.device_put(v) for v in a]
                return step(*arrays[key])[2].block_until_ready()

            return run
        torch = __import__("torch")

        def run(*a):
            xs = [torch.tensor(v, requires_grad=i < 3) for i, v in enumerate(a)]
            (fn(*xs[:3]) * xs[3]).sum().backward()
            return xs[2].grad.numpy()

        return run

    rng = np.random.default_rng(0)
    rows = []
    for shape in SHAPES:
        c = shape[-1]
        args = [rng.normal(1, 2, shape).astype("float32"), rng.normal(1, 0.2, c).astype("float32"),
                rng.normal(0, 0.2, c).astype("float32"), rng.normal(size=shape).astype("float32")]
        steps = {"custom_gradient": compile_step(ours), "autodiff": compile_step(textbook)}
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(2):  # warm-up: trace and compile
            for step in steps.values():
                step(*args)
        for _ in range(rounds):
            for name, step in steps.items():
                t0 = time.perf_counter()
                step(*args)
                times[name].append(time.perf_counter() - t0)
        ratios = [a / b for a, b in zip(times["autodiff"], times["custom_gradient"])]
        rows.append({"backend": backend, "shape": list(shape),
                     "custom_gradient_ms": 1e3 * statistics.median(times["custom_gradient"]),
                     "autodiff_ms": 1e3 * statistics.median(times["autodiff"]),
                     "autodiff_over_custom": statistics.median(ratios),
                     "spread": [min(ratios), max(ratios)]})
    return {"backend": backend, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--torch-python", default=None, help="an interpreter with torch and keras (no TensorFlow needed)")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(_worker(args.rounds)))
        return 0
    results = []
    for backend in args.backends.split(","):
        python = args.torch_python if backend == "torch" else sys.executable
        if python is None:
            print(f"{backend}: skipped (pass --torch-python)")
            continue
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run([python, __file__, "--worker", "--rounds", str(args.rounds)], env=env,
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{backend}: failed\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            continue
        results.append(json.loads(line[len("RESULT "):]))
    print("| backend | input | custom gradient ms | autodiff ms | autodiff / custom (median, min-max) |")
    print("|---|---|---:|---:|---:|")
    for result in results:
        for r in result["rows"]:
            print(f"| {r['backend']} | {'x'.join(map(str, r['shape']))} | {r['custom_gradient_ms']:.1f} | "
                  f"{r['autodiff_ms']:.1f} | {r['autodiff_over_custom']:.2f} ({r['spread'][0]:.2f}-{r['spread'][1]:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
