"""``bit-keras bench``: run the benchmarks of a bit-keras checkout (they are not part of the installed package).

The harness lives in the repository's ``benchmarks/`` folder; this command finds it (the current folder, or the
checkout an editable install points to) and hands every argument to it, as ``python benchmarks/run.py`` does.

Example:
    >>> from bit_keras.cli import build_parser
    >>> args, rest = build_parser().parse_known_args(["bench", "--quick", "--output", "out"])
    >>> args.func.__name__, rest
    ('_bench', ['--quick', '--output', 'out'])
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from bit_keras.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` sub-command to a ``bit-keras`` parser."""
    p = subparsers.add_parser(
        "bench", add_help=False,
        help="benchmark images/s and peak memory against ResNet50V2 and timm (from a checkout; --help for flags)",
        description="Run benchmarks/run.py of a bit-keras checkout with these arguments.",
    )
    p.set_defaults(func=_bench, passes_unknown_args=True)


def find_checkout() -> Path:
    """The repository root holding ``benchmarks/bench/harness.py``: the current folder or the package's parent."""
    import bit_keras

    for root in (Path.cwd(), Path(bit_keras.__file__).resolve().parents[1]):
        if (root / "benchmarks" / "bench" / "harness.py").is_file():
            return root
    raise ConfigError("bit-keras bench runs the benchmarks of a checkout (they are not installed with the package): "
                      "clone the repository and run it there, or run python benchmarks/run.py")


def _bench(args: argparse.Namespace) -> int:
    root = str(find_checkout())
    if root not in sys.path:
        sys.path.insert(0, root)
    return int(importlib.import_module("benchmarks.bench.harness").main(args.unknown_args) or 0)
