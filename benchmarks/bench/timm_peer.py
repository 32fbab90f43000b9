"""The timm peer of ``bit-keras bench``: timm's PyTorch BiT-R50x1 (``resnetv2_50x1_bit``) timed like ours.

Run as a script in its own process, by the interpreter ``bit-keras bench --peer-python`` names (default:
the one running the benchmark), so PyTorch can live in another environment than TensorFlow. It imports
only the standard library, NumPy, :mod:`bench_timing` (its sibling file), torch and timm.

    python benchmarks/bench/timm_peer.py --versions          # {"torch": ..., "timm": ...}, exit 1 if missing
    python benchmarks/bench/timm_peer.py '{"mode": "train", "image_size": 128, "batch_size": 16, ...}'

prints one line ``BENCH_RESULT {json}`` with images/s, CPU ms per image and peak memory, or
``{"error": ...}``.

Example (the spec fields it reads):
    >>> sorted(SPEC_DEFAULTS)
    ['batch_size', 'device', 'image_size', 'min_seconds', 'min_steps', 'mode', 'precision', 'repeats', 'warmup']
"""

from __future__ import annotations

import json
import sys
import traceback
from types import SimpleNamespace
from typing import Any

if __package__:
    from benchmarks.bench.timing import RESULT_PREFIX, MemoryProbe, cores, time_steps
else:  # run as a script: the sibling module, without importing the benchmarks package (and TensorFlow)
    from timing import RESULT_PREFIX, MemoryProbe, cores, time_steps  # type: ignore[no-redef]

MODEL_NAME = "resnetv2_50x1_bit"
SPEC_DEFAULTS: dict[str, Any] = {"mode": "train", "precision": "float32", "image_size": 224, "batch_size": 8,
                                 "warmup": 2, "repeats": 3, "min_seconds": 2.0, "min_steps": 2, "device": "cpu"}


def versions() -> dict[str, str]:
    """torch and timm versions (ImportError when either is missing)."""
    import timm
    import torch

    return {"torch": torch.__version__, "timm": timm.__version__}


def run(spec_fields: dict[str, Any]) -> dict[str, Any]:
    """Time timm's ``resnetv2_50x1_bit`` (pretrained=False, 1000 classes), PyTorch eager: inference
    (``inference_mode``) or a training step (forward, cross-entropy, backward, SGD momentum 0.9), float32 or
    autocast to bfloat16 / float16 (with a grad scaler), on random images."""
    spec = SimpleNamespace(**{**SPEC_DEFAULTS, **{k: v for k, v in spec_fields.items() if k in SPEC_DEFAULTS}})
    import timm
    import torch

    gpu = spec.device == "gpu" and torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    if not gpu:
        torch.set_num_threads(cores())
    probe = MemoryProbe(gpu=False)
    probe.start()
    model = timm.create_model(MODEL_NAME, pretrained=False, num_classes=1000).to(dev)
    images = torch.rand(spec.batch_size, 3, spec.image_size, spec.image_size, device=dev)
    labels = torch.randint(0, 1000, (spec.batch_size,), device=dev)
    amp_dtype = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(spec.precision)

    def autocast() -> Any:
        if amp_dtype is None:
            return torch.autocast(dev.type, enabled=False)
        return torch.autocast(dev.type, dtype=amp_dtype)

    def done(out: Any) -> Any:
        if gpu:
            torch.cuda.synchronize()
        return out

    if spec.mode == "inference":
        model.eval()

        def step() -> float:
            with torch.inference_mode(), autocast():
                return done(model(images).float().sum().item())
    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
        scaler = torch.amp.GradScaler(enabled=amp_dtype is torch.float16)

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return done(loss.item())

    if gpu:
        torch.cuda.reset_peak_memory_stats()
    result = time_steps(step, spec.batch_size, spec)
    if gpu:
        result["peak_mem_mb"], result["mem_kind"] = torch.cuda.max_memory_allocated() / 2**20, "gpu_peak"
    else:
        result["peak_mem_mb"], result["mem_kind"] = probe.peak_mb()
    return result


def main(argv: list[str]) -> int:
    if argv[:1] == ["--versions"]:
        try:
            print(json.dumps(versions()))
        except ImportError as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            return 1
        return 0
    try:
        import torch  # noqa: F401 - the memory baseline is taken after the framework is loaded

        out = run(json.loads(argv[0]))
    except Exception as e:  # noqa: BLE001 - reported on the row
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    print(RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
