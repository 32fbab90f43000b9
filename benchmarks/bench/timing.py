"""Timing and peak-memory probes shared by every benchmark row (standard library and NumPy only).

Kept free of TensorFlow and of the rest of the package so that the timm peer (``timm_peer.py``) can use
it from a PyTorch-only interpreter.

Example:
    >>> from types import SimpleNamespace
    >>> spec = SimpleNamespace(warmup=1, repeats=2, min_seconds=0.02, min_steps=2)
    >>> r = time_steps(lambda: time.sleep(0.005), 4, spec)
    >>> 0 < r["images_per_s"] <= 800, r["steps"] >= 4
    (True, True)
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

def cores() -> int:
    """CPU cores this process may run on.

    Example:
        >>> cores() >= 1
        True
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load1() -> float | None:
    """The 1-minute load average (how busy the machine was), or None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory of one case: GPU allocator peak, or growth of the process's RSS high-water mark.

    Example:
        >>> probe = MemoryProbe(gpu=False); probe.start()
        >>> block = bytearray(64 << 20); block[::4096] = b"x" * len(block[::4096])
        >>> mb, kind = probe.peak_mb(); del block
        >>> mb > 50, kind in ("rss_hwm_delta", "ru_maxrss_delta")
        (True, True)
    """

    def __init__(self, gpu: bool = False):
        self.gpu = gpu
        self.base_kb = 0
        self.kind = "gpu_peak" if gpu else "rss_hwm_delta"

    def start(self) -> None:
        """Reset the high-water marks; the peak is measured from here."""
        if self.gpu:
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
            return
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.base_kb = _proc_status_kb("VmHWM") or 0
            self.kind = "rss_hwm_delta" if self.base_kb else "ru_maxrss_delta"
        except OSError:
            self.kind = "ru_maxrss_delta"
        if self.kind == "ru_maxrss_delta":
            self.base_kb = _proc_status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def peak_mb(self) -> tuple[float, str]:
        """(peak MB since :meth:`start`, what was measured)."""
        if self.gpu:
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, self.kind
        if self.kind == "rss_hwm_delta":
            peak = _proc_status_kb("VmHWM") or 0
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, peak - self.base_kb) / 1024, self.kind


def sync(value: Any) -> None:
    """Wait for ``value`` (a tensor, a dict, tuple or list of them, or a Python number) to be computed.

    Example:
        >>> sync((np.zeros(2), {"a": 1.0}))
    """
    if isinstance(value, dict):
        value = next(iter(value.values()))
    elif isinstance(value, (tuple, list)):
        value = value[0]  # (images, labels) from a pipeline: its elements come together
    np.asarray(value)


def warm_up(step: Callable[[], Any], spec: Any) -> float:
    """Run ``spec.warmup`` steps (at least one) and return the seconds of the first (tracing, compiling)."""
    t0 = time.perf_counter()
    sync(step())
    first = time.perf_counter() - t0
    for _ in range(max(0, spec.warmup - 1)):
        sync(step())
    return first


def time_repeat(step: Callable[[], Any], images_per_step: int, spec: Any) -> dict[str, Any]:
    """Time one repeat: at least ``spec.min_steps`` steps and ``spec.min_seconds`` seconds.

    Returns images/s (wall clock), the process CPU time per image (all threads; on a busy machine the
    wall-clock rate drops but this stays close to the work done), the steps and the seconds.

    Example:
        >>> from types import SimpleNamespace
        >>> r = time_repeat(lambda: None, 2, SimpleNamespace(min_steps=3, min_seconds=0.0))
        >>> r["steps"], r["images_per_s"] > 0, sorted(r)
        (3, True, ['cpu_ms_per_image', 'images_per_s', 'seconds', 'steps'])
    """
    n, cpu0, start = 0, time.process_time(), time.perf_counter()
    while True:
        sync(step())
        n += 1
        elapsed = time.perf_counter() - start
        if n >= spec.min_steps and elapsed >= spec.min_seconds:
            break
    cpu_ms = (time.process_time() - cpu0) / (n * images_per_step) * 1000
    return {"images_per_s": n * images_per_step / elapsed, "cpu_ms_per_image": cpu_ms, "steps": n,
            "seconds": elapsed}


def summarise_repeats(repeats: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """One row's figures from its repeats (:func:`time_repeat` results; ``None`` for a round it missed): the
    median and best images/s, the median CPU ms per image, the steps and seconds timed, and the per-round
    rates (``round_images_per_s``, ``""`` for a missed round) from which the interleaved ratios are computed.

    Example:
        >>> summarise_repeats([{"images_per_s": 4.0, "cpu_ms_per_image": 500.0, "steps": 1, "seconds": 2.0},
        ...                    None, {"images_per_s": 5.0, "cpu_ms_per_image": 400.0, "steps": 2, "seconds": 3.2}])
        {'images_per_s': 4.5, 'images_per_s_max': 5.0, 'cpu_ms_per_image': 450.0, 'steps': 3, 'seconds': 5.2, 'rounds': 2, 'round_images_per_s': '4;;5'}
    """
    done = [r for r in repeats if r]
    if not done:
        return {"rounds": 0}
    return {"images_per_s": statistics.median(r["images_per_s"] for r in done),
            "images_per_s_max": max(r["images_per_s"] for r in done),
            "cpu_ms_per_image": statistics.median(r["cpu_ms_per_image"] for r in done),
            "steps": sum(r["steps"] for r in done), "seconds": round(sum(r["seconds"] for r in done), 6),
            "rounds": len(done),
            "round_images_per_s": ";".join(f"{r['images_per_s']:.6g}" if r else "" for r in repeats)}


def round_rates(text: Any) -> list[float | None]:
    """The per-round images/s of a row (its ``round_images_per_s`` cell), ``None`` for a missed round.

    Example:
        >>> round_rates("4;;5.5"), round_rates("")
        ([4.0, None, 5.5], [])
    """
    if text in (None, ""):
        return []
    return [float(v) if v not in ("", None) else None for v in str(text).split(";")]


def time_steps(step: Callable[[], Any], images_per_step: int, spec: Any) -> dict[str, Any]:
    """Warm up, then time ``spec.repeats`` repeats (:func:`time_repeat`) one after another (no other case
    between them: the interleaved rounds of the harness are for comparisons).

    Returns :func:`summarise_repeats`' figures and the first call's seconds (tracing, compiling).
    """
    first = warm_up(step, spec)
    result = summarise_repeats([time_repeat(step, images_per_step, spec) for _ in range(max(1, spec.repeats))])
    return {**result, "first_call_s": first}
