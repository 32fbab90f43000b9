"""The two layers that make a ResNet-v2 a BiT network.

* :class:`StandardizedConv2D`: a bias-free ``Conv2D`` whose kernel is standardized per output filter on
  every call, ``(w - mean) / sqrt(var + eps)`` over ``(kh, kw, cin)`` with the biased variance and
  ``eps = 1e-10`` (the published checkpoints' formula).
* :class:`GroupNorm`: group normalization with BiT's defaults, 32 groups and ``epsilon = 1e-5``
  (``keras.layers.GroupNormalization`` defaults to 1e-3, which alone breaks parity).

Under a mixed-precision policy both compute their statistics in float32 from the float32 variables and
cast only the result to the compute dtype
(a float64 model computes everything in float64).

Example:
    >>> import numpy as np
    >>> from bit_keras.models.layers import StandardizedConv2D, GroupNorm
    >>> x = np.random.rand(2, 8, 8, 32).astype("float32")
    >>> y = GroupNorm()(StandardizedConv2D(32, 3, padding="same")(x))
    >>> tuple(y.shape)
    (2, 8, 8, 32)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import keras
from keras import ops

from bit_keras.errors import ConfigError
from bit_keras.models import native
from bit_keras.models.spec import GN_GROUPS

WS_EPSILON = 1e-10
GN_EPSILON = 1e-5


def stats_dtype(compute_dtype: str) -> str:
    """The dtype statistics are computed in: float32, or float64 for a float64 layer.

    Example:
        >>> stats_dtype("bfloat16"), stats_dtype("float64")
        ('float32', 'float64')
    """
    return "float64" if compute_dtype == "float64" else "float32"


def standardize_kernel(kernel: Any, epsilon: float = WS_EPSILON) -> Any:
    """Weight standardization of an HWIO kernel: zero mean, unit (biased) variance per output filter.

    Forward: centre once and reuse it for the variance (two passes, as stable as the textbook formula), then
    multiply by ``rsqrt``; sums over a static count, not ``ops.mean`` (Keras' mean on JAX computes float64
    input in float32).

    Backward (a hand-written gradient, exact): with ``r = rsqrt(var + eps)`` and ``w_hat`` the output,
    ``dw = r (g - mean(g) - w_hat mean(g w_hat))`` over each filter's ``(kh, kw, cin)``: two reductions and
    three full-size element-wise ops, where autodiff of the forward makes about twice as many passes (with
    ``Tile`` and ``Neg`` ops) over the 23.5 M kernel values of an R50x1 in every training step. Keras ops only,
    so every backend runs the same gradient (checked against float64 autodiff by tests/test_layers.py and
    tests/backend_checks.py).

    Example:
        >>> import numpy as np
        >>> w = standardize_kernel(np.random.rand(3, 3, 4, 8).astype("float32"))
        >>> bool(abs(float(keras.ops.mean(w))) < 1e-5)
        True
    """
    kernel = ops.convert_to_tensor(kernel)
    n = 1.0 / (kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
    axes = (0, 1, 2)

    @ops.custom_gradient
    def standardize(w: Any) -> Any:
        centered = w - ops.sum(w, axis=axes, keepdims=True) * n
        r = ops.rsqrt(ops.sum(ops.square(centered), axis=axes, keepdims=True) * n + epsilon)
        w_hat = centered * r

        def grad(*args: Any, upstream: Any = None) -> Any:
            # TensorFlow and JAX pass the output gradient alone; PyTorch passes the inputs and upstream=.
            g = args[0] if upstream is None else upstream
            with keras.name_scope("standardized_conv2d"):  # named for profiles (backward ops lose the layer's scope)
                mean_g = ops.sum(g, axis=axes, keepdims=True) * n
                mean_g_w_hat = ops.sum(g * w_hat, axis=axes, keepdims=True) * n
                return (g - mean_g) * r - w_hat * (r * mean_g_w_hat)

        return w_hat, grad

    return standardize(kernel)


@keras.saving.register_keras_serializable(package="bit_keras")
class StandardizedConv2D(keras.layers.Conv2D):
    """``Conv2D`` with weight standardization; no bias (BiT's ``StdConv2d``).

    The kernel variable keeps the raw (checkpoint) values; standardization happens in
    :meth:`convolution_op` at every call, so gradients flow through it as in the reference.

    Example:
        >>> import numpy as np
        >>> conv = StandardizedConv2D(16, 1)
        >>> tuple(conv(np.ones((1, 4, 4, 8), "float32")).shape)
        (1, 4, 4, 16)
    """

    def __init__(self, filters: int, kernel_size: Any, *, epsilon: float = WS_EPSILON, **kwargs: Any):
        if kwargs.pop("use_bias", False):
            raise ConfigError("StandardizedConv2D has no bias (BiT convolutions are bias-free); drop use_bias=True.")
        # Inputs and weights are cast by hand in `convolution_op`: the statistics come from the float32
        # master kernel, not from a copy already rounded to the compute dtype.
        kwargs["autocast"] = False
        super().__init__(filters, kernel_size, use_bias=False, **kwargs)
        self.epsilon = float(epsilon)

    def add_weight(self, *args: Any, **kwargs: Any) -> Any:
        # A mixed-precision layer call would otherwise hand `convolution_op` a kernel cast to bf16/fp16.
        kwargs["autocast"] = False
        return super().add_weight(*args, **kwargs)

    def standardized_kernel(self) -> Any:
        """The standardized kernel in the statistics dtype (float32; float64 for a float64 layer)."""
        return self._standardize(self.kernel, stats_dtype(self.compute_dtype))

    def _standardize(self, kernel: Any, dtype: str) -> Any:
        # The statistics come from the float32 (float64) kernel; the result is in `dtype`. On TensorFlow's CPU a
        # native kernel writes it in one pass, a bf16 result without a float32 copy (bit_keras.models.native).
        kernel = ops.cast(ops.convert_to_tensor(kernel), stats_dtype(self.compute_dtype))
        if kernel.dtype == "float32" and native.usable(dtype):
            return native.standardize(kernel, self.epsilon, dtype)
        return ops.cast(standardize_kernel(kernel, self.epsilon), dtype)

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        standardized = _PRECOMPUTED.get(id(self))
        if standardized is None:
            standardized = self._standardize(kernel, self.compute_dtype)
        kernel = ops.cast(standardized, self.compute_dtype)
        inputs = ops.cast(inputs, self.compute_dtype)
        return super().convolution_op(inputs, kernel)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("use_bias", None)
        config.pop("bias_initializer", None)
        config.pop("bias_regularizer", None)
        config.pop("bias_constraint", None)
        config["epsilon"] = self.epsilon
        return config


# id(layer) -> its standardized kernel, while :func:`precomputed_standardization` is active (tracing one step).
_PRECOMPUTED: dict[int, Any] = {}


@contextlib.contextmanager
def precomputed_standardization(layers: Sequence[StandardizedConv2D], kernels: Sequence[Any]) -> Iterator[None]:
    """Inside the block, each of ``layers`` convolves with the given standardized kernel instead of standardizing
    its own at every call.

    The training step uses it to standardize once per step when a batch is cut into micro-batches
    (``batch_split``): the standardized kernels are computed once, each micro-batch's gradient is taken with
    respect to them, and the sum is carried back through the standardization once
    (:class:`bit_keras.train.step.TrainStep`).

    Example:
        >>> import numpy as np
        >>> conv = StandardizedConv2D(2, 1)
        >>> x = np.ones((1, 2, 2, 3), "float32")
        >>> _ = conv(x)
        >>> with precomputed_standardization([conv], [np.zeros((1, 1, 3, 2), "float32")]):
        ...     float(keras.ops.max(keras.ops.abs(conv(x))))
        0.0
    """
    if len(layers) != len(kernels):
        raise ConfigError(f"{len(layers)} layers but {len(kernels)} standardized kernels")
    saved = {id(layer): _PRECOMPUTED.get(id(layer)) for layer in layers}
    _PRECOMPUTED.update({id(layer): kernel for layer, kernel in zip(layers, kernels)})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                _PRECOMPUTED.pop(key, None)
            else:
                _PRECOMPUTED[key] = value


def group_norm(x: Any, gamma: Any, beta: Any, groups: int = GN_GROUPS, epsilon: float = GN_EPSILON) -> Any:
    """Group normalization of channels-last ``x`` (rank >= 2) with per-channel ``gamma`` and ``beta``.

    Forward: per-channel sums over the spatial axes (a reduction that keeps the contiguous channel axis),
    then sums over each group's channels on the small (N, C) result; the variance is that of the centred
    values (two passes, as stable as the textbook formula); the output is one multiply-add with a
    per-(sample, channel) scale. No 5-D reshape and no reduction over non-adjacent axes.

    Backward (a hand-written gradient, exact): with ``r = rsqrt(var + eps)`` and ``xhat = (x - mean) r``,
    ``dx = r (gamma dy - mean_g(gamma dy) - xhat mean_g(gamma dy xhat))``, computed from two per-channel
    sums (of ``dy`` and ``dy * (x - mean)``) and one full-size multiply-add; only the centred input and
    (N, C) statistics are kept for it. Autodiff of the forward makes ~3x the full-size passes.

    Written with ``keras.ops`` and ``keras.ops.custom_gradient`` only, so the same code (and the same
    gradient) runs on the TensorFlow, JAX and PyTorch backends; tests/test_backends.py checks it against float64
    autodiff on each. On TensorFlow it costs 1.4-1.5x less CPU per image for BiT-R50x1 than the textbook layer
    (benchmarks/proposals/README.md).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(3, 2, (2, 4, 4, 8)).astype("float32")
        >>> y = np.asarray(group_norm(x, np.ones(8, "float32"), np.zeros(8, "float32"), groups=2))
        >>> g = y.reshape(2, 16, 2, 4)
        >>> bool(np.allclose(g.mean(axis=(1, 3)), 0, atol=1e-5)), bool(np.allclose(g.std(axis=(1, 3)), 1, atol=1e-3))
        (True, True)
    """
    rank = len(x.shape)
    channels = x.shape[-1]
    per_group = channels // groups
    spatial = tuple(range(1, rank - 1))
    to_full = (-1,) + (1,) * (rank - 2) + (channels,)

    def channel_sums(t: Any) -> Any:
        return ops.sum(t, axis=spatial) if spatial else t

    def group_mean(sums: Any, count: Any) -> Any:
        # (N, C) per-channel sums -> (N, C) mean over each channel's group (spatial axes already summed).
        g = ops.sum(ops.reshape(sums, (-1, groups, per_group)), axis=-1, keepdims=True)
        g = ops.repeat(g, per_group, axis=-1)
        return ops.reshape(g, (-1, channels)) / count

    def full(t: Any) -> Any:
        return ops.reshape(t, to_full)

    @ops.custom_gradient
    def normalize(x: Any, gamma: Any, beta: Any) -> Any:
        elements = per_group
        for size in ops.shape(x)[1:-1]:  # static ints, or (TensorFlow, unknown sizes) scalar tensors
            elements = elements * size
        count = ops.cast(elements, x.dtype)
        mean = group_mean(channel_sums(x), count)
        centered = x - full(mean)
        r = ops.rsqrt(group_mean(channel_sums(ops.square(centered)), count) + epsilon)
        scale = r * gamma
        y = centered * full(scale) + beta

        def grad(*args: Any, upstream: Any = None) -> tuple[Any, Any, Any]:
            # TensorFlow and JAX pass the output gradient alone; PyTorch passes the inputs and upstream=.
            dy = args[0] if upstream is None else upstream
            with keras.name_scope("group_norm"):  # named for profiles (backward ops lose the layer's scope)
                s_dy = channel_sums(dy)
                s_dy_xhat = r * channel_sums(dy * centered)
                a = group_mean(gamma * s_dy, count)
                b = group_mean(gamma * s_dy_xhat, count)
                # From the centred values, not from x: no cancellation when |mean| >> std.
                dx = dy * full(scale) + centered * full(-r * r * b) + full(-r * a)
                return dx, ops.sum(s_dy_xhat, axis=0), ops.sum(s_dy, axis=0)

        return y, grad

    return normalize(ops.convert_to_tensor(x), ops.convert_to_tensor(gamma), ops.convert_to_tensor(beta))


@keras.saving.register_keras_serializable(package="bit_keras")
class GroupNorm(keras.layers.Layer):
    """Group normalization over the last axis with BiT's defaults (32 groups, epsilon 1e-5), optionally followed
    by a ReLU (``activation="relu"``, as in every pre-activation unit: timm's ``GroupNormAct``).

    Statistics are the biased mean and variance over (H, W, channels of the group), computed in float32;
    per-channel ``gamma`` (init 1) and ``beta`` (init 0). Works on inputs of any rank >= 2 (channels last).

    On TensorFlow on a CPU, float32 and bfloat16 layers run a native kernel that makes two passes over the
    activation each way, the ReLU fused in, reading bf16 input without a float32 copy
    (:mod:`bit_keras.models.native`; ``BIT_KERAS_NATIVE_OPS=0`` turns it off). Elsewhere (JAX, PyTorch, a GPU,
    XLA, float16/float64, SavedModel export) the layer runs :func:`group_norm` in Keras ops: same results to
    float rounding.

    Example:
        >>> import numpy as np
        >>> y = GroupNorm(groups=2, activation="relu")(np.random.rand(1, 4, 4, 4).astype("float32"))
        >>> tuple(y.shape), bool(np.asarray(y).min() >= 0)
        ((1, 4, 4, 4), True)
    """

    def __init__(self, groups: int = GN_GROUPS, epsilon: float = GN_EPSILON, activation: str | None = None,
                 **kwargs: Any):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        if activation not in (None, "relu"):
            raise ConfigError(f"GroupNorm activation={activation!r} is not supported; use None or 'relu' "
                              f"(or follow the layer with the activation you need)")
        self.groups = int(groups)
        self.epsilon = float(epsilon)
        self.activation = activation

    def build(self, input_shape: tuple) -> None:
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ConfigError(
                f"GroupNorm '{self.name}': {channels} channels cannot be split into {self.groups} groups; "
                f"use a width whose channel counts are multiples of {self.groups}, or pass groups=<a divisor>."
            )
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones", autocast=False)
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros", autocast=False)

    def call(self, inputs: Any) -> Any:
        relu = self.activation == "relu"
        if native.usable(self.compute_dtype):
            # bf16 in and out under a bf16 policy; anything else (a float32 input to a bf16 layer too) is
            # normalized from its float32 values, as on the Keras-ops path.
            x = inputs if inputs.dtype == "bfloat16" == self.compute_dtype else ops.cast(inputs, "float32")
            y = native.group_norm_relu(x, ops.convert_to_tensor(self.gamma), ops.convert_to_tensor(self.beta),
                                       self.groups, self.epsilon, relu)
            return ops.cast(y, self.compute_dtype)
        dtype = stats_dtype(self.compute_dtype)
        x = ops.cast(inputs, dtype)
        y = group_norm(x, ops.cast(self.gamma, dtype), ops.cast(self.beta, dtype), self.groups, self.epsilon)
        return ops.cast(ops.relu(y) if relu else y, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon, "activation": self.activation}
