"""``bit-keras objectnet``: an ILSVRC-2012 classifier on ObjectNet's 113 ImageNet classes (:func:`bit_keras.objectnet`).

Example:
    >>> from bit_keras.cli import build_parser
    >>> args = build_parser().parse_args(["objectnet", "--model", "BiT-S-R50x1", "--folder", "objectnet-1.0"])
    >>> args.model, args.folder, args.restrict, args.border
    ('BiT-S-R50x1', 'objectnet-1.0', False, 2)
"""

from __future__ import annotations

import argparse

from bit_keras.cli.options import add_model_flags, add_preprocessing_flags


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "objectnet", help="evaluate an ILSVRC-2012 classifier on ObjectNet (113 overlapping classes)",
        description="Evaluate a 1000-class ImageNet classifier on a local copy of ObjectNet through the release's "
        "mappings of its 113 classes that overlap ImageNet-1k. Reports top-1/top-5 over those classes with the "
        "prediction over all 1000 classes (the ObjectNet paper) and restricted to the 113 classes, and per class. "
        "The 1-pixel red border of the images is cropped first. ObjectNet is for evaluation only.")
    add_model_flags(p, default="BiT-M-R50x1-ILSVRC2012", what="zoo name of a 1000-class model")
    p.add_argument("--folder", required=True, help="objectnet-1.0 or objectnet-1.0/images")
    p.add_argument("--output", default=None, help="folder for objectnet.json")
    p.add_argument("--restrict", action="store_true", default=False,
                   help="headline numbers with predictions restricted to the 113 ObjectNet classes")
    p.add_argument("--border", type=int, default=2, help="pixels cropped from each side first [2]")
    add_preprocessing_flags(p)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass [64]")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True, help="no progress bar")
    p.set_defaults(func=_objectnet)


def _objectnet(args: argparse.Namespace) -> int:
    from bit_keras.evals.objectnet import RESULTS_FILE, objectnet

    result = objectnet(args.model, args.folder, weights=args.weights, restrict=args.restrict,
                       output_dir=args.output, border=args.border, resolution=args.resolution,
                       crop_pct=args.crop_pct, interpolation=args.interpolation, input_range=args.input_range,
                       batch_size=args.batch_size, progress=args.progress)
    print(result.table())
    if result.output_dir is not None:
        print(f"Wrote {result.output_dir / RESULTS_FILE}")
    return 0
