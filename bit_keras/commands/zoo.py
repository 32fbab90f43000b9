"""``bit-keras list | info | download``: browse the zoo and fetch weights."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list zoo models (optionally matching a shell pattern)")
    p.add_argument("pattern", nargs="?", default=None, help="e.g. 'BiT-M-*' (case-insensitive)")
    p.add_argument("--pretrained", action="store_true", help="only models with published weights")
    p.set_defaults(func=_list)

    p = subparsers.add_parser("info", help="show a model's metadata as JSON")
    p.add_argument("name")
    p.set_defaults(func=_info)

    p = subparsers.add_parser("download", help="download a model's official weights into the cache")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=_download)


def _list(args: argparse.Namespace) -> int:
    from bit_keras.zoo import get_model_info, list_models

    for name in list_models(args.pattern, pretrained=True if args.pretrained else None):
        info = get_model_info(name)
        weights = "" if info.has_weights else "  (architecture only)"
        print(f"{name}  {info.arch}  {info.upstream}  {info.num_classes} classes  {info.resolution} px{weights}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from bit_keras.zoo import get_model_info

    info = get_model_info(args.name)
    print(json.dumps({**info.to_dict(), "parameters_with_head": _param_count(info)}, indent=2))
    return 0


def _param_count(info) -> int:
    spec = info.spec
    root = spec.root_channels
    total = 7 * 7 * 3 * root
    cin = root
    for b, units in enumerate(spec.depths):
        mid = spec.mid_channels(b)
        for u in range(units):
            total += 2 * cin + cin * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * 4 * mid
            if u == 0:
                total += cin * 4 * mid
            cin = 4 * mid
    return total + 2 * cin + cin * info.num_classes + info.num_classes


def _download(args: argparse.Namespace) -> int:
    from bit_keras.models import resolve_weights
    from bit_keras.zoo import get_model_info

    for name in args.names:
        print(resolve_weights(get_model_info(name), "pretrained"))
    return 0
