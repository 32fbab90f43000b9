"""``bit-keras bench``: throughput and peak memory of bit_keras vs keras.applications.ResNet50V2.

The harness is :mod:`bit_keras.bench`; ``python benchmarks/run.py`` runs the same thing from a checkout.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="bit-keras")
    >>> register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["bench", "--quick", "--output", "out"])
    >>> args.quick, args.output, args.func.__name__
    (True, 'out', '_bench')
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command to a ``bit-keras`` parser."""
    from bit_keras.bench import add_arguments

    p = subparsers.add_parser(
        "bench",
        help="benchmark images/s and peak memory (inference, training) against ResNet50V2; writes bench.csv/.md",
        description="Benchmark bit_keras models against keras.applications.ResNet50V2 (and timm when installed): "
        "images/s and peak memory of inference and a training step, eager / tf.function / XLA, float32 / mixed "
        "precision, the exported SavedModels, and the input pipeline. Writes DIR/bench.csv and DIR/bench.md.",
    )
    add_arguments(p)
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from bit_keras.bench import run_from_args

    return run_from_args(args)
