"""Command-line flags shared between commands, named as the API's settings (``--jit-compile`` is
``jit_compile=``), and their conversion into keyword overrides: the engine's and the data's (``transfer``,
``pretrain``), a model with its weights and the evaluation preprocessing (``fewshot``, ``vtab``, ``objectnet``).

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_engine_flags(p)
    >>> engine_overrides(p.parse_args(["--batch-split", "2", "--jit-compile", "--no-progress"]))
    {'batch_split': 2, 'jit_compile': True, 'progress': False}
"""

from __future__ import annotations

import argparse
from typing import Any

ENGINE_FLAGS = ("batch_split", "mixed_precision", "jit_compile", "remat", "checkpoint_every", "progress")


def weights_value(value: str) -> str | None:
    """``--weights``: ``none``/``random``/``scratch`` mean random init (None); anything else is kept."""
    return None if value.lower() in ("none", "random", "scratch") else value


def input_range_value(value: str) -> tuple[float, float]:
    """``--input-range low,high``."""
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-range takes 'low,high', e.g. '0,1' or '-1,1'; got {value!r}"
        ) from None
    return lo, hi


WEIGHTS_HELP = "'pretrained' (download), a local .npz path or URL, or 'none' for random init"


def add_model_flags(p: argparse.ArgumentParser, *, default: str, what: str = "zoo name") -> None:
    """``--model`` (a zoo name, ``default`` when not given) and ``--weights``."""
    p.add_argument("--model", default=default, help=f"{what} (bit-keras list) [{default}]")
    p.add_argument("--weights", default="pretrained", type=weights_value, help=WEIGHTS_HELP)


def add_preprocessing_flags(p: argparse.ArgumentParser) -> None:
    """The evaluation preprocessing, each defaulting to the zoo entry's, and the model's input range."""
    p.add_argument("--resolution", type=int, default=None, help="input side [the zoo entry's]")
    p.add_argument("--crop-pct", type=float, default=None, help="centre-crop fraction [the zoo entry's]")
    p.add_argument("--interpolation", default=None, help="bilinear or bicubic [the zoo entry's]")
    p.add_argument("--input-range", type=input_range_value, default=(0.0, 1.0),
                   help="range of the images fed to the model, e.g. --input-range=-1,1 [0,1]")


def add_engine_flags(p: argparse.ArgumentParser, *, checkpoint_every: int = 100) -> None:
    """The engine's settings (:class:`bit_keras.train.config.EngineConfig`) as flags; unset flags keep defaults."""
    p.add_argument("--batch-split", type=int, default=None, help="gradient accumulation over N micro-batches")
    p.add_argument("--mixed-precision", choices=("mixed_bfloat16", "mixed_float16"), default=None)
    p.add_argument("--jit-compile", "--jit", dest="jit_compile", action="store_true", default=None,
                   help="compile the per-replica step with XLA: for GPUs and TPUs; on a CPU it is not a speed option "
                        "(XLA:CPU runs its own convolutions, not oneDNN; a step compiles for about a minute)")
    p.add_argument("--remat", action="store_true", default=None,
                   help="recompute each residual unit in the backward pass: less memory, ~1/3 more compute")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help=f"steps between checkpoints [{checkpoint_every}]")
    p.add_argument("--no-progress", "--quiet", dest="progress", action="store_false", default=None,
                   help="no progress bar")


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """Where the data comes from and how strictly it is checked."""
    p.add_argument("--dataset", required=True, help="image folder (one sub-folder per class) or tfds name[:split]")
    p.add_argument("--split", default=None, help="split of a tfds --dataset [train]")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    p.add_argument("--no-strict", "--lenient", dest="strict", action="store_false", default=None,
                   help="skip bad images (listed in the run's records) instead of failing")
    p.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="no random left-right flips")
    p.add_argument("--seed", type=int, default=None, help="[0]")


def overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    """The ``names`` that were given on the command line, as keyword overrides."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def engine_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return overrides(args, ENGINE_FLAGS)
