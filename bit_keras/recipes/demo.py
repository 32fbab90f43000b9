"""``bit-keras demo``: the whole BiT story in minutes, offline, on a laptop CPU.

1. Upstream: pre-train a tiny BiT (:data:`bit_keras.models.presets` ``BiT-tiny``, 0.5M parameters) on scikit-learn's real
   handwritten digits 0-4, each also rotated by 90/180/270 degrees as classes of their own (size and
   variety upstream, the way BiT gets it), with the upstream recipe (:func:`bit_keras.pretrain`).
2. Export the backbone to a local hub registry (``DIR/registry``, handle :data:`HANDLE`).
3. Downstream: transfer with the BiT-HyperRule to the held-out digits 5-9 at 1, 5 and 10 examples per
   class, and train the same architecture from scratch with the same budget. Each side gets its own best
   learning rate from the same small sweep, chosen on a validation split of the pool (never the test set).
4. Few-shot linear probe (:func:`bit_keras.fewshot_probe`): the frozen pre-logits of the upstream model
   against those of the same network randomly initialised, a closed-form least-squares classifier on the same
   k-shot sets (the probe draws them as ``transfer`` does), its L2 strength chosen on the pool.
5. Report the test accuracy, mean and spread over 3 seeds, as a table, ``demo.json`` and ``demo.png``.

Example:
    >>> from bit_keras.recipes.demo import QUICK
    >>> QUICK.examples_per_class, QUICK.seeds
    ((1, 5), (0,))
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bit_keras.atomic import write_json

HANDLE = "bit-keras/tiny-digits/feature_vector/1"


@dataclass(frozen=True)
class DemoConfig:
    """The demo's budget; :data:`FULL` is the default, :data:`QUICK` a smoke run for CI."""

    examples_per_class: tuple[int, ...] = (1, 5, 10)
    seeds: tuple[int, ...] = (0, 1, 2)
    upstream_epochs: int = 20
    steps: int = 200
    batch_size: int = 32
    image_size: int = 32
    learning_rates: tuple[float, ...] = (0.003, 0.01, 0.03)
    sweep_examples_per_class: int = 5


FULL = DemoConfig()
QUICK = DemoConfig(examples_per_class=(1, 5), seeds=(0,), upstream_epochs=1, steps=20, learning_rates=(0.01,))


def _fine_tune(images: np.ndarray, labels: np.ndarray, test: tuple[np.ndarray, np.ndarray], *, weights: str | None,
               k: int, seed: int, lr: float, cfg: DemoConfig) -> float:
    from bit_keras.recipes.transfer import transfer

    with contextlib.redirect_stdout(io.StringIO()):  # the demo prints its own summary
        result = transfer("BiT-tiny", (images, labels), weights=weights, examples_per_class=k, validation=test,
                          batch_size=cfg.batch_size, steps=cfg.steps,
                          resize=cfg.image_size + cfg.image_size // 8, crop=cfg.image_size, base_lr=lr, seed=seed,
                          flip=False, progress=False, checkpoint_every=None)
    return float(result.metrics["top1"])


