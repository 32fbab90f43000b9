"""Native CPU kernels for the TensorFlow backend: GroupNorm fused with its ReLU, and weight standardization,
each forward and with its exact backward.

TensorFlow runs the Keras-ops GroupNorm (:func:`bit_keras.models.layers.group_norm`) as about nine element-wise
and reduction passes over the activation each way, plus float32 casts around it under bf16, and the ReLU that
follows it as two more. The kernel in ``kernels/group_norm.cc`` makes two passes each way over the bf16 or
float32 activation, with float32 statistics, the ReLU fused in. Weight standardization in Keras ops is about
seven passes over the float32 kernel each way plus a cast to bf16; ``kernels/standardize.cc`` makes two each
way and writes the bf16 kernel directly (benchmarks/README.md has what each buys).

**The build.** On first use the kernels are compiled with the C++ compiler (``$CXX``, else ``g++``) against the
installed TensorFlow's headers and library (``tf.sysconfig``) with ``-O3 -march=native``, into
``<root>/<key>/``, where ``<root>`` is ``$BIT_KERAS_NATIVE_CACHE`` or ``native/`` in the download cache
(``$BIT_KERAS_HOME`` or ``~/.cache/bit_keras``). The key
hashes the source, TensorFlow's version, the flags and the CPU's ISA flags, so a new TensorFlow or another CPU
gets its own build. A file lock makes parallel processes build once; the library is written atomically
(about 20 s on 2 cores, once). :func:`build` runs it ahead of time.

**When the layers use it** (:func:`usable`): Keras on TensorFlow; float32 or bfloat16; no GPU or TPU in the
process (the kernel is CPU-only); not inside XLA (``jit_compile``); not while a SavedModel is traced
(``tf.saved_model.save``, Keras' ``model.export`` / ``ExportArchive``, ``hub_export.export``: an exported graph
must load where bit-keras is absent); not inside ``native_ops(False)``; and ``BIT_KERAS_NATIVE_OPS`` allows it.
Otherwise the Keras-ops path runs, with the same results to float rounding.

``BIT_KERAS_NATIVE_OPS``: ``auto`` (the default: use the kernel when it builds; when the build fails, warn once,
naming the compiler's error, and use the Keras-ops path), ``0`` (never), ``1`` (a failed build raises
:class:`~bit_keras.errors.NativeOpsError`).

Example:
    >>> import numpy as np, keras
    >>> from bit_keras.models.native import group_norm_relu, native_ops, usable
    >>> with native_ops(False):
    ...     usable("float32")
    False
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 64)).astype("float32")
    >>> y = group_norm_relu(x, np.ones(64, "float32"), np.zeros(64, "float32")) if usable("float32") else None
    >>> y is None or bool(np.asarray(y).min() >= 0.0)
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bit_keras.errors import ConfigError, NativeOpsError

__all__ = ["CACHE_ENV", "ENV", "build", "group_norm_relu", "library", "native_ops", "standardize", "usable"]

ENV = "BIT_KERAS_NATIVE_OPS"
CACHE_ENV = "BIT_KERAS_NATIVE_CACHE"
KERNELS = Path(__file__).with_name("kernels")
SOURCES = tuple(sorted(KERNELS.glob("*.cc")))  # group_norm.cc, standardize.cc
HEADERS = tuple(sorted(KERNELS.glob("*.h")))  # bf16.h
_DTYPES = ("float32", "bfloat16")
_CXXFLAGS = ("-shared", "-fPIC", "-O3", "-march=native", "-Wno-deprecated-declarations", "-Wno-interference-size")
_log = logging.getLogger(__name__)

_state = threading.local()
_lock = threading.Lock()
_library: Any = None  # the loaded op module; False after a failed build (auto mode)
_accelerators: bool | None = None


def mode() -> str:
    """``BIT_KERAS_NATIVE_OPS`` as ``"auto"``, ``"off"`` or ``"on"``; anything else raises ConfigError.

    Example:
        >>> mode() in ("auto", "off", "on")
        True
    """
    value = os.environ.get(ENV, "auto").strip().lower()
    if value in ("", "auto"):
        return "auto"
    if value in ("0", "off", "false", "no"):
        return "off"
    if value in ("1", "on", "true", "yes"):
        return "on"
    raise ConfigError(f"{ENV}={value!r} is not a choice; set it to auto (the default), 0 (never use the native "
                      f"kernels) or 1 (always; a failed build raises)")


@contextlib.contextmanager
def native_ops(enabled: bool) -> Iterator[None]:
    """Inside the block, layers traced or run in this thread use the native kernels only if ``enabled``.

    ``native_ops(False)`` gives the Keras-ops graph, for a SavedModel exported by hand with
    ``tf.saved_model.save`` of a function traced outside it (bit-keras's own exports do this themselves).
    ``native_ops(True)`` cannot turn them on where :func:`usable`'s other rules say no.

    Example:
        >>> with native_ops(False):
        ...     usable("bfloat16")
        False
    """
    previous = getattr(_state, "enabled", True)
    _state.enabled = bool(enabled)
    try:
        yield
    finally:
        _state.enabled = previous


def _key(compiler: str, flags: list[str]) -> str:
    import tensorflow as tf

    digest = hashlib.sha256()
    for source in (*SOURCES, *HEADERS):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for part in (tf.__version__, tf.sysconfig.get_lib(), compiler, *flags, platform.machine(), _cpu_flags()):
        digest.update(b"\0" + str(part).encode())
    return digest.hexdigest()[:16]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _flags() -> tuple[str, list[str]]:
    import tensorflow as tf

    compiler = os.environ.get("CXX", "g++")
    return compiler, [*_CXXFLAGS, *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]


def build(cache: str | os.PathLike | None = None) -> Path:
    """Compile the kernels for this TensorFlow and CPU (once; later calls return the cached library's path).

    Raises :class:`~bit_keras.errors.NativeOpsError` with the compiler's command and error when it fails (no
    compiler: install one, e.g. ``apt-get install g++``, or set ``BIT_KERAS_NATIVE_OPS=0``).

    Example:
        >>> build().suffix
        '.so'
    """
    import fcntl

    from bit_keras.atomic import atomic_path
    from bit_keras.models.download import cache_dir

    compiler, flags = _flags()
    root = os.environ.get(CACHE_ENV) or cache_dir() / "native"
    folder = Path(cache) if cache is not None else Path(root).expanduser() / _key(compiler, flags)
    target = folder / "bit_keras_ops.so"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same library
        if target.is_file():
            return target
        with atomic_path(target) as tmp:
            command = [compiler, *map(str, SOURCES), "-o", str(tmp), *flags]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as err:
                raise NativeOpsError(_failure(command, str(err))) from err
            if result.returncode != 0 or not tmp.is_file():
                raise NativeOpsError(_failure(command, result.stderr))
    return target


def _failure(command: list[str], detail: str) -> str:
    errors = [line for line in detail.splitlines() if "error" in line.lower()] or detail.splitlines()
    return (f"could not build bit-keras's native GroupNorm and weight-standardization kernels with {shlex.join(command[:1])}: "
            f"{' | '.join(errors[:3]) or 'no output'}. Install a C++ compiler (e.g. apt-get install g++) or point "
            f"$CXX at one; or set {ENV}=0 to use the Keras-ops layers (slower on CPU, same results).\n"
            f"command: {shlex.join(command)}")


def library() -> Any:
    """The loaded kernel module (``tf.load_op_library``), building it first if needed; ``None`` when the build
    failed in ``auto`` mode (warned once) or ``BIT_KERAS_NATIVE_OPS=0``.

    Example:
        >>> lib = library()
        >>> lib is None or hasattr(lib, "bit_group_norm")
        True
    """
    global _library
    current = mode()
    if current == "off":
        return None
    with _lock:
        if _library is None:
            try:
                path = build()
                import tensorflow as tf

                _library = tf.load_op_library(str(path))
                _register_gradient(_library)
            except (NativeOpsError, tf_errors()) as err:
                if current == "on":
                    raise NativeOpsError(str(err)) from err
                _log.warning("%s\nbit-keras runs GroupNorm and weight standardization with Keras ops instead.", err)
                _library = False
    if _library is False and current == "on":
        raise NativeOpsError(f"{ENV}=1 but the native kernels did not build in this process (see the warning above)")
    return _library or None


def _required_library(caller: str) -> Any:
    lib = library()
    if lib is None:
        raise NativeOpsError(f"the native kernels are off ({ENV}={os.environ.get(ENV)!r}) or did not build; "
                             f"check bit_keras.models.native.usable(dtype) before calling {caller}")
    return lib


def tf_errors() -> type[BaseException]:
    import tensorflow as tf

    return tf.errors.OpError


def _register_gradient(lib: Any) -> None:
    import tensorflow as tf

    @tf.RegisterGradient("BitStandardize")
    def _standardize_grad(op: Any, g: Any, _dmean: Any, _drstd: Any) -> Any:
        with tf.name_scope("standardized_conv2d"):  # named for profiles
            return lib.bit_standardize_grad(g, op.inputs[0], op.outputs[1], op.outputs[2])

    @tf.RegisterGradient("BitGroupNorm")
    def _grad(op: Any, dy: Any, _dmean: Any, _drstd: Any) -> Any:
        with tf.name_scope("group_norm"):  # named for profiles (backward ops lose the layer's scope)
            return lib.bit_group_norm_grad(dy, op.inputs[0], op.inputs[1], op.inputs[2], op.outputs[1],
                                           op.outputs[2], groups=op.get_attr("groups"), relu=op.get_attr("relu"))


def _has_accelerators() -> bool:
    global _accelerators
    if _accelerators is None:
        import tensorflow as tf

        _accelerators = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    return _accelerators


def _tracing_for_export() -> bool:
    from tensorflow.python.saved_model import save_context

    if save_context.in_save_context():
        return True
    frame = sys._getframe(2)
    while frame is not None:  # Keras traces its export endpoints before tf.saved_model.save
        if frame.f_globals.get("__name__", "").startswith(("keras.src.export", "hub_export")):
            return True
        frame = frame.f_back
    return False


def _in_xla() -> bool:
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def usable(dtype: str) -> bool:
    """Whether a layer computing in ``dtype`` runs the native kernel here and now (the rules above).

    Example:
        >>> usable("float16")
        False
    """
    if dtype not in _DTYPES or not getattr(_state, "enabled", True) or mode() == "off":
        return False
    import keras

    if keras.backend.backend() != "tensorflow" or _has_accelerators() or _in_xla() or _tracing_for_export():
        return False
    return library() is not None


def group_norm_relu(x: Any, gamma: Any, beta: Any, groups: int = 32, epsilon: float = 1e-5, relu: bool = True) -> Any:
    """GroupNorm of channels-last ``x`` (float32 or bfloat16, rank >= 2), then ReLU if ``relu``: the output has
    ``x``'s dtype; ``gamma`` and ``beta`` are float32; the statistics are float32. Differentiable (exact gradient).

    Call it where :func:`usable` says so (it builds the kernel if needed).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(1).normal(5, 2, (1, 3, 3, 32)).astype("float32")
        >>> y = np.asarray(group_norm_relu(x, np.ones(32, "float32"), np.zeros(32, "float32"), groups=8, relu=False))
        >>> bool(abs(y.mean()) < 1e-5)
        True
    """
    y, _, _ = _required_library("group_norm_relu").bit_group_norm(x, gamma, beta, groups=int(groups), epsilon=float(epsilon), relu=bool(relu))
    return y


def standardize(kernel: Any, epsilon: float = 1e-10, dtype: str = "float32") -> Any:
    """Weight standardization of a float32 kernel (rank >= 2, output filters last), per output filter over all
    other axes with the biased variance, returned in ``dtype`` (float32 or bfloat16). Differentiable (exact
    gradient, float32).

    Call it where :func:`usable` says so for ``dtype``.

    Example:
        >>> import numpy as np
        >>> w = np.asarray(standardize(np.random.default_rng(0).normal(3, 2, (3, 3, 8, 16)).astype("float32")))
        >>> bool(np.allclose(w.mean(axis=(0, 1, 2)), 0, atol=1e-5)), bool(np.allclose(w.std(axis=(0, 1, 2)), 1, atol=1e-4))
        (True, True)
    """
    import tensorflow as tf

    w_hat, _, _ = _required_library("standardize").bit_standardize(kernel, T=tf.as_dtype(dtype), epsilon=float(epsilon))
    return w_hat
