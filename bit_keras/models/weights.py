"""Reading and writing BiT weights in the official ``.npz`` layout.

The official files hold flat arrays under ``resnet/...`` keys, kernels already HWIO::

    resnet/root_block/standardized_conv2d/kernel                 (7, 7, 3, 64w)
    resnet/block{b}/unit{NN}/{a,b,c}/group_norm/{gamma,beta}
    resnet/block{b}/unit{NN}/{a,b,c}/standardized_conv2d/kernel
    resnet/block{b}/unit01/a/proj/standardized_conv2d/kernel
    resnet/group_norm/{gamma,beta}
    resnet/head/conv2d/kernel                                    (1, 1, C, N)
    resnet/head/conv2d/bias                                      (N,)

Loading is strict and all-or-nothing. First the archive's member headers are read
(:func:`inspect_npz`: shapes and dtypes, no data), and every key, shape and dtype is checked against the
model; then the arrays are read, cast to the variables' dtype and checked for NaN and infinity; only when
everything checks out is anything assigned. Every problem raises :class:`WeightFileError` naming the key
and the fix: a missing, extra or misshapen key (with the architecture the file holds), a non-float array,
non-finite values, a head kernel without its bias (or the reverse), a file that is not an ``.npz``
archive of named arrays, or a corrupt or truncated one.

Example:
    >>> import os, tempfile
    >>> from bit_keras.models.resnet import resnet_v2
    >>> model = resnet_v2((1, 1, 1, 1), 0.5, num_classes=10)
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.npz")
    >>> _ = save_npz(model, path)
    >>> inspect_npz(path)["resnet/head/conv2d/kernel"]
    ((1, 1, 1024, 10), dtype('float32'))
    >>> load_npz(model, path)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import keras
import numpy as np

from bit_keras.errors import WeightFileError
from bit_keras.models.layers import GroupNorm, StandardizedConv2D
from bit_keras.models.npz import SAVE_FIX, Header, inspect_npz, iter_arrays, write_npz
from bit_keras.models.resnet import HEAD_NAME
from bit_keras.models.spec import HEAD_BIAS, HEAD_KERNEL, PREFIX, ROOT_KERNEL, ArchSpec, infer_spec

HEAD_KEYS = (HEAD_KERNEL, HEAD_BIAS)


def _layer_key(layer: keras.layers.Layer) -> str:
    # "-" stands for "/" in layer names; "." in models saved by bit-keras 0.2 (see bit_keras.models.resnet)
    return PREFIX + layer.name.replace("-", "/").replace(".", "/")


def backbone_variables(model: keras.Model) -> dict[str, keras.Variable]:
    """The model's backbone weights by official ``.npz`` key (no head).

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
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


def model_spec(model: keras.Model) -> ArchSpec:
    """The :class:`~bit_keras.models.spec.ArchSpec` of a BiT model: depths and width from its weight shapes
    (:func:`~bit_keras.models.spec.infer_spec`), the group count from its GroupNorm layers.

    Example:
        >>> from bit_keras.models.resnet import resnet_v2
        >>> model_spec(resnet_v2((2, 2, 2, 2), 0.25, groups=8))
        ArchSpec(depths=(2, 2, 2, 2), width=0.25, groups=8)
    """
    spec = infer_spec({key: tuple(v.shape) for key, v in backbone_variables(model).items()})
    groups = {layer.groups for layer in model.layers if isinstance(layer, GroupNorm)}
    if len(groups) == 1 and groups != {spec.groups}:
        spec = ArchSpec(spec.depths, spec.width, groups.pop())
    return spec


def head_layer(model: keras.Model) -> keras.layers.Dense | None:
    """The model's Dense head, or None for a feature model."""
    try:
        layer = model.get_layer(HEAD_NAME)
    except ValueError:
        return None
    return layer if isinstance(layer, keras.layers.Dense) else None


# --------------------------------------------------------------------------- reading files


# --------------------------------------------------------------------------- checking and loading


def _what_the_file_holds(headers: Mapping[str, Header]) -> str:
    """One line on the architecture the file holds, or why it is not a BiT checkpoint."""
    try:
        return (f"  the file holds a {infer_spec({k: shape for k, (shape, _) in headers.items()}, strict=False).describe()} "
                "network; create the model with the matching architecture")
    except WeightFileError:
        pass
    keys = sorted(headers)
    if not keys:
        return "  it holds no arrays: it does not look like a BiT checkpoint"
    if not any(k.startswith(PREFIX) for k in keys):
        inner = [k[: k.index("/" + PREFIX) + 1] for k in keys if "/" + PREFIX in k]
        if len(inner) == len(keys) and len(set(inner)) == 1:
            return (f"  every key starts with {inner[0]!r} before {PREFIX!r}: strip that prefix from the keys "
                    "and save the file again")
        shown = ", ".join(repr(k) for k in keys[:3])
        return (f"  none of its {len(keys)} keys starts with {PREFIX!r} (e.g. {shown}): it does not look like a "
                "BiT checkpoint in the official layout (a PyTorch/timm state dict must be converted to the "
                "official keys first)")
    if ROOT_KERNEL not in headers:
        return f"  the file has no {ROOT_KERNEL}, so its architecture cannot be told"
    return f"  its {ROOT_KERNEL} is not 4-D: it does not look like a BiT checkpoint"


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" and dtype.itemsize in (2, 4, 8)


