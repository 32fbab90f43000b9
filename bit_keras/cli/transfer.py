"""``bit-keras transfer | evaluate``: fine-tune a BiT model with the HyperRule, and score a saved run.

Flags are the settings of :func:`bit_keras.transfer` (``--base-lr`` is ``base_lr=``, ``--jit-compile`` is
``jit_compile=``); a flag left out keeps the HyperRule's (or the engine's) choice.

Example:
    >>> from bit_keras.cli import build_parser
    >>> args = build_parser().parse_args(["transfer", "--dataset", "flowers", "--base-lr", "0.01", "--remat"])
    >>> sorted(transfer_overrides(args).items())
    [('base_lr', 0.01), ('remat', True)]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bit_keras.cli.options import (
    add_data_flags,
    add_engine_flags,
    engine_overrides,
    input_range_value,
    overrides,
    weights_value,
)

HYPERRULE_FLAGS = ("batch_size", "base_lr", "mixup_alpha", "resize", "crop")
TRANSFER_FLAGS = ("split", "data_dir", "strict", "flip", "seed", "rule", "steps", "eval_every", "input_range")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transfer",
        help="fine-tune a BiT model on a dataset with the BiT-HyperRule",
        description="Fine-tune a BiT model with the BiT-HyperRule (resolution, schedule and mixup chosen from the "
        "data). Started again with the same --output, a run resumes from its last checkpoint.",
    )
    p.add_argument("--model", default="BiT-M-R50x1", help="zoo name (bit-keras list) or hub handle [BiT-M-R50x1]")
    add_data_flags(p)
    p.add_argument("--output", default=None, help="run folder: checkpoints, TensorBoard, model.keras, metrics.json")
    p.add_argument("--weights", default="pretrained", type=weights_value,
                   help="'pretrained' (download), a local .npz path or URL, or 'none' for random init")
    p.add_argument("--examples-per-class", type=int, default=None, help="few-shot: examples per class")
    p.add_argument("--validation", default=None,
                   help="validation split of a tfds --dataset (e.g. test) or another folder / tfds name")
    p.add_argument("--batch-size", type=int, default=None, help="global batch [512]")
    p.add_argument("--steps", type=int, default=None, help="schedule length (HyperRule supports scaled)")
    p.add_argument("--base-lr", type=float, default=None, help="base learning rate [0.003]")
    p.add_argument("--mixup-alpha", type=float, default=None, help="override the HyperRule mixup alpha")
    p.add_argument("--resize", type=int, default=None, help="override the HyperRule resize")
    p.add_argument("--crop", type=int, default=None, help="override the HyperRule crop")
    p.add_argument("--rule", choices=("code", "paper"), default=None, help="HyperRule variant [code]")
    p.add_argument("--strategy", default="auto",
                   help="auto, default, mirrored, multi_worker, one_device, tpu (see bit_keras.train.distribute) [auto]")
    p.add_argument("--eval-every", type=int, default=None, help="steps between validation runs")
    p.add_argument("--input-range", type=input_range_value, default=None,
                   help="range of the images fed to the model, e.g. --input-range=-1,1 [0,1]")
    add_engine_flags(p)
    p.set_defaults(func=_transfer)

    p = subparsers.add_parser("evaluate", help="top-1/top-5 of a saved transfer run on a dataset (JSON)")
    p.add_argument("run_dir", help="the --output folder of a finished transfer run")
    p.add_argument("--dataset", required=True, help="image folder or tfds name[:split]")
    p.add_argument("--split", default="test", help="split of a tfds --dataset [test]")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    p.set_defaults(func=_evaluate)


def transfer_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line, as keyword overrides of :func:`bit_keras.transfer`."""
    return {**overrides(args, TRANSFER_FLAGS + HYPERRULE_FLAGS), **engine_overrides(args)}


def _transfer(args: argparse.Namespace) -> int:
    from bit_keras.recipes.transfer import transfer

    result = transfer(args.model, args.dataset, examples_per_class=args.examples_per_class,
                      validation=args.validation, output_dir=args.output, weights=args.weights,
                      strategy=args.strategy, **transfer_overrides(args))
    print(json.dumps(result.metrics, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from bit_keras.recipes.transfer import evaluate_run

    metrics = evaluate_run(args.run_dir, args.dataset, split=args.split, batch_size=args.batch_size,
                           data_dir=args.data_dir)
    print(json.dumps(metrics, indent=2))
    return 0