def _sweep(pool: tuple[np.ndarray, np.ndarray], weights: str | None, cfg: DemoConfig) -> tuple[float, dict]:
    """The best learning rate for one side, on a validation half of the pool (seed 100, not a test seed)."""
    if len(cfg.learning_rates) == 1:
        return cfg.learning_rates[0], {}
    images, labels = pool
    rng = np.random.default_rng(100)
    val_mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val_mask[idx[: len(idx) // 2]] = True
    scores = {lr: _fine_tune(images[~val_mask], labels[~val_mask], (images[val_mask], labels[val_mask]),
                             weights=weights, k=cfg.sweep_examples_per_class, seed=100, lr=lr, cfg=cfg)
              for lr in cfg.learning_rates}
    best = max(scores, key=lambda lr: (scores[lr], -lr))
    return best, {str(lr): acc for lr, acc in scores.items()}


def _probe(pool: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], weights: str,
           cfg: DemoConfig) -> dict[str, Any]:
    """The few-shot linear probe of the upstream features and of a random network's (seed 0), on the shots and
    seeds of the transfer runs; ``probe_<side>`` keys laid out as ``transfer``'s, plus the strengths chosen."""
    from bit_keras.evals.fewshot import fewshot_probe

    out: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for side, w in (("upstream", weights), ("random", None)):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the demo prints its own summary
            r = fewshot_probe("BiT-tiny", pool, test_dataset=test, shots=cfg.examples_per_class, seeds=cfg.seeds,
                              weights=w, resolution=cfg.image_size, progress=False)
        out[f"probe_{side}"] = r.top1
        out[f"probe_{side}_std"] = r.top1_std
        out[f"probe_{side}_per_seed"] = r.per_seed
        detail[side] = {"alpha": [c["alpha"] for c in r.l2], "features_computed": r.features_computed,
                        "seconds": round(time.perf_counter() - t0, 1)}
    out["probe"] = {"what": "closed-form L2-regularised least squares on frozen pre-logits (bit_keras.fewshot_probe); "
                            "random: BiT-tiny initialised with seed 0", **detail}
    return out


def _publish(weights_model: Any, registry: Path) -> str:
    from hub_export import Registry

    from bit_keras.recipes.pretrain import export_to_registry

    reg = Registry(registry)
    if HANDLE not in {m.get("handle") for m in reg.list()}:
        export_to_registry(weights_model, HANDLE, registry=registry,
                           metadata={"upstream_data": "scikit-learn digits 0-4 with rotations"})
    return HANDLE


def run_demo(output_dir: str | os.PathLike = "runs/demo", *, quick: bool = False,
             config: DemoConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the demo and write ``demo.json`` and ``demo.png`` into ``output_dir``; returns the results.

    Re-running on the same folder reuses the finished upstream model.
    """
    from bit_keras.data.digits import load_digits_split
    from bit_keras.plots import plot_few_shot
    from bit_keras.recipes.pretrain import pretrain

    cfg = config or (QUICK if quick else FULL)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_digits_split(size=cfg.image_size)

    up_dir = out / "upstream"
    weights = up_dir / "weights.npz"
    t0 = time.perf_counter()
    upstream = pretrain("BiT-tiny", (data.upstream_images, data.upstream_labels), preset="tiny",
                        epochs=cfg.upstream_epochs, image_size=cfg.image_size, output_dir=up_dir,
                        progress=progress, checkpoint_every=100)
    upstream_s = time.perf_counter() - t0
    handle = _publish(upstream.model, out / "registry")

    pool = (data.downstream_pool_images, data.downstream_pool_labels)
    test = (data.downstream_test_images, data.downstream_test_labels)
    print(f"Choosing learning rates from {list(cfg.learning_rates)} on a validation split of the pool...")
    lr_transfer, sweep_transfer = _sweep(pool, os.fspath(weights), cfg)
    lr_scratch, sweep_scratch = _sweep(pool, None, cfg)
    print(f"  transfer: lr {lr_transfer} ({sweep_transfer});  scratch: lr {lr_scratch} ({sweep_scratch})")

    per_seed: dict[str, list[list[float]]] = {"transfer": [], "scratch": []}
    for k in cfg.examples_per_class:
        for side, w, lr in (("transfer", os.fspath(weights), lr_transfer), ("scratch", None, lr_scratch)):
            accs = [_fine_tune(*pool, test, weights=w, k=k, seed=s, lr=lr, cfg=cfg) for s in cfg.seeds]
            per_seed[side].append(accs)
        print(f"  {k:>3} per class: transfer {np.mean(per_seed['transfer'][-1]):.3f}  "
              f"scratch {np.mean(per_seed['scratch'][-1]):.3f}")

    print("Few-shot linear probe of the frozen features (upstream vs random init)...")
    probe = _probe(pool, test, os.fspath(weights), cfg)

    results: dict[str, Any] = {
        "examples_per_class": list(cfg.examples_per_class),
        "transfer": [float(np.mean(a)) for a in per_seed["transfer"]],
        "scratch": [float(np.mean(a)) for a in per_seed["scratch"]],
        "transfer_std": [float(np.std(a)) for a in per_seed["transfer"]],
        "scratch_std": [float(np.std(a)) for a in per_seed["scratch"]],
        "transfer_per_seed": per_seed["transfer"],
        "scratch_per_seed": per_seed["scratch"],
        **probe,
        "seeds": list(cfg.seeds),
        "learning_rate": {"transfer": lr_transfer, "scratch": lr_scratch},
        "learning_rate_sweep": {"transfer": sweep_transfer, "scratch": sweep_scratch},
        "upstream": {"data": "scikit-learn digits 0-4 x 4 rotations (20 classes)",
                     "examples": int(len(data.upstream_labels)), "steps": upstream.steps,
                     "final_loss": upstream.history["loss"][-1] if upstream.history["loss"] else None,
                     "seconds": round(upstream_s, 1), "handle": handle},
        "downstream": {"data": "scikit-learn digits 5-9", "pool": int(len(pool[1])), "test": int(len(test[1])),
                       "steps": cfg.steps, "batch_size": cfg.batch_size},
        "config": dataclasses.asdict(cfg),
        "quick": quick,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_json(out / "demo.json", results)
    plot_few_shot(results, out / "demo.png",
                  title="BiT on digits: transfer 0-4 (+rotations) -> 5-9")
    print(format_table(results))
    print(f"Wrote {out / 'demo.json'} and {out / 'demo.png'} in {results['wall_s']:.0f} s.")
    return results


def format_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table (mean +- std over the seeds); the linear-probe columns when present.

    Example:
        >>> print(format_table({"examples_per_class": [1], "transfer": [0.75], "scratch": [0.5],
        ...                     "transfer_std": [0.01], "scratch_std": [0.02], "seeds": [0, 1, 2]}))
        | examples per class | transfer | scratch |
        |---:|---:|---:|
        | 1 | 0.750 ± 0.010 | 0.500 ± 0.020 |
        (test top-1, mean ± std over 3 seeds)
        >>> print(format_table({"examples_per_class": [1], "transfer": [0.75], "scratch": [0.5],
        ...                     "transfer_std": [0.01], "scratch_std": [0.02], "probe_upstream": [0.7],
        ...                     "probe_upstream_std": [0.03], "probe_random": [0.4], "probe_random_std": [0.05],
        ...                     "seeds": [0, 1, 2]}))
        | examples per class | transfer | scratch | probe: upstream | probe: random init |
        |---:|---:|---:|---:|---:|
        | 1 | 0.750 ± 0.010 | 0.500 ± 0.020 | 0.700 ± 0.030 | 0.400 ± 0.050 |
        (test top-1, mean ± std over 3 seeds; probe: a linear classifier on frozen pre-logits)
    """
    sides = ["transfer", "scratch"]
    header = "| examples per class | transfer | scratch |"
    if "probe_upstream" in results and "probe_random" in results:
        sides += ["probe_upstream", "probe_random"]
        header += " probe: upstream | probe: random init |"
    lines = [header, "|---:|" + "---:|" * len(sides)]
    for i, k in enumerate(results["examples_per_class"]):
        cells = [f"{results[s][i]:.3f} ± {results[f'{s}_std'][i]:.3f}" for s in sides]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    note = "; probe: a linear classifier on frozen pre-logits" if len(sides) > 2 else ""
    lines.append(f"(test top-1, mean ± std over {len(results['seeds'])} seeds{note})")
    return "\n".join(lines)
