"""Reading and writing BiT weights in the official ``.npz`` layout.

The official files hold flat arrays under ``resnet/...`` keys, kernels already HWIO::

    resnet/root_block/standardized_conv2d/kernel                 (7, 7, 3, 64w)
    resnet/block{b}/unit{NN}/{a,b,c}/group_norm/{gamma,beta}
    resnet/block{b}/unit{NN}/{a,b,c}/standardized_conv2d/kernel
    resnet/block{b}/unit01/a/proj/standardized_conv2d/kernel
    resnet/group_norm/{gamma,beta}
    resnet/head/conv2d/kernel                                    (1, 1, C, N)
    resnet/head/conv2d/bias                                      (N,)

Loading is strict: every backbone key of the file is used, every weight of the model is set, and a
missing key, an extra key or a shape mismatch raises :class:`WeightFileError` naming it. Nothing is
assigned unless the whole file checks out.

Example:
    >>> import os, tempfile
    >>> from bit_keras.resnet import resnet_v2
    >>> model = resnet_v2((1, 1, 1, 1), 0.5, num_classes=10)
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.npz")
    >>> _ = save_npz(model, path)
    >>> load_npz(model, path)
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Mapping

import keras
import numpy as np

from bit_keras.errors import WeightFileError
from bit_keras.layers import GroupNorm, StandardizedConv2D
from bit_keras.resnet import HEAD_NAME, ArchSpec

PREFIX = "resnet/"
HEAD_KERNEL = PREFIX + "head/conv2d/kernel"
HEAD_BIAS = PREFIX + "head/conv2d/bias"


def _layer_key(layer: keras.layers.Layer) -> str:
    return PREFIX + layer.name.replace(".", "/")


def backbone_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """The model's backbone weights by official ``.npz`` key (no head).

    Example:
        >>> from bit_keras.resnet import resnet_v2
        >>> keys = backbone_variables(resnet_v2((1, 1, 1, 1), 0.5))
        >>> "resnet/root_block/standardized_conv2d/kernel" in keys
        True
    """
    out: dict[str, keras.Variable] = {}
    for layer in model.layers:
        if isinstance(layer, StandardizedConv2D):
            out[_layer_key(layer) + "/kernel"] = layer.kernel
        elif isinstance(layer, GroupNorm):
            out[_layer_key(layer) + "/gamma"] = layer.gamma
            out[_layer_key(layer) + "/beta"] = layer.beta
    if not out:
        raise WeightFileError(f"model {model.name!r} has no BiT layers (StandardizedConv2D/GroupNorm) to load into")
    return out


def head_layer(model: keras.Model) -> keras.layers.Dense | None:
    """The model's Dense head, or None for a feature model."""
    try:
        layer = model.get_layer(HEAD_NAME)
    except ValueError:
        return None
    return layer if isinstance(layer, keras.layers.Dense) else None


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of a weight file, with corrupt or truncated files reported clearly.

    Example:
        >>> read_npz("/no/such/file.npz")
        Traceback (most recent call last):
        ...
        bit_keras.weights.WeightFileError: weight file /no/such/file.npz does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"weight file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, zipfile.LargeZipFile) as err:
        raise WeightFileError(
            f"weight file {path} is corrupt or truncated ({type(err).__name__}: {err}); "
            "delete it and download it again"
        ) from err


def infer_arch(weights: Mapping[str, np.ndarray]) -> ArchSpec:
    """Depths and width of the network a weight dict was saved from.

    Example:
        >>> from bit_keras.resnet import resnet_v2
        >>> model = resnet_v2((1, 2, 1, 1), 0.5)
        >>> infer_arch({k: v.numpy() for k, v in backbone_variables(model).items()})
        ArchSpec(depths=(1, 2, 1, 1), width=0.5, groups=32)
    """
    root = weights.get(PREFIX + "root_block/standardized_conv2d/kernel")
    if root is None or root.ndim != 4:
        raise WeightFileError("not a BiT weight file: no 4-D resnet/root_block/standardized_conv2d/kernel")
    depths = []
    for b in range(1, 5):
        units = {k.split("/")[2] for k in weights if k.startswith(f"{PREFIX}block{b}/unit")}
        depths.append(len(units))
    return ArchSpec(tuple(depths), root.shape[-1] / 64)  # type: ignore[arg-type]


def _describe(spec: ArchSpec) -> str:
    from bit_keras.resnet import ARCHS

    for name, known in ARCHS.items():
        if known == spec:
            return name
    width = int(spec.width) if float(spec.width).is_integer() else spec.width
    return f"depths {spec.depths}, width {width}"


