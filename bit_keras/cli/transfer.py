"""``bit-keras transfer | evaluate``: fine-tune a BiT model with the HyperRule, and score a saved run.

Example:
    bit-keras transfer --model BiT-M-R50x1 --dataset ./flowers --examples-per-class 5 --output runs/x
    bit-keras evaluate runs/x --dataset ./flowers_test
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _weights(value: str) -> str | None:
    return None if value.lower() in ("none", "random", "scratch") else value


def _input_range(value: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--input-range takes 'low,high', e.g. '0,1' or '-1,1'; got {value!r}"
        ) from None
    return lo, hi


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "transfer",
        help="fine-tune a BiT model on a dataset with the BiT-HyperRule",
        description="Fine-tune a BiT model with the BiT-HyperRule (resolution, schedule and mixup chosen from the "
        "data). Started again with the same --output, a run resumes from its last checkpoint.",
    )
    p.add_argument("--model", default="BiT-M-R50x1", help="zoo name (bit-keras list) or hub handle [BiT-M-R50x1]")
    p.add_argument("--dataset", required=True, help="image folder (one sub-folder per class) or tfds name[:split]")
    p.add_argument("--output", default=None, help="run folder: checkpoints, TensorBoard, model.keras, metrics.json")
    p.add_argument("--weights", default="pretrained", type=_weights,
                   help="'pretrained' (download), a local .npz path or URL, or 'none' for random init")
    p.add_argument("--examples-per-class", type=int, default=None, help="few-shot: examples per class")
    p.add_argument("--validation", default=None,
                   help="validation split of a tfds --dataset (e.g. test) or another folder / tfds name")
    p.add_argument("--split", default="train", help="split of a tfds --dataset [train]")
    p.add_argument("--batch-size", type=int, default=512, help="global batch [512]")
    p.add_argument("--batch-split", type=int, default=None, help="gradient accumulation over N micro-batches")
    p.add_argument("--steps", type=int, default=None, help="schedule length (HyperRule supports scaled)")
    p.add_argument("--base-lr", type=float, default=None, help="base learning rate [0.003]")
    p.add_argument("--mixup-alpha", type=float, default=None, help="override the HyperRule mixup alpha")
    p.add_argument("--resize", type=int, default=None, help="override the HyperRule resize")
    p.add_argument("--crop", type=int, default=None, help="override the HyperRule crop")
    p.add_argument("--rule", choices=("code", "paper"), default="code", help="HyperRule variant [code]")
    p.add_argument("--mixed-precision", choices=("mixed_bfloat16", "mixed_float16"), default=None)
    p.add_argument("--strategy", default="auto",
                   help="auto, default, mirrored, multi_worker, one_device, tpu (see bit_keras.train.distribute) [auto]")
    p.add_argument("--no-flip", action="store_true", help="no random left-right flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jit", action="store_true", help="compile the training step with XLA")
    p.add_argument("--remat", action="store_true",
                   help="recompute each residual unit in the backward pass: less memory, ~1/3 more compute")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints [100]")
    p.add_argument("--eval-every", type=int, default=None, help="steps between validation runs")
    p.add_argument("--input-range", type=_input_range, default=(0.0, 1.0),
                   help="range of the images fed to the model, e.g. --input-range=-1,1 [0,1]")
    p.add_argument("--lenient", action="store_true", help="skip bad images instead of failing")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_transfer)

    p = subparsers.add_parser("evaluate", help="top-1/top-5 of a saved transfer run on a dataset (JSON)")
    p.add_argument("run_dir", help="the --output folder of a finished transfer run")
    p.add_argument("--dataset", required=True, help="image folder or tfds name[:split]")
    p.add_argument("--split", default="test", help="split of a tfds --dataset [test]")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    p.set_defaults(func=_evaluate)


def _transfer(args: argparse.Namespace) -> int:
    from bit_keras.recipes.transfer import transfer

    overrides: dict[str, Any] = {
        k: v
        for k, v in (("base_lr", args.base_lr), ("mixup_alpha", args.mixup_alpha), ("resize", args.resize),
                     ("crop", args.crop))
        if v is not None
    }
    result = transfer(
        args.model, args.dataset, examples_per_class=args.examples_per_class, validation=args.validation,
        output_dir=args.output, batch_size=args.batch_size, batch_split=args.batch_split, strategy=args.strategy,
        mixed_precision=args.mixed_precision, weights=args.weights, split=args.split, seed=args.seed,
        flip=not args.no_flip, rule=args.rule, steps=args.steps, checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every, jit_compile=args.jit, remat=args.remat, input_range=args.input_range, strict=not args.lenient,
        progress=not args.quiet, data_dir=args.data_dir, **overrides,
    )
    print(json.dumps(result.metrics, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from bit_keras.recipes.transfer import evaluate_run

    metrics = evaluate_run(args.run_dir, args.dataset, split=args.split, batch_size=args.batch_size,
                           data_dir=args.data_dir)
    print(json.dumps(metrics, indent=2))
    return 0
