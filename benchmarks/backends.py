"""BiT-R50x1 on each Keras backend, and timm, interleaved in warm processes: images/s and ratios.

    python benchmarks/backends.py --output bench-results                  # TensorFlow and JAX
    python benchmarks/backends.py --torch-python T --peer-python P --output bench-results
        # + the PyTorch backend (T: torch and keras) and timm's resnetv2_50x1_bit (P: torch, torchvision, timm)

One process per backend (``KERAS_BACKEND``) and one for timm build their rows once and warm them up; the
coordinator then runs rounds, each timing every row of every process in turn (A B C D A B C D ...), so a
slow moment of a shared machine lands on one round of all of them, not on one backend. The workers, the
rounds and the ratio maths are the harness's (:mod:`benchmarks.bench.interleave`). A row's figure is its
median over the rounds; a ratio (JAX / TensorFlow, each / timm) is the median of the per-round ratios, with
its min-max beside it. Rows: inference and one training step at 224 px, batch 8, float32 and bf16
(Keras' ``mixed_bfloat16``; timm: ``torch.autocast(bfloat16)``), on random images, 1000 classes.

How each trains:
* TensorFlow: the engine's :class:`bit_keras.train.step.TrainStep` (``tf.function``), as ``transfer()`` runs it;
* JAX: the engine's JAX step (``jax.jit``), as ``transfer()`` runs it on JAX;
* PyTorch: Keras' own ``train_on_batch`` (bit-keras fine-tunes on TensorFlow and JAX only), eager;
* timm: forward, cross-entropy, backward, SGD momentum (``benchmarks/bench/timm_peer.py``'s step).
Inference: ``tf.function`` on TensorFlow, ``jax.jit(model.stateless_call)`` on JAX, ``torch.no_grad`` eager on
PyTorch and timm (``inference_mode``).

Writes ``backends.json`` and ``backends.md`` into ``--output`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the checkout's benchmarks package

from benchmarks.bench.interleave import (SubprocessWorker, WorkerError, checkout_env, ratio_stats,  # noqa: E402
                                         run_rounds, serve)
from benchmarks.bench.machine import cpu_info  # noqa: E402
ROWS = [("inference", "float32"), ("inference", "mixed_bfloat16"), ("train", "float32"), ("train", "mixed_bfloat16")]
IMAGE_SIZE, BATCH = 224, 8


# ------------------------------------------------------------------------------------------------ workers


def _keras_rows(backend: str, arch: str, size: int, batch: int) -> dict[str, Callable[[], Any]]:
    import numpy as np

    import bit_keras
    from bit_keras.models.policy import dtype_policy

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch, size, size, 3)).astype("float32")
    labels = np.eye(1000, dtype="float32")[rng.integers(0, 1000, batch)]
    rows = {}
    for mode, precision in ROWS:
        with dtype_policy(precision):
            model = bit_keras.resnet_v2(arch, num_classes=1000)
        rows[f"{mode}/{precision}"] = _keras_step(backend, mode, precision, model, images, labels)
    return rows


def _keras_step(backend: str, mode: str, precision: str, model: Any, images: Any, labels: Any) -> Callable[[], Any]:
    if backend == "tensorflow":
        import tensorflow as tf

        if mode == "inference":
            forward = tf.function(lambda x: model(x, training=False))
            x = tf.constant(images)
            return lambda: forward(x).numpy()
        from bit_keras.train.step import TrainStep, make_optimizer

        step = TrainStep(model, make_optimizer(model, mixed_precision=precision), tf.distribute.get_strategy(),
                         batch_size=len(images))
        batch = (tf.constant(images), tf.constant(labels))
        return lambda: float(step(batch))
    if backend == "jax":
        import jax

        if mode == "inference":
            trainable = [v.value for v in model.trainable_variables]
            frozen = [v.value for v in model.non_trainable_variables]
            forward = jax.jit(lambda t, f, x: model.stateless_call(t, f, x, training=False)[0])
            x = jax.device_put(images)
            return lambda: forward(trainable, frozen, x).block_until_ready()
        return _jax_train_step(model, precision, images, labels)
    # PyTorch: Keras' own trainer, eager
    import keras

    torch = __import__("torch")
    if mode == "inference":
        x = torch.from_numpy(images)

        def infer() -> Any:
            with torch.no_grad():
                return model(x, training=False)

        return infer
    model.compile(optimizer=keras.optimizers.SGD(0.003, momentum=0.9),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    return lambda: model.train_on_batch(images, labels)


def _jax_train_step(model: Any, precision: str, images: Any, labels: Any) -> Callable[[], Any]:
    """The engine's JAX step on one global batch (what ``transfer()`` runs on JAX)."""
    from bit_keras.train.jax_step import JaxTrainStep
    from bit_keras.train.step import make_optimizer

    step = JaxTrainStep(model, make_optimizer(model, mixed_precision=precision), None, batch_size=len(images))
    return lambda: float(step((images, labels)))


def _timm_rows(size: int, batch: int) -> dict[str, Callable[[], Any]]:
    import timm
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    images = torch.rand(batch, 3, size, size)
    labels = torch.randint(0, 1000, (batch,))
    rows = {}
    for mode, precision in ROWS:
        model = timm.create_model("resnetv2_50x1_bit", pretrained=False, num_classes=1000)
        amp = torch.bfloat16 if precision == "mixed_bfloat16" else None

        def autocast(amp: Any = amp) -> Any:
            return torch.autocast("cpu", dtype=amp) if amp is not None else torch.autocast("cpu", enabled=False)

        if mode == "inference":
            model.eval()

            def step(model: Any = model, autocast: Any = autocast) -> Any:
                with torch.inference_mode(), autocast():
                    return model(images).float().sum().item()
        else:
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)

            def step(model: Any = model, autocast: Any = autocast, optimizer: Any = optimizer) -> Any:
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
                loss.backward()
                optimizer.step()
                return loss.item()
        rows[f"{mode}/{precision}"] = step
    return rows


