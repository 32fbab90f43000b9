"""``bit-keras demo | plot``: the embedded BiT demo, and plots of a run directory."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="pre-train a tiny BiT on digits 0-4, transfer to 5-9 at 1/5/10 shots vs scratch (offline)",
        description="The whole BiT story on scikit-learn's digits, offline, in a few minutes on a CPU: "
        "upstream pre-training, export to a local registry, HyperRule transfer vs training from scratch.")
    p.add_argument("--output", default="runs/demo", help="output folder [runs/demo]")
    p.add_argument("--quick", action="store_true", help="a smoke run (CI): 2 shots, 1 seed, few steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)

    p = subparsers.add_parser("plot", help="training curves of a transfer run directory (curves.png)")
    p.add_argument("run_dir")
    p.add_argument("--output", default=None, help="PNG path [RUN_DIR/curves.png]")
    p.set_defaults(func=_plot)


def _demo(args: argparse.Namespace) -> int:
    from bit_keras.recipes.demo import run_demo

    run_demo(args.output, quick=args.quick, progress=not args.no_progress)
    return 0


def _plot(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from bit_keras.plots import plot_few_shot, plot_run

    run = Path(args.run_dir)
    if (run / "demo.json").is_file() and not (run / "history.json").is_file():
        print(plot_few_shot(json.loads((run / "demo.json").read_text()), args.output or run / "demo.png"))
    else:
        print(plot_run(run, args.output))
    return 0