def _listed(label: str, items: list[str]) -> str:
    shown = items[:8] + ([f"... and {len(items) - 8} more"] if len(items) > 8 else [])
    return f"  {len(items)} {label}: " + "; ".join(shown)


def _head_width(targets: Mapping[str, keras.Variable], head: keras.layers.Dense | None) -> int | None:
    gamma = targets.get(PREFIX + "group_norm/gamma")
    if gamma is not None:
        return int(gamma.shape[0])
    return int(head.kernel.shape[0]) if head is not None else None


def _head_shape_problem(headers: Mapping[str, Header], width: int | None) -> str | None:
    """Why the file's head kernel/bias shapes are not ``(1, 1, C, N)`` / ``(N,)``, or None."""
    kernel, bias = headers[HEAD_KERNEL][0], headers[HEAD_BIAS][0]
    ok = (
        (len(kernel) == 2 or (len(kernel) == 4 and kernel[:2] == (1, 1)))
        and (width is None or kernel[-2] == width)
        and bias == kernel[-1:]
    )
    if ok:
        return None
    want = f"(1, 1, {width if width is not None else 'C'}, N)"
    return f"{HEAD_KERNEL} {kernel} and {HEAD_BIAS} {bias}: expected {want} and (N,)"


def _check_layout(
    model: keras.Model, headers: Mapping[str, Header], source: str, load_head: bool | None
) -> tuple[dict[str, keras.Variable], bool]:
    """Check keys, shapes and dtypes of the file against the model, from the headers alone.

    Returns the variables by key that the file's arrays go to (the head's under the head keys when it is
    loaded) and whether the head is loaded. Raises WeightFileError listing every problem.
    """
    targets = backbone_variables(model)
    head = head_layer(model)
    keys = set(headers)
    lines: list[str] = []

    not_float = [f"{key}: {dtype}" for key, (_, dtype) in sorted(headers.items()) if not _is_float(dtype)]
    if not_float:
        lines.append(_listed("arrays that are not float16/32/64", not_float))
        lines.append("  weights are float arrays: integer, boolean, string or complex arrays mean the file "
                     f"is not a weight file or was written wrongly; {SAVE_FIX}")
    has_kernel, has_bias = HEAD_KERNEL in keys, HEAD_BIAS in keys
    if has_kernel != has_bias:
        present, absent = (HEAD_KERNEL, HEAD_BIAS) if has_kernel else (HEAD_BIAS, HEAD_KERNEL)
        lines.append(f"  the head is incomplete: {present} is there but {absent} is missing; a file holds "
                     "both or neither (remove the other one to load only the backbone, or save the file "
                     "again with bit_keras.save_npz)")

    missing = sorted(set(targets) - keys)
    extra = sorted(keys - set(targets) - set(HEAD_KEYS))
    mismatched = [
        f"{key}: file {tuple(headers[key][0])}, model {tuple(var.shape)}"
        for key, var in targets.items()
        if key in headers and tuple(headers[key][0]) != tuple(var.shape)
    ]
    if has_kernel and has_bias:
        problem = _head_shape_problem(headers, _head_width(targets, head))
        if problem:
            mismatched.append(problem)
    for label, items in (("missing keys", missing), ("unexpected keys", extra), ("shape mismatches", mismatched)):
        if items:
            lines.append(_listed(label, items))
    if missing or extra or mismatched:
        lines.append(_what_the_file_holds(headers))
    if lines:
        raise WeightFileError("\n".join([f"cannot load {source} into model {model.name!r}:", *lines]))

    file_head = (tuple(headers[HEAD_KERNEL][0][-2:]), tuple(headers[HEAD_BIAS][0])) if has_kernel else None
    model_head = (tuple(head.kernel.shape), tuple(head.bias.shape)) if head is not None else None
    if load_head is None:
        load_head = file_head is not None and file_head == model_head
    if load_head:
        if head is None:
            raise WeightFileError(f"load_head=True but model {model.name!r} has no head (num_classes=None)")
        if file_head is None:
            raise WeightFileError(f"load_head=True but {source} has no {HEAD_KERNEL} / {HEAD_BIAS}")
        if file_head != model_head:
            raise WeightFileError(
                f"head of {source} is {file_head[0]} but the model's is {model_head[0]}; "  # type: ignore[index]
                "pass num_classes equal to the checkpoint's classes, or another value for a new zero head"
            )
        targets = {**targets, HEAD_KERNEL: head.kernel, HEAD_BIAS: head.bias}
    return targets, bool(load_head)