def worker(kind: str, arch: str, size: int, batch: int, steps: int) -> int:
    """Serve one process's rows (:func:`benchmarks.bench.interleave.serve`): build and warm up, then time
    ``steps`` steps of the requested row per request (their median is the round's)."""
    if kind == "timm":
        rows, versions = _timm_rows(size, batch), {"timm": __import__("timm").__version__,
                                                  "torch": __import__("torch").__version__}
    else:
        import keras

        rows, versions = _keras_rows(kind, arch, size, batch), {"keras": keras.__version__}
        versions[kind] = __import__(kind).__version__
    for step in rows.values():  # trace / compile, then one more
        step()
        step()

    def measure(row: str | None) -> dict[str, Any]:
        step, times = rows[str(row)], []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return {"images_per_s": batch / statistics.median(times)}

    return serve(measure, dict, versions)


# ------------------------------------------------------------------------------------------------ coordinator


def _worker(kind: str, python: str, args: argparse.Namespace) -> SubprocessWorker:
    extra = {"TF_CPP_MIN_LOG_LEVEL": "3", **({"KERAS_BACKEND": kind} if kind != "timm" else {})}
    cmd = [python, __file__, "--worker", kind, "--arch", args.arch, "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    return SubprocessWorker(kind, cmd, env=checkout_env(ROOT, **extra))


def coordinate(args: argparse.Namespace) -> dict[str, Any]:
    kinds = {"tensorflow": sys.executable, "jax": sys.executable}
    if args.torch_python:
        kinds["torch"] = args.torch_python
    if args.peer_python and args.arch == "R50x1":  # timm's resnetv2_50x1_bit is R50x1 only
        kinds["timm"] = args.peer_python
    processes, failed, versions = [], {}, {}
    for kind, python in kinds.items():  # one at a time: building and compiling is not what is measured
        w = _worker(kind, python, args)
        try:
            versions[kind] = w.start()
            processes.append(w)
        except WorkerError as e:
            failed[kind] = f"the worker failed to start ({e}; run it alone: --worker KIND)"
        print(f"  {kind}: {'ready' if kind not in failed else failed[kind]}", flush=True)
    rows = [f"{m}/{p}" for m, p in ROWS]
    rates: dict[str, dict[str, list[float | None]]] = {p.name: {r: [] for r in rows} for p in processes}
    for r in range(args.rounds):
        for row in rows:
            for name, results in run_rounds(processes, 1, row=row).items():
                rates[name][row] += [res["images_per_s"] if res else None for res in results]
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    for p in processes:
        p.close()

    def ratios(a: str, b: str, row: str) -> dict[str, float] | None:
        if a not in rates or b not in rates:
            return None
        return ratio_stats(rates[a][row], rates[b][row])  # images/s of a over b, per round

    table = []
    for row in rows:
        entry: dict[str, Any] = {"row": row, "images_per_s": {
            k: statistics.median([v for v in rates[k][row] if v] or [0.0]) for k in rates}}
        entry["vs_tensorflow"] = {k: ratios(k, "tensorflow", row) for k in rates if k != "tensorflow"}
        entry["vs_timm"] = {k: ratios(k, "timm", row) for k in rates if k != "timm"}
        table.append(entry)
    isa = [f for f in cpu_info()[1] if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")]
    return {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size, "rounds": args.rounds,
            "steps_per_round": args.steps, "cores": len(os.sched_getaffinity(0)), "isa": isa,
            "versions": versions, "failed": failed, "rows": table}


def markdown(result: dict[str, Any]) -> str:
    kinds = list(result["versions"])
    lines = [f"BiT-{result['arch']} at {result['image_size']} px, batch {result['batch_size']}, "
             f"{result['cores']} CPU cores ({', '.join(result['isa']) or 'ISA unknown'}); {result['rounds']} "
             f"interleaved rounds of {result['steps_per_round']} steps; images/s (median over rounds), and ratios "
             "as the median of the per-round ratios (min-max).", ""]
    head = "| row | " + " | ".join(kinds) + " | " + " | ".join(f"{k} / tensorflow" for k in kinds if k != "tensorflow")
    head += "".join(f" | {k} / timm" for k in kinds if k != "timm" and "timm" in kinds)
    lines += [head + " |", "|" + "---|" * (head.count("|") - 1 + 1)]

    def fmt(r: dict[str, float] | None) -> str:
        return "" if r is None else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"

    for entry in result["rows"]:
        cells = [f"{entry['images_per_s'][k]:.2f}" for k in kinds]
        cells += [fmt(entry["vs_tensorflow"].get(k)) for k in kinds if k != "tensorflow"]
        if "timm" in kinds:
            cells += [fmt(entry["vs_timm"].get(k)) for k in kinds if k != "timm"]
        lines.append(f"| {entry['row']} | " + " | ".join(cells) + " |")
    for kind, why in result["failed"].items():
        lines.append(f"\n{kind}: {why}")
    lines.append("\nVersions: " + "; ".join(f"{k}: " + ", ".join(f"{a} {b}" for a, b in v.items())
                                           for k, v in result["versions"].items()))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench-results")
    parser.add_argument("--torch-python", help="a Python with torch and keras: adds the PyTorch backend")
    parser.add_argument("--peer-python", help="a Python with torch, torchvision and timm: adds timm")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per row per round (their median is the round's)")
    parser.add_argument("--arch", default="R50x1")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.arch, args.image_size, args.batch_size, args.steps)
    result = coordinate(args)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "backends.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / "backends.md").write_text(text)
    print(text)
    return 0 if not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
