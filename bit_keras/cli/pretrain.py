"""``bit-keras pretrain``: upstream pre-training with the BiT recipe under tf.distribute."""

from __future__ import annotations

import argparse


PREEMPTED_EXIT_CODE = 42  # TensorFlow's restart code for preempted workers (TerminationConfig's default)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain", help="pre-train a BiT upstream (BiT-S / BiT-M / BiT-L / tiny recipe) under tf.distribute",
        description="Upstream pre-training with the BiT recipe. Started again with the same --output, a run "
        "resumes from its last checkpoint. The chief writes checkpoints, weights.npz and model.keras.")
    p.add_argument("--model", default="BiT-S-R50x1", help="zoo name whose architecture to train [BiT-S-R50x1]")
    p.add_argument("--dataset", required=True, help="image folder (one sub-folder per class) or tfds name[:split]")
    p.add_argument("--preset", default="BiT-S", help="BiT-S, BiT-M, BiT-L or tiny [BiT-S]")
    p.add_argument("--output", default=None, help="run folder")
    p.add_argument("--strategy", default="auto", help="auto, tpu, multi_worker, mirrored, one_device [auto]")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch [preset's]")
    p.add_argument("--batch-split", type=int, default=1, help="gradient accumulation over N micro-batches")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--mixed-precision", choices=("mixed_bfloat16", "mixed_float16"), default=None)
    p.add_argument("--jit", action="store_true", help="XLA-compile the per-replica step")
    p.add_argument("--remat", action="store_true",
                   help="recompute each residual unit in the backward pass: less memory, ~1/3 more compute")
    p.add_argument("--preemption", choices=("auto", "tf", "signal"), default="auto",
                   help="how preemption notices are heard: TF's PreemptionCheckpointHandler or a SIGTERM flag [auto]; "
                        "on one, a checkpoint is saved and the command exits with code 42 (run it again to resume)")
    p.add_argument("--export-handle", default=None, help="publish the backbone in the registry under this handle")
    p.add_argument("--registry", default=None, help="registry root [$BIT_KERAS_REGISTRY or the cache]")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from bit_keras.recipes.pretrain import Preempted, pretrain

    overrides = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                   ("image_size", args.image_size)) if v is not None}
    try:
        result = pretrain(args.model, args.dataset, preset=args.preset, output_dir=args.output,
                          strategy=args.strategy, batch_split=args.batch_split, mixed_precision=args.mixed_precision,
                          jit_compile=args.jit, remat=args.remat, preemption=args.preemption,
                          export_handle=args.export_handle, registry=args.registry, seed=args.seed, **overrides)
    except Preempted as e:
        print(f"preempted: {e}")
        return PREEMPTED_EXIT_CODE
    print(f"done: {result.steps} steps; weights {result.weights_path}; handle {result.handle}")
    return 0
