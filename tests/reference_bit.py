"""An independent float64 NumPy forward pass of BiT, written from the spec (not from bit_keras).

It reads weights by their official ``.npz`` keys and implements: [0, 1] -> [-1, 1]; stem = zero-pad 3,
7x7/2 weight-standardized conv (VALID), zero-pad 1, 3x3/2 max-pool (VALID); pre-activation bottleneck
units (GN -> ReLU -> [1x1/s projection of that] -> 1x1 -> GN -> ReLU -> pad 1 -> 3x3/s -> GN -> ReLU ->
1x1 (4x) -> + shortcut); head GN -> ReLU -> mean over H, W -> dense (the 1x1 conv kernel [0, 0]).
Also the generator of random checkpoints in the official layout, from the spec's shapes.
"""

from __future__ import annotations

import numpy as np

WS_EPS = 1e-10
GN_EPS = 1e-5


def ws(kernel: np.ndarray) -> np.ndarray:
    k = kernel.astype(np.float64)
    mean = k.mean(axis=(0, 1, 2), keepdims=True)
    var = ((k - mean) ** 2).mean(axis=(0, 1, 2), keepdims=True)
    return (k - mean) / np.sqrt(var + WS_EPS)


def conv(x: np.ndarray, kernel: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Weight-standardized convolution: symmetric zero padding, then VALID."""
    w = ws(kernel)
    kh, kw = w.shape[:2]
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, wd, c = x.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, ho, wo, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            out += patch @ w[i, j]
    return out


def group_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, groups: int = 32) -> np.ndarray:
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + GN_EPS)
    return g.reshape(n, h, w, c) * gamma.astype(np.float64) + beta.astype(np.float64)


def max_pool_3x3_s2_zero_pad(x: np.ndarray) -> np.ndarray:
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    n, h, w, c = x.shape
    ho, wo = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    out = np.full((n, ho, wo, c), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (wo - 1) + 1:2, :])
    return out


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def forward(weights: dict, images01: np.ndarray, depths, groups: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """(pre_logits, logits or None) for images in [0, 1], float64 throughout."""
    p = "resnet/"
    x = images01.astype(np.float64) * 2.0 - 1.0
    x = conv(x, weights[p + "root_block/standardized_conv2d/kernel"], 2, 3)
    x = max_pool_3x3_s2_zero_pad(x)
    for b, units in enumerate(depths, start=1):
        for u in range(1, units + 1):
            k = f"{p}block{b}/unit{u:02d}/"
            stride = 2 if (u == 1 and b > 1) else 1
            pre = relu(group_norm(x, weights[k + "a/group_norm/gamma"], weights[k + "a/group_norm/beta"], groups))
            proj = k + "a/proj/standardized_conv2d/kernel"
            shortcut = conv(pre, weights[proj], stride, 0) if proj in weights else x
            y = conv(pre, weights[k + "a/standardized_conv2d/kernel"], 1, 0)
            y = relu(group_norm(y, weights[k + "b/group_norm/gamma"], weights[k + "b/group_norm/beta"], groups))
            y = conv(y, weights[k + "b/standardized_conv2d/kernel"], stride, 1)
            y = relu(group_norm(y, weights[k + "c/group_norm/gamma"], weights[k + "c/group_norm/beta"], groups))
            y = conv(y, weights[k + "c/standardized_conv2d/kernel"], 1, 0)
            x = shortcut + y
    x = relu(group_norm(x, weights[p + "group_norm/gamma"], weights[p + "group_norm/beta"], groups))
    pre_logits = x.mean(axis=(1, 2))
    if p + "head/conv2d/kernel" not in weights:
        return pre_logits, None
    kernel = weights[p + "head/conv2d/kernel"].astype(np.float64)[0, 0]
    return pre_logits, pre_logits @ kernel + weights[p + "head/conv2d/bias"].astype(np.float64)


def random_checkpoint(depths, width: float, num_classes: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """A random float32 checkpoint in the official key layout, shapes from the architecture spec.

    Kernels get a non-zero mean and arbitrary scale (weight standardization must remove both); GN
    parameters are away from their init so that a skipped or mis-mapped parameter shows.
    """
    rng = np.random.default_rng(seed)

    def kernel(*shape):
        return (rng.normal(0.3, 2.0, shape)).astype(np.float32)

    def gn(prefix, c):
        return {prefix + "gamma": rng.uniform(0.5, 1.5, c).astype(np.float32),
                prefix + "beta": rng.normal(0.0, 0.2, c).astype(np.float32)}

    p = "resnet/"
    root = int(64 * width)
    w = {p + "root_block/standardized_conv2d/kernel": kernel(7, 7, 3, root)}
    cin = root
    for b, units in enumerate(depths, start=1):
        mid = root * 2 ** (b - 1)
        cout = 4 * mid
        for u in range(1, units + 1):
            k = f"{p}block{b}/unit{u:02d}/"
            w.update(gn(k + "a/group_norm/", cin))
            if u == 1:
                w[k + "a/proj/standardized_conv2d/kernel"] = kernel(1, 1, cin, cout)
            w[k + "a/standardized_conv2d/kernel"] = kernel(1, 1, cin, mid)
            w.update(gn(k + "b/group_norm/", mid))
            w[k + "b/standardized_conv2d/kernel"] = kernel(3, 3, mid, mid)
            w.update(gn(k + "c/group_norm/", mid))
            w[k + "c/standardized_conv2d/kernel"] = kernel(1, 1, mid, cout)
            cin = cout
    w.update(gn(p + "group_norm/", cin))
    if num_classes:
        w[p + "head/conv2d/kernel"] = rng.normal(0, 0.03, (1, 1, cin, num_classes)).astype(np.float32)
        w[p + "head/conv2d/bias"] = rng.normal(0, 0.5, num_classes).astype(np.float32)
    return w
