"""``bit-keras fewshot``: the few-shot linear probe of a model's frozen pre-logits (:func:`bit_keras.fewshot_probe`).

Example:
    >>> from bit_keras.cli import build_parser
    >>> args = build_parser().parse_args(["fewshot", "--model", "BiT-S-R50x1", "--dataset", "cifar10",
    ...                                   "--test-dataset", "test", "--shots", "1,5", "--seeds", "0"])
    >>> args.shots, args.seeds, args.weights
    ([1, 5], [0], 'pretrained')
"""

from __future__ import annotations

import argparse

from bit_keras.cli.options import add_model_flags, add_preprocessing_flags


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 1,5,10; got {value!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fewshot", help="few-shot linear probe of a model's frozen pre-logits (top-1 per shot count)",
        description="Fit a closed-form L2-regularised least-squares classifier on k examples per class of the "
        "frozen pre-logits, for every k and seed, and report test top-1 (mean ± std over seeds). The L2 strength "
        "is chosen on the training pool, never the test set. Features are computed once per image and cached "
        "under --output/features: a second or interrupted run computes none twice.")
    add_model_flags(p, default="BiT-M-R50x1")
    p.add_argument("--dataset", required=True, help="training pool: image folder or tfds name[:split]")
    p.add_argument("--split", default="train", help="split of a tfds --dataset [train]")
    p.add_argument("--test-dataset", required=True,
                   help="test data: a split of a tfds --dataset (e.g. test), an image folder or a tfds name")
    p.add_argument("--shots", type=_int_list, default=[1, 5, 10, 25], help="examples per class [1,5,10,25]")
    p.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="draws per shot count [0,1,2]")
    p.add_argument("--output", default=None, help="folder for fewshot.json, fewshot.png and the feature cache")
    add_preprocessing_flags(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass [64]")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    p.add_argument("--no-strict", "--lenient", dest="strict", action="store_false", default=True,
                   help="skip bad images instead of failing")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bars")
    p.set_defaults(func=_fewshot)


def _fewshot(args: argparse.Namespace) -> int:
    from bit_keras.evals.fewshot import PLOT_FILE, RESULTS_FILE, fewshot_probe

    result = fewshot_probe(args.model, args.dataset, test_dataset=args.test_dataset, shots=args.shots,
                           seeds=args.seeds, weights=args.weights, output_dir=args.output, split=args.split,
                           resolution=args.resolution, crop_pct=args.crop_pct, interpolation=args.interpolation,
                           input_range=args.input_range, batch_size=args.batch_size, strict=args.strict,
                           data_dir=args.data_dir, progress=args.progress)
    if result.output_dir is not None:
        print(f"Wrote {result.output_dir / RESULTS_FILE} and {result.output_dir / PLOT_FILE}")
    return 0
