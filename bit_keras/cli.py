"""The ``bit-keras`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds an
``argparse`` parser whose ``func`` default takes the parsed arguments and returns an exit code.
Add a module to :data:`COMMAND_MODULES` to add a command.

Example:
    >>> main(["list", "BiT-S-R50x1"])
    BiT-S-R50x1  R50x1  ILSVRC-2012  1000 classes  224 px
    0
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

COMMAND_MODULES = (
    "bit_keras.commands.zoo",
    "bit_keras.commands.transfer",
    "bit_keras.commands.pretrain",
    "bit_keras.commands.hub",
    "bit_keras.commands.demo",
    "bit_keras.commands.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bit-keras", description="Big Transfer (BiT) for Keras 3: model zoo, transfer, export."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
