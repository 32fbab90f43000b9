"""``bit-keras list | info | download``: browse the zoo and fetch weights, without importing TensorFlow."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list zoo models (optionally matching a shell pattern)")
    p.add_argument("pattern", nargs="?", default=None, help="e.g. 'BiT-M-*' (case-insensitive)")
    p.add_argument("--pretrained", action="store_true", help="only models with published weights")
    p.add_argument("--markdown", action="store_true", help="print the Markdown table of the README")
    p.set_defaults(func=_list)

    p = subparsers.add_parser("info", help="show a model's metadata as JSON (architecture, weights, preprocessing)")
    p.add_argument("name")
    p.set_defaults(func=_info)

    p = subparsers.add_parser("download", help="download a model's official weights into the cache")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=_download)


def _list(args: argparse.Namespace) -> int:
    from bit_keras.models.presets import get_model_info, list_models, model_table

    names = list_models(args.pattern, pretrained=True if args.pretrained else None)
    if args.markdown:
        print(model_table(names))
        return 0
    for name in names:
        info = get_model_info(name)
        weights = "" if info.has_weights else "  (architecture only)"
        print(f"{name}  {info.arch}  {info.upstream}  {info.num_classes} classes  {info.resolution} px{weights}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from bit_keras.models.presets import get_model_info

    print(json.dumps(get_model_info(args.name).to_dict(), indent=2))
    return 0


def _download(args: argparse.Namespace) -> int:
    from bit_keras.models.fetch import resolve_weights
    from bit_keras.models.presets import get_model_info

    for name in args.names:
        print(resolve_weights(get_model_info(name), "pretrained"))
    return 0
