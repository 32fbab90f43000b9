"""The timm peer of ``bit-keras bench``: timm's PyTorch BiT (``resnetv2_50x1_bit``, ...) timed like ours.

Run as a script in its own process, by the interpreter ``bit-keras bench --peer-python`` names (default:
the one running the benchmark), so PyTorch can live in another environment than TensorFlow. It imports
only the standard library, NumPy, its sibling files :mod:`timing` and :mod:`interleave`, torch and timm.

    python benchmarks/bench/timm_peer.py --versions          # {"torch": ..., "timm": ...}, exit 1 if missing
    python benchmarks/bench/timm_peer.py '{"mode": "train", "image_size": 128, "batch_size": 16, ...}'

builds the model and warms it up, then serves the harness's interleaved rounds (:mod:`interleave`'s line
protocol: ``READY``, one ``TIME`` per timed repeat, ``RESULT`` with the peak memory), or says ``FAILED``.

Example (the spec fields it reads, and timm's model for each zoo architecture):
    >>> sorted(SPEC_DEFAULTS)
    ['arch', 'batch_size', 'device', 'image_size', 'min_seconds', 'min_steps', 'mode', 'precision', 'warmup']
    >>> TIMM_MODELS["R50x1"], TIMM_MODELS["R152x2"]
    ('resnetv2_50x1_bit', 'resnetv2_152x2_bit')
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from typing import Any, Callable

if __package__:
    from benchmarks.bench.interleave import serve_or_fail
    from benchmarks.bench.timing import MemoryProbe, cores, time_repeat, warm_up
else:  # run as a script: the sibling modules, without importing the benchmarks package (and TensorFlow)
    from interleave import serve_or_fail  # type: ignore[no-redef]
    from timing import MemoryProbe, cores, time_repeat, warm_up  # type: ignore[no-redef]

# timm's BiT of each zoo architecture (benchmarks.bench.cases.TIMM_MODELS: this file may not import it)
TIMM_MODELS = {"R50x1": "resnetv2_50x1_bit", "R101x1": "resnetv2_101x1_bit", "R101x3": "resnetv2_101x3_bit",
               "R152x2": "resnetv2_152x2_bit", "R152x4": "resnetv2_152x4_bit"}
SPEC_DEFAULTS: dict[str, Any] = {"mode": "train", "precision": "float32", "arch": "R50x1", "image_size": 224,
                                 "batch_size": 8, "warmup": 2, "min_seconds": 2.0, "min_steps": 2, "device": "cpu"}


def versions() -> dict[str, str]:
    """torch and timm versions (ImportError when either is missing)."""
    import timm
    import torch

    return {"torch": torch.__version__, "timm": timm.__version__}


def build_step(spec: Any) -> tuple[Callable[[], Any], Callable[[], None]]:
    """timm's BiT of ``spec.arch`` (pretrained=False, 1000 classes), PyTorch eager: inference (``inference_mode``)
    or a training step (forward, cross-entropy, backward, SGD momentum 0.9), float32 or autocast (AMP) to
    bfloat16 / float16 (with a grad scaler), on random images; channels-last on a GPU. Returns the step and
    "reset the GPU's peak memory"."""
    import timm
    import torch

    gpu = spec.device == "gpu" and torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    if not gpu:
        torch.set_num_threads(cores())
    model = timm.create_model(TIMM_MODELS[spec.arch], pretrained=False, num_classes=1000).to(dev)
    images = torch.rand(spec.batch_size, 3, spec.image_size, spec.image_size, device=dev)
    if gpu:  # channels-last: what cuDNN's tensor-core kernels want
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
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

    def reset_peak() -> None:
        if gpu:
            torch.cuda.reset_peak_memory_stats()

    if spec.mode == "inference":
        model.eval()

        def step() -> float:
            with torch.inference_mode(), autocast():
                return done(model(images).float().sum().item())

        return step, reset_peak
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.003, momentum=0.9)
    scaler = torch.amp.GradScaler(enabled=amp_dtype is torch.float16)

    def train() -> float:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return done(loss.item())

    return train, reset_peak


def prepare(spec_fields: dict[str, Any]) -> tuple[Callable, Callable, dict[str, Any]]:
    """Build and warm up; ``(measure, finish, ready)`` for :func:`interleave.serve`."""
    spec = SimpleNamespace(**{**SPEC_DEFAULTS, **{k: v for k, v in spec_fields.items() if k in SPEC_DEFAULTS}})
    import torch

    probe = MemoryProbe(gpu=False)  # after import torch: the framework itself is not counted
    probe.start()
    step, reset_peak = build_step(spec)
    reset_peak()
    first = warm_up(step, spec)
    gpu = spec.device == "gpu" and torch.cuda.is_available()

    def finish() -> dict[str, Any]:
        if gpu:
            return {"peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20, "mem_kind": "gpu_peak"}
        mb, kind = probe.peak_mb()
        return {"peak_mem_mb": mb, "mem_kind": kind}

    return lambda row=None: time_repeat(step, spec.batch_size, spec), finish, {"first_call_s": first}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--versions"]:
        try:
            print(json.dumps(versions()))
        except ImportError as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
            return 1
        return 0
    return serve_or_fail(lambda: prepare(json.loads(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
