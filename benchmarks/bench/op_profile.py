"""Where a step's time goes: ``tf.profiler`` op times, by op type and by what the op belongs to.

:func:`profile_ops` runs a few steps under ``tf.profiler`` and reads the op events (``<op name>:<op type>``,
the op name carrying the Keras layer's name scope, e.g. ``StatefulPartitionedCall/bit_r50x1/block1-unit01-b-
group_norm_1/Sum:Sum`` or ``.../gradient_tape/bit_r50x1/block1-unit01-b-standardized_conv2d_1/convolution/
Conv2DBackpropInput:_MklNativeConv2DBackpropInput``). :func:`categorise` puts each op in one of
:data:`CATEGORIES`, first match wins:

* ``convolution``: the convolutions themselves, forward and both backward passes (op type containing ``Conv``);
* ``cast``: ``Cast`` ops, wherever they are (mixed precision casts around GroupNorm and the kernels);
* ``group_norm``: the other ops inside a ``*group_norm`` layer, forward and backward;
* ``weight_standardization``: the other ops inside a ``*standardized_conv2d`` layer (the Conv2D itself is a
  convolution): standardizing the kernel and its gradient;
* ``other``: the rest (ReLU, additions, pooling, the head, the loss, the optimizer update, BatchNorm).

Op time is summed over threads, so with intra-op parallelism the total exceeds the wall time: the shares are
what matters.

Example (a synthetic op list):
    >>> ops = [("m/block1-unit01-b-standardized_conv2d_1/convolution", "_MklNativeConv2D", 50.0),
    ...        ("m/block1-unit01-b-standardized_conv2d_1/Sum_1", "Sum", 5.0),
    ...        ("gradient_tape/m/block1-unit01-b-group_norm_1/Sum_3", "Sum", 20.0),
    ...        ("m/block1-unit01-b-group_norm_1/Cast", "Cast", 5.0), ("m/head_1/MatMul", "MatMul", 20.0)]
    >>> shares = category_shares(ops)
    >>> shares
    {'convolution': 50.0, 'group_norm': 20.0, 'weight_standardization': 5.0, 'cast': 5.0, 'other': 20.0}
    >>> format_shares(shares)
    'convolutions 50%, GroupNorm 20%, weight standardization 5%, casts 5%, other 20%'
"""

from __future__ import annotations

import collections
import glob
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Iterable, Mapping

CATEGORIES = ("convolution", "group_norm", "weight_standardization", "cast", "other")
LABELS = {"convolution": "convolutions", "group_norm": "GroupNorm", "weight_standardization": "weight standardization",
          "cast": "casts", "other": "other"}
_GROUP_NORM = re.compile(r"(^|[-/])group_norm(_\d+)?$")
_STANDARDIZED = re.compile(r"standardized_conv2d(_\d+)?$")


def categorise(op_name: str, op_type: str) -> str:
    """The :data:`CATEGORIES` entry of one op, from its type and the layer names in its name scope.

    Example:
        >>> categorise("g/block2-unit01-a-proj-standardized_conv2d_1/convolution/Conv2DBackpropFilter",
        ...            "_MklNativeConv2DBackpropFilter")
        'convolution'
        >>> categorise("g/block2-unit01-a-proj-standardized_conv2d_1/RsqrtGrad", "RsqrtGrad")
        'weight_standardization'
        >>> categorise("m/group_norm_1/mul", "Mul"), categorise("m/conv2_block1_1_bn/FusedBatchNormV3", "FusedBatchNormV3")
        ('group_norm', 'other')
    """
    if "conv" in op_type.lower():
        return "convolution"
    if op_type == "Cast":
        return "cast"
    if op_type.startswith("BitGroupNorm"):  # the native kernel (bit_keras.models.native), forward and backward
        return "group_norm"
    scopes = op_name.split("/")
    if any(_GROUP_NORM.search(scope) for scope in scopes):
        return "group_norm"
    if any(_STANDARDIZED.search(scope) for scope in scopes):
        return "weight_standardization"
    return "other"


def category_shares(ops: Iterable[tuple[str, str, float]]) -> dict[str, float]:
    """Percent of the op time in each of :data:`CATEGORIES` (all present, in that order), from
    ``(op name, op type, time)`` triples."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for name, op_type, ms in ops:
        totals[categorise(name, op_type)] += ms
    total = sum(totals.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in totals.items()}


def format_shares(shares: Mapping[str, float]) -> str:
    """``convolutions 50%, GroupNorm 20%, ...`` (the :data:`CATEGORIES` order)."""
    return ", ".join(f"{LABELS[k]} {shares[k]:.0f}%" for k in CATEGORIES if k in shares)


def shares_cell(shares: Mapping[str, float] | None) -> str:
    """The shares as one CSV cell, and back (:func:`parse_shares_cell`).

    Example:
        >>> cell = shares_cell({"convolution": 60.0, "other": 40.0}); cell
        'convolution=60;other=40'
        >>> parse_shares_cell(cell)
        {'convolution': 60.0, 'other': 40.0}
    """
    return ";".join(f"{k}={v:g}" for k, v in (shares or {}).items())


def parse_shares_cell(cell: Any) -> dict[str, float]:
    if not cell:
        return {}
    return {k: float(v) for k, v in (item.split("=", 1) for item in str(cell).split(";") if "=" in item)}


def op_events(logdir: str) -> Iterable[tuple[str, str, float]]:
    """``(op name, op type, ms)`` of every TensorFlow op event in a ``tf.profiler`` log directory."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = plane.event_metadata
            for line in plane.lines:
                for event in line.events:
                    name = names[event.metadata_id].name
                    # TF op events are "<op name>:<op type>"; skip executor frames ("A::B") and functions.
                    if ":" not in name or "::" in name or "__inference" in name:
                        continue
                    op_name, op_type = name.rsplit(":", 1)
                    op_type = op_type.split("#")[0].strip()
                    if op_type:
                        yield op_name, op_type, event.duration_ps / 1e9


def profile_ops(step: Callable[[], Any], steps: int = 2, top: int = 15) -> dict[str, Any]:
    """Run ``steps`` steps under ``tf.profiler``: the ``top`` op types by ms per step (``op_types``) and the
    :func:`category_shares` (``categories``, percent).

    Example:
        >>> import tensorflow as tf
        >>> f = tf.function(lambda: tf.reduce_sum(tf.matmul(tf.random.uniform((256, 256)), tf.ones((256, 256)))))
        >>> result = profile_ops(f, steps=2)
        >>> any("MatMul" in name for name, _ in result["op_types"]), sorted(result["categories"]) == sorted(CATEGORIES)
        (True, True)
    """
    import tensorflow as tf

    from benchmarks.bench.timing import sync

    sync(step())
    logdir = tempfile.mkdtemp(prefix="bench-profile-")
    try:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                sync(step())
        finally:
            tf.profiler.experimental.stop()
        events = [(name, op_type, ms / steps) for name, op_type, ms in op_events(logdir)]
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    by_type: collections.Counter = collections.Counter()
    for _, op_type, ms in events:
        by_type[op_type] += ms
    return {"op_types": [(name, round(ms, 2)) for name, ms in by_type.most_common(top)],
            "categories": category_shares(events), "total_ms": round(sum(ms for *_, ms in events), 1)}
