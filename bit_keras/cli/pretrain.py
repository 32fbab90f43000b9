"""``bit-keras pretrain``: upstream pre-training with the BiT recipe under tf.distribute.

Flags are the settings of :func:`bit_keras.pretrain` (``--jit-compile`` is ``jit_compile=``); a flag left out
keeps the preset's (or the engine's) value.

Example:
    >>> from bit_keras.cli import build_parser
    >>> args = build_parser().parse_args(["pretrain", "--dataset", "digits", "--epochs", "3", "--preemption", "signal"])
    >>> sorted(pretrain_overrides(args).items())
    [('epochs', 3), ('preemption', 'signal')]
"""

from __future__ import annotations

import argparse
from typing import Any

from bit_keras.cli.options import add_data_flags, add_engine_flags, engine_overrides, overrides

PREEMPTED_EXIT_CODE = 42  # TensorFlow's restart code for preempted workers (TerminationConfig's default)
PRETRAIN_FLAGS = ("split", "data_dir", "strict", "flip", "seed", "epochs", "batch_size", "image_size", "preemption")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pre-train a BiT upstream (BiT-S / BiT-M / BiT-L / tiny recipe) under tf.distribute",
        description="Upstream pre-training with the BiT recipe. Started again with the same --output, a run "
        "resumes from its last checkpoint. The chief writes checkpoints, weights.npz and model.keras.")
    p.add_argument("--model", default="BiT-S-R50x1", help="zoo name whose architecture to train [BiT-S-R50x1]")
    add_data_flags(p)
    p.add_argument("--preset", default="BiT-S", help="BiT-S, BiT-M, BiT-L or tiny [BiT-S]")
    p.add_argument("--output", default=None, help="run folder")
    p.add_argument("--strategy", default="auto", help="auto, tpu, multi_worker, mirrored, one_device [auto]")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch [preset's]")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--preemption", choices=("auto", "tf", "signal"), default=None,
                   help="how preemption notices are heard: TF's PreemptionCheckpointHandler or a SIGTERM flag [auto]; "
                        "on one, a checkpoint is saved and the command exits with code 42 (run it again to resume)")
    p.add_argument("--export-handle", default=None, help="publish the backbone in the registry under this handle")
    p.add_argument("--registry", default=None, help="registry root [$BIT_KERAS_REGISTRY or the cache]")
    add_engine_flags(p, checkpoint_every=500)
    p.set_defaults(func=_pretrain)


def pretrain_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as keyword overrides of :func:`bit_keras.pretrain`."""
    return {**overrides(args, PRETRAIN_FLAGS), **engine_overrides(args)}


def _pretrain(args: argparse.Namespace) -> int:
    from bit_keras.errors import Preempted
    from bit_keras.recipes.pretrain import pretrain

    try:
        result = pretrain(args.model, args.dataset, preset=args.preset, output_dir=args.output,
                          strategy=args.strategy, export_handle=args.export_handle, registry=args.registry,
                          **pretrain_overrides(args))
    except Preempted as e:
        print(f"preempted: {e}")
        return PREEMPTED_EXIT_CODE
    print(f"done: {result.steps} steps; weights {result.weights_path}; handle {result.handle}")
    return 0
