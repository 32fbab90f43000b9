"""The machine a run measures: CPU, the instruction sets that matter for bf16, oneDNN and whether it uses AMX.

Machines differ from session to session (an AMD EPYC with AVX-512 and ``avx512_bf16`` but no AMX, an Intel Xeon
with AMX), and bf16 speed depends on it, so ``machine.json`` and the report say what was found:

* the CPU flags of ``/proc/cpuinfo`` that matter (:data:`CPU_FLAGS`: AVX-512, ``avx512_bf16``, ``amx_bf16``,
  ``amx_tile``, ...);
* oneDNN, as TensorFlow uses it: a subprocess runs one tiny float32 and one bfloat16 convolution with
  ``ONEDNN_VERBOSE=1``; :func:`parse_onednn_verbose` reads oneDNN's version line, its ISA and runtime lines and the
  implementation of each convolution primitive (``brg_conv_fwd:avx512_core_amx`` uses AMX,
  ``brg_conv_fwd:avx512_core_bf16`` the AVX-512 bf16 instructions);
* the load average as the run starts, and a warning when the 1-minute load is over half the cores
  (:func:`load_warning`): a busy machine spoils the ratios against timm most;
* a slug naming the kind of machine (:func:`machine_slug`: vendor, family, cores, key ISA), the folder name of its
  stored results under ``benchmarks/results/``.

Example:
    >>> slug = machine_slug({"cpu": "AMD EPYC 7B13", "cores": 2, "cpu_flags": ["avx2", "avx512f", "avx512_bf16"]})
    >>> slug, isa_summary({"cpu_flags": ["avx512f", "avx512_bf16"]})
    ('amd-epyc-2c-avx512bf16', 'avx512_bf16: yes; AMX (amx_bf16, amx_tile): no')
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from typing import Any, Mapping

from benchmarks.bench.timing import cores

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
BF16_ISA = ("avx512_bf16", "amx_bf16")  # what makes bf16 arithmetic native on a CPU

# One tiny convolution in float32 and one in bfloat16, as TensorFlow runs them (through oneDNN when it is on).
ONEDNN_PROBE = """
import tensorflow as tf
x = tf.random.uniform((1, 16, 16, 32))
k = tf.random.uniform((3, 3, 32, 32))
tf.nn.conv2d(x, k, 1, "SAME").numpy()
tf.nn.conv2d(tf.cast(x, tf.bfloat16), tf.cast(k, tf.bfloat16), 1, "SAME").numpy()
"""


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """(the CPU's model name, which of :data:`CPU_FLAGS` it has)."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and cpu in (platform.processor(), platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    have = set(line.split(":", 1)[1].split())
                    flags = [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return cpu, flags


def has_bf16_isa(machine: Mapping[str, Any]) -> bool:
    """Whether the CPU has native bf16 arithmetic (``avx512_bf16`` or AMX).

    Example:
        >>> has_bf16_isa({"cpu_flags": ["avx2", "avx512f"]}), has_bf16_isa({"cpu_flags": ["amx_bf16"]})
        (False, True)
    """
    return any(flag in (machine.get("cpu_flags") or ()) for flag in BF16_ISA)


def isa_summary(machine: Mapping[str, Any]) -> str:
    """``avx512_bf16: yes/no; AMX (amx_bf16, amx_tile): yes/no`` from the machine's CPU flags."""
    flags = set(machine.get("cpu_flags") or ())
    amx = [f for f in ("amx_bf16", "amx_tile") if f in flags]
    amx_text = "yes" if len(amx) == 2 else (f"partly ({', '.join(amx)})" if amx else "no")
    return f"avx512_bf16: {'yes' if 'avx512_bf16' in flags else 'no'}; AMX (amx_bf16, amx_tile): {amx_text}"


# --------------------------------------------------------------------------- how busy the machine was


# What a busy machine did to a stored run's timm figure (benchmarks/README.md, the 2-core AMD EPYC's runs).
BUSY_EFFECT = "timm's float32 inference: 2.97 img/s at load 3 vs 13.3 idle on a 2-core AMD EPYC"


def load_warning(load: float | None, cores: int) -> str | None:
    """The report's warning when the 1-minute load average ``load`` at the start of the run was over half the
    ``cores``; None when it was not, or is unknown. (Only the start is judged: the load at the end counts the
    run's own processes.)

    Example:
        >>> print(load_warning(1.9, 2))  # doctest: +ELLIPSIS
        Warning: the 1-minute load was 1.9 on 2 cores when the run started; ratios against timm collapse on a busy machine (...), rerun on an idle machine.
        >>> load_warning(1.0, 2), load_warning(None, 2), load_warning(3.1, 8)
        (None, None, None)
    """
    if load is None or load <= cores / 2:
        return None
    return (f"Warning: the 1-minute load was {round(load, 2):g} on {cores} cores when the run started; ratios "
            f"against timm collapse on a busy machine ({BUSY_EFFECT}), rerun on an idle machine.")


def start_load_warning(machine: Mapping[str, Any]) -> str | None:
    """:func:`load_warning` for a ``machine.json``: its ``load_avg`` (1, 5, 15 minutes, read as the run started)
    and ``cores``.

    Example:
        >>> start_load_warning({"cores": 2, "load_avg": [0.93, 0.95, 1.1], "load_avg_end": [1.76, 1.47, 1.28]})
        >>> start_load_warning({"cores": 4, "load_avg": [2.5, 1.0, 0.5]})[:40]
        'Warning: the 1-minute load was 2.5 on 4 '
    """
    loads = machine.get("load_avg") or [None]
    return load_warning(loads[0], int(machine.get("cores") or 1))


# --------------------------------------------------------------------------- oneDNN


_VERSION = re.compile(r"oneDNN (v\d[^,]*)")
_DTYPE = re.compile(r"\bsrc[:_]([a-z0-9]+)")


def parse_onednn_verbose(text: str) -> dict[str, Any]:
    """What oneDNN's verbose output says: its version, the CPU ISA and runtime it chose, and the
    implementation of each convolution primitive by source data type.

    Reads oneDNN 3 lines (``onednn_verbose,v1,primitive,exec,cpu,convolution,IMPL,...,src:bf16::...``) and
    oneDNN 2 ones (``onednn_verbose,exec,cpu,convolution,IMPL,...,src_bf16::...``, also ``dnnl_verbose``).
    ``uses_amx`` is whether any convolution implementation is an AMX one (its name contains ``amx``); None when no
    convolution was seen (oneDNN off, or not TensorFlow's path).

    Example (AMD EPYC with avx512_bf16, TensorFlow 2.21's oneDNN 3.7):
        >>> sample = '''onednn_verbose,v1,info,oneDNN v3.7.3 (commit N/A)
        ... onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2
        ... onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
        ... onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,forward_training,src:f32::blocked:acdb::f0 wei:f32::blocked:cdba::f0 bia:undef::undef::: dst:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb1_ic16oc16_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1,9.21
        ... onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_bf16,forward_training,src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB16a2b::f0 bia:undef::undef::: dst:bf16::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,mb1_ic16oc16_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1,0.15'''
        >>> info = parse_onednn_verbose(sample)
        >>> info["version"], info["runtime"], info["conv_impls"], info["uses_amx"]
        ('v3.7.3 (commit N/A)', 'threadpool, 2 threads', {'f32': ['brg_conv_fwd:avx512_core'], 'bf16': ['brg_conv_fwd:avx512_core_bf16']}, False)
        >>> onednn_summary(info)
        'oneDNN v3.7.3 (commit N/A), ISA: Intel AVX-512 with Intel DL Boost and bfloat16 support; oneDNN uses AMX: no (f32: brg_conv_fwd:avx512_core; bf16: brg_conv_fwd:avx512_core_bf16)'
    """
    info: dict[str, Any] = {"version": None, "isa": None, "runtime": None, "conv_impls": {}, "uses_amx": None}
    for line in text.splitlines():
        if not line.startswith(("onednn_verbose", "dnnl_verbose")):
            continue
        fields = line.strip().split(",")
        if fields[1:2] == ["v1"]:  # oneDNN 3's format marker
            fields = fields[:1] + fields[2:]
        if (match := _VERSION.search(line)) and info["version"] is None:
            info["version"] = match.group(1).strip()
        elif fields[1:2] == ["info"] and fields[2:3] == ["cpu"]:
            for field in fields[3:]:
                if field.startswith("isa:"):  # the ISA's name may hold commas: the rest of the line
                    info["isa"] = line.split("isa:", 1)[1].strip()
                    break
                if field.startswith("runtime:"):
                    info["runtime"] = field[8:]
                elif field.startswith("nthr:") and info["runtime"]:
                    info["runtime"] += f", {field[5:]} threads"
        elif "exec" in fields[1:3] and "convolution" in fields:
            i = fields.index("convolution")
            impl = fields[i + 1] if i + 1 < len(fields) else "?"
            dtype = next((m.group(1) for f in fields[i + 2:] if (m := _DTYPE.search(f))), "?")
            seen = info["conv_impls"].setdefault(dtype, [])
            if impl not in seen:
                seen.append(impl)
    if info["conv_impls"]:
        info["uses_amx"] = any("amx" in impl for impls in info["conv_impls"].values() for impl in impls)
    return info


def onednn_summary(info: Mapping[str, Any] | None) -> str:
    """One line for the report: version, ISA, and ``oneDNN uses AMX: yes/no (impl names seen)``.

    Example (an Intel Xeon with AMX):
        >>> onednn_summary(parse_onednn_verbose(
        ...     "onednn_verbose,info,oneDNN v2.7.3 (commit 0f2a1f9)\\n"
        ...     "onednn_verbose,info,cpu,isa:Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and "
        ...     "Intel AMX with bfloat16 and 8-bit integer support\\n"
        ...     "onednn_verbose,exec,cpu,convolution,brgconv:avx512_core_amx,forward_training,src_bf16::blocked:acdb:f0 "
        ...     "wei_bf16:p:blocked:AcdB16b32a2b:f0 dst_bf16::blocked:acdb:f0,,alg:convolution_direct,mb1_ic32oc32,0.05"))
        'oneDNN v2.7.3 (commit 0f2a1f9), ISA: Intel AVX-512 with float16, Intel DL Boost and bfloat16 support and Intel AMX with bfloat16 and 8-bit integer support; oneDNN uses AMX: yes (bf16: brgconv:avx512_core_amx)'
        >>> onednn_summary({"error": "no oneDNN output"})
        'oneDNN: not seen (no oneDNN output)'
    """
    if not info or info.get("error") or not (info.get("version") or info.get("conv_impls")):
        return f"oneDNN: not seen ({(info or {}).get('error') or 'no verbose output'})"
    text = f"oneDNN {info.get('version') or '(version unknown)'}"
    if info.get("isa"):
        text += f", ISA: {info['isa']}"
    impls = "; ".join(f"{dtype}: {', '.join(names)}" for dtype, names in info.get("conv_impls", {}).items())
    if info.get("uses_amx") is None:
        return text + "; oneDNN uses AMX: unknown (no convolution primitive seen)"
    return text + f"; oneDNN uses AMX: {'yes' if info['uses_amx'] else 'no'} ({impls})"


def probe_onednn(python: str | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """Run :data:`ONEDNN_PROBE` with ``ONEDNN_VERBOSE=1`` in a subprocess and parse what oneDNN printed
    (``{"error": why}`` when it printed nothing: oneDNN off, ``TF_ENABLE_ONEDNN_OPTS=0``, or a failure)."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        proc = subprocess.run([python or sys.executable, "-c", ONEDNN_PROBE], capture_output=True, text=True,
                              env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    info = parse_onednn_verbose(proc.stdout + "\n" + proc.stderr)
    if not (info["version"] or info["conv_impls"]):
        why = "oneDNN printed nothing" if proc.returncode == 0 else f"probe exited {proc.returncode}"
        return {"error": why + (" (TF_ENABLE_ONEDNN_OPTS=0)" if os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0" else "")}
    return info


# --------------------------------------------------------------------------- the kind of machine


_NOISE = {"r", "tm", "cpu", "processor", "with", "radeon", "graphics", "genuine", "authentic", "core", "gen", "th",
          "nd", "rd", "st"}
_VENDORS = {"genuineintel": "intel", "authenticamd": "amd"}


def _words(text: str, pattern: str = r"[a-z]+") -> list[str]:
    return re.findall(pattern, re.sub(r"\((r|tm)\)", " ", text.lower()))


def isa_key(flags: Any) -> str:
    """The instruction set that decides bf16 speed: ``amx``, ``avx512bf16``, ``avx512``, ``avx2`` or ``""``.

    Example:
        >>> isa_key(["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]), isa_key(["avx2"])
        ('amx', 'avx2')
    """
    flags = set(flags or ())
    for key, needs in (("amx", "amx_bf16"), ("avx512bf16", "avx512_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if needs in flags:
            return key
    return ""


def machine_slug(machine: Mapping[str, Any]) -> str:
    """A folder name for the kind of machine: CPU vendor and family, cores, key ISA (:func:`isa_key`), and the
    first GPU's name where there is one.

    Example:
        >>> machine_slug({"cpu": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", "cores": 2,
        ...               "cpu_flags": ["avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]})
        'intel-xeon-2c-amx'
        >>> machine_slug({"cpu": "AMD EPYC", "cores": 16, "cpu_flags": ["avx2"], "gpus": ["NVIDIA H200"]})
        'amd-epyc-16c-avx2-nvidia-h200'
    """
    words = [w for w in _words(str(machine.get("cpu") or "cpu")) if w not in _NOISE] or ["cpu"]
    vendor = _VENDORS.get(words[0], words[0])
    parts = [vendor, *words[1:2], f"{machine.get('cores') or 1}c", isa_key(machine.get("cpu_flags"))]
    gpus = machine.get("gpus") or []
    if gpus:
        parts.append("-".join(_words(str(gpus[0]), r"[a-z0-9]+")[:2]))
    return "-".join(p for p in parts if p)


def machine_info(peer_versions: Mapping[str, str] | None = None, onednn: bool = True) -> dict[str, Any]:
    """The machine and software the numbers come from: CPU, its bf16 ISA, oneDNN (:func:`probe_onednn`, unless
    ``onednn=False``), GPUs, versions (with ``peer_versions``, e.g. torch and timm of the peer's interpreter),
    the load average (read first: :func:`start_load_warning` judges it), and the :func:`machine_slug`.

    Example:
        >>> info = machine_info(onednn=False)
        >>> sorted(info)[:4], info["slug"] == machine_slug(info)
        (['cores', 'cpu', 'cpu_flags', 'gpus'], True)
    """
    load_avg = [round(v, 2) for v in os.getloadavg()]  # before the oneDNN probe's process adds to it
    cpu, flags = cpu_info()
    info: dict[str, Any] = {"cpu": cpu, "cpu_flags": flags, "cores": cores(), "gpus": [],
                            "memory_gb": None, "python": platform.python_version(), "os": platform.platform()}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    import keras
    import tensorflow as tf

    info["tensorflow"] = tf.__version__
    info["keras"] = keras.__version__
    info["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")
    if onednn:
        info["onednn_verbose"] = probe_onednn()
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        info["gpus"].append(details.get("device_name", gpu.name))
    info.update(peer_versions or {})
    info["load_avg"] = load_avg
    info["slug"] = machine_slug(info)
    return info
