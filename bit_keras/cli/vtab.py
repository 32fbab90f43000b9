"""``bit-keras vtab``: VTAB-1k (or some of its tasks) in one call (:func:`bit_keras.vtab`).

Example:
    >>> from bit_keras.cli import build_parser
    >>> args = build_parser().parse_args(["vtab", "--model", "BiT-S-R50x1", "--output", "runs/vtab",
    ...                                   "--tasks", "dtd,svhn", "--probe"])
    >>> args.tasks, args.probe, args.weights
    ('dtd,svhn', True, 'pretrained')
"""

from __future__ import annotations

import argparse

from bit_keras.cli.options import add_model_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "vtab", help="VTAB-1k: fine-tune (HyperRule) or linear-probe each task, one summary",
        description="Run the 19 VTAB-1k tasks (or --tasks) one after another, one run folder per task under "
        "--output; finished tasks are not redone. Tasks whose tensorflow-datasets data is not prepared are "
        "listed with the command that prepares them, and the others run. Writes vtab.json, vtab.md, vtab.png.")
    add_model_flags(p, default="BiT-M-R50x1")
    p.add_argument("--output", required=True, help="folder for the per-task runs and the summary")
    p.add_argument("--tasks", default="vtab-1k",
                   help="vtab-1k, a group (natural, specialized, structured) or comma-separated task names")
    p.add_argument("--probe", action="store_true", help="linear probe on frozen pre-logits instead of fine-tuning")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps [the HyperRule's]")
    p.add_argument("--data-dir", default=None, help="tensorflow-datasets data folder")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bars")
    p.set_defaults(func=_vtab)


def _vtab(args: argparse.Namespace) -> int:
    from bit_keras.recipes.vtab import vtab

    extra = {"steps": args.steps} if args.steps is not None and not args.probe else {}
    result = vtab(args.model, args.tasks, output_dir=args.output, probe=args.probe, weights=args.weights,
                  data_dir=args.data_dir, progress=args.progress, **extra)
    return 1 if result.failed else 0