def load_npz(
    model: keras.Model,
    weights: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    load_head: bool | None = None,
) -> None:
    """Load an official-layout weight file (or dict) into a BiT model, strictly.

    Args:
        model: a model built by :func:`bit_keras.resnet.resnet_v2` / :func:`bit_keras.create_model`.
        weights: a path to an ``.npz`` file or a dict of arrays under the official keys.
        load_head: True to require and load the file's head, False to leave the model's head as it is
            (the BiT transfer init: zeros), None (default) to load it when the model's head has the
            checkpoint's number of classes.

    Raises:
        WeightFileError: corrupt file, missing or extra keys, shape mismatches (all named).
    """
    source = str(weights) if isinstance(weights, (str, os.PathLike)) else "the weight dict"
    arrays = read_npz(weights) if isinstance(weights, (str, os.PathLike)) else dict(weights)
    targets = backbone_variables(model)
    head_keys = {HEAD_KERNEL, HEAD_BIAS}

    missing = sorted(set(targets) - set(arrays))
    extra = sorted(set(arrays) - set(targets) - head_keys)
    mismatched = [
        f"{key}: file {tuple(arrays[key].shape)}, model {tuple(var.shape)}"
        for key, var in targets.items()
        if key in arrays and tuple(arrays[key].shape) != tuple(var.shape)
    ]
    if missing or extra or mismatched:
        lines = [f"cannot load {source} into model {model.name!r}:"]
        for label, items in (("missing keys", missing), ("unexpected keys", extra), ("shape mismatches", mismatched)):
            if items:
                shown = items[:8] + ([f"... and {len(items) - 8} more"] if len(items) > 8 else [])
                lines.append(f"  {len(items)} {label}: " + "; ".join(shown))
        try:
            lines.append(f"  the file holds a {_describe(infer_arch(arrays))} network; "
                         "create the model with the matching architecture")
        except WeightFileError:
            lines.append("  the file does not look like a BiT checkpoint")
        raise WeightFileError("\n".join(lines))

    head = head_layer(model)
    file_has_head = HEAD_KERNEL in arrays and HEAD_BIAS in arrays
    head_values = None
    if file_has_head:
        kernel = arrays[HEAD_KERNEL]
        kernel = kernel.reshape(kernel.shape[-2:]) if kernel.ndim == 4 else kernel
        head_values = (kernel, arrays[HEAD_BIAS])
    if load_head is None:
        load_head = bool(head is not None and file_has_head and head.kernel.shape == head_values[0].shape)
    if load_head:
        if head is None:
            raise WeightFileError(f"load_head=True but model {model.name!r} has no head (num_classes=None)")
        if head_values is None:
            raise WeightFileError(f"load_head=True but {source} has no {HEAD_KERNEL} / {HEAD_BIAS}")
        if tuple(head.kernel.shape) != head_values[0].shape or tuple(head.bias.shape) != head_values[1].shape:
            raise WeightFileError(
                f"head of {source} is {head_values[0].shape} but the model's is {tuple(head.kernel.shape)}; "
                "pass num_classes equal to the checkpoint's classes, or another value for a new zero head"
            )

    for key, var in targets.items():
        var.assign(arrays[key].astype(var.dtype))
    if load_head:
        head.kernel.assign(head_values[0].astype(head.kernel.dtype))
        head.bias.assign(head_values[1].astype(head.bias.dtype))


def model_to_npz_dict(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights under the official keys (head as a 1x1 conv, as in the published files)."""
    arrays = {key: np.asarray(var.numpy()) for key, var in backbone_variables(model).items()}
    head = head_layer(model)
    if head is not None:
        kernel = np.asarray(head.kernel.numpy())
        arrays[HEAD_KERNEL] = kernel.reshape((1, 1, *kernel.shape))
        arrays[HEAD_BIAS] = np.asarray(head.bias.numpy())
    return arrays


def save_npz(model: keras.Model, path: str | os.PathLike) -> Path:
    """Write the model's weights as an official-layout ``.npz``, atomically (temp file + rename).

    Example:
        >>> import os, tempfile
        >>> from bit_keras.resnet import resnet_v2
        >>> p = save_npz(resnet_v2((1, 1, 1, 1), 0.5), os.path.join(tempfile.mkdtemp(), "w.npz"))
        >>> p.suffix
        '.npz'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **model_to_npz_dict(model))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
