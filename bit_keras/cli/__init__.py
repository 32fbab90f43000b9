"""The ``bit-keras`` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds an
``argparse`` parser whose ``func`` default takes the parsed arguments and returns an exit code.
Add a module to :data:`COMMAND_MODULES` to add a command.

Errors are handled here, once for every command: an error bit-keras raises on purpose
(:class:`~bit_keras.errors.BitKerasError`: a bad file, an unknown model, unusable data...) is printed as one
line on stderr and exits with code 1; anything else also prints one line (with its type) and asks for
``--debug``, which shows the full traceback instead. TensorFlow's C++ log lines are silenced unless
``--verbose``. Exit codes: 0 success, 1 error, 2 wrong usage, 42 pre-emption (``pretrain``), 130 Ctrl-C.

Example:
    >>> main(["list", "BiT-S-R50x1"])
    BiT-S-R50x1  R50x1  ILSVRC-2012  1000 classes  224 px
    0
    >>> main(["info", "BiT-S-R50x9"])  # the error goes to stderr as one line
    1
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, Sequence

from bit_keras.errors import BitKerasError

COMMAND_MODULES = (
    "bit_keras.cli.zoo",
    "bit_keras.cli.transfer",
    "bit_keras.cli.fewshot",
    "bit_keras.cli.vtab",
    "bit_keras.cli.objectnet",
    "bit_keras.cli.pretrain",
    "bit_keras.cli.hub",
    "bit_keras.cli.demo",
    "bit_keras.cli.bench",
)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130
# Commands that answer from the zoo table, the download cache or the registry: they never import TensorFlow.
LIGHT_COMMANDS = ("list", "info", "download", "registry", "plot")


def _add_common_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On sub-commands the default is SUPPRESS, so that `bit-keras --debug list` is not undone by `list`'s default.
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error instead of one line")
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="let TensorFlow's own log lines through")


def _sub_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (sub-commands and their sub-commands)."""
    found = []
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk over sub-parsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                found += [sub, *_sub_parsers(sub)]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bit-keras", description="Big Transfer (BiT) for Keras 3: model zoo, transfer, export."
    )
    _add_common_flags(parser, top=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    for sub in _sub_parsers(parser):
        _add_common_flags(sub, top=False)
    return parser


def one_line(message: str) -> str:
    """A message on one line: its lines joined with "; ", surrounding blanks removed.

    Example:
        >>> one_line("cannot load w.npz:\\n  2 missing keys: a; b\\n")
        'cannot load w.npz: 2 missing keys: a; b'
    """
    text = ""
    for part in (line.strip() for line in str(message).splitlines()):
        if part:
            text += ("" if not text else " " if text.endswith((":", ";", ".", ",")) else "; ") + part
    return text


def report_error(err: BaseException, command: str | None) -> int:
    """Print ``err`` as one line on stderr and return the exit code."""
    where = f"bit-keras {command}" if command else "bit-keras"
    if isinstance(err, BitKerasError):
        print(f"{where}: error: {one_line(str(err))}", file=sys.stderr)
    else:
        print(f"{where}: unexpected {type(err).__name__}: {one_line(str(err)) or '(no message)'} "
              "(run again with --debug for the traceback; please report it if it looks like a bug)", file=sys.stderr)
    return EXIT_ERROR


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 to /dev/null for the block (Python's own errors still
    surface: they are raised, and printed after the block)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras without their start-up log lines (CUDA probing, oneDNN and CPU notices),
    which ``TF_CPP_MIN_LOG_LEVEL`` does not silence: they are written before TensorFlow's logging starts."""
    if "keras" in sys.modules:
        return
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow as tf

        tf.constant(0)  # device initialisation logs too


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" not in argv:
        # Before TensorFlow is imported: no C++ log lines (CUDA probing, oneDNN notices) unless asked for.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "passes_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.unknown_args = unknown
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if not args.verbose and args.command not in LIGHT_COMMANDS:
            import_tensorflow_quietly()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"bit-keras {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the one place errors become exit codes
        if args.debug:
            raise
        return report_error(err, args.command)


if __name__ == "__main__":
    sys.exit(main())