def _prepare(
    arrays: Iterator[tuple[str, np.ndarray]],
    targets: Mapping[str, keras.Variable],
    source: str,
    model: keras.Model,
    allow_nonfinite: bool,
) -> dict[str, np.ndarray]:
    """Every array cast to its variable's dtype and shape, checked for NaN/inf; WeightFileError lists them."""
    values: dict[str, np.ndarray] = {}
    nonfinite: list[str] = []
    for key, array in arrays:
        var = targets.get(key)
        # A head that is not loaded is still checked, in its own dtype.
        if var is None:
            value = array
        else:
            with np.errstate(over="ignore"):  # a float64 value beyond float32's range: counted below
                value = np.asarray(array, dtype=var.dtype).reshape(tuple(var.shape))
        if not allow_nonfinite:
            bad = value.size - int(np.count_nonzero(np.isfinite(value)))
            if bad:
                overflow = bad - (array.size - int(np.count_nonzero(np.isfinite(array))))
                note = (f", {overflow} of them finite {array.dtype} values beyond the range of {value.dtype}"
                        if overflow else "")
                nonfinite.append(f"{key}: {bad} of {value.size} values are NaN or infinite{note}")
        if var is not None:
            values[key] = value
    if nonfinite:
        raise WeightFileError("\n".join([
            f"cannot load {source} into model {model.name!r}:",
            _listed("arrays with non-finite values", nonfinite),
            "  the checkpoint is damaged or was saved from a diverged run; use another file, or pass "
            "allow_nonfinite=True to load it as it is",
        ]))
    return values


def load_npz(
    model: keras.Model,
    weights: str | os.PathLike | Mapping[str, np.ndarray],
    *,
    load_head: bool | None = None,
    allow_nonfinite: bool = False,
) -> None:
    """Load an official-layout weight file (or dict) into a BiT model, strictly and all-or-nothing.

    Args:
        model: a model built by :func:`bit_keras.models.resnet.resnet_v2` / :func:`bit_keras.create_model`.
        weights: a path to an ``.npz`` file or a dict of arrays under the official keys.
        load_head: True to require and load the file's head, False to leave the model's head as it is
            (the BiT transfer init: zeros), None (default) to load it when the model's head has the
            checkpoint's number of classes.
        allow_nonfinite: load arrays holding NaN or infinity instead of refusing the file.

    Raises:
        WeightFileError: nothing was assigned because the file is not a well-formed ``.npz`` (missing,
            a directory, a ``.npy``, corrupt or truncated), or its keys, shapes, dtypes or values do not
            fit the model (all named, with the fix). Errors about the file itself (it cannot be read as an
            ``.npz``) have ``err.unreadable`` set.

    Example:
        >>> import numpy as np
        >>> from bit_keras.models.resnet import resnet_v2
        >>> model = resnet_v2((1, 1, 1, 1), 0.25, groups=8, num_classes=None)
        >>> arrays = {k: v.numpy() for k, v in backbone_variables(model).items()}
        >>> arrays["resnet/group_norm/beta"] = np.full(512, np.nan)
        >>> load_npz(model, arrays)
        Traceback (most recent call last):
        ...
        bit_keras.errors.WeightFileError: cannot load the weight dict into model 'resnet':
          1 arrays with non-finite values: resnet/group_norm/beta: 512 of 512 values are NaN or infinite
          ...
    """
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        source = str(path)
        headers = inspect_npz(path)
        targets, _ = _check_layout(model, headers, source, load_head)
        values = _prepare(iter_arrays(path, headers), targets, source, model, allow_nonfinite)
    elif isinstance(weights, Mapping):
        source = "the weight dict"
        arrays: dict[str, np.ndarray] = {}
        for key, value in weights.items():
            if not isinstance(key, str):
                raise WeightFileError(f"{source} has the key {key!r}; keys are official names such as "
                                      f"{ROOT_KERNEL!r}")
            try:
                arrays[key] = np.asarray(value)
            except Exception as err:  # ragged lists and the like
                raise WeightFileError(f"{source}: {key!r} is not an array ({type(err).__name__}: {err})") from err
        headers = {key: (array.shape, array.dtype) for key, array in arrays.items()}
        targets, _ = _check_layout(model, headers, source, load_head)
        values = _prepare(iter(arrays.items()), targets, source, model, allow_nonfinite)
    else:
        raise TypeError(f"weights must be a path or a mapping of arrays, got {type(weights).__name__}")
    for key, value in values.items():  # everything checked: nothing below can fail half-way
        targets[key].assign(value)


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
        >>> from bit_keras.models.resnet import resnet_v2
        >>> p = save_npz(resnet_v2((1, 1, 1, 1), 0.5), os.path.join(tempfile.mkdtemp(), "w.npz"))
        >>> p.suffix
        '.npz'
    """
    return write_npz(model_to_npz_dict(model), path)
