"""``bit-keras export`` and ``bit-keras registry list|show|verify|serve|remove``.

Example (shell)::

    bit-keras export BiT-M-R50x1 --weights pretrained --handle me/bit-m-r50x1/feature-vector/1
    bit-keras export BiT-M-R50x1-CIFAR10 --weights pretrained --classifier --fold --handle me/bit-cifar10/classifier/1
    bit-keras registry list
    bit-keras registry verify me/bit-m-r50x1/feature-vector/1
    bit-keras registry serve --root ~/.cache/bit_keras/registry --port 8000
    # then, anywhere: hub.KerasLayer("http://127.0.0.1:8000/me/bit-m-r50x1/feature-vector/1", trainable=True)

The registry root is ``--registry``/``--root``, else ``$BIT_KERAS_REGISTRY``, else ``<cache>/registry``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bit_keras.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a zoo model or .keras file as a hub-style SavedModel into the registry")
    p.add_argument("model", help="a zoo name (e.g. BiT-M-R50x1) or the path of a .keras file")
    p.add_argument("--handle", required=True, help="publisher/name/variant/version, e.g. me/bit-m-r50x1/feature-vector/1")
    _registry_arg(p)
    p.add_argument("--classifier", action="store_true",
                   help="export the logits (the model's head) instead of the pre-logits feature vector")
    p.add_argument("--weights", default=None,
                   help="for zoo names: 'pretrained', a URL or an .npz path (default: random init)")
    p.add_argument("--fold", action="store_true",
                   help="fold weight standardization into the kernels: faster, serving only (not fine-tunable)")
    p.add_argument("--labels", default=None, help="a text file with one class name per line (classifiers)")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("registry", help="list, show, verify, serve or remove published models")
    sub = p.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    q = sub.add_parser("list", help="list published models")
    _registry_arg(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_list)
    q = sub.add_parser("show", help="print a model's metadata.json")
    q.add_argument("handle")
    _registry_arg(q)
    q.set_defaults(func=_show)
    q = sub.add_parser("verify", help="check checksums (all models when no handle is given); exit 1 on problems")
    q.add_argument("handles", nargs="*")
    _registry_arg(q)
    q.set_defaults(func=_verify)
    q = sub.add_parser("serve", help="serve the registry over HTTP for tensorflow_hub clients (read-only)")
    _registry_arg(q)
    q.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=8000, help="port (0 picks a free one; default 8000)")
    q.set_defaults(func=_serve)
    q = sub.add_parser("remove", help="delete a published version")
    q.add_argument("handle")
    _registry_arg(q)
    q.set_defaults(func=_remove)


def _registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", "--root", dest="registry", default=None,
                   help="registry root (default: $BIT_KERAS_REGISTRY or <bit_keras cache>/registry)")


def _load_model(args: argparse.Namespace):
    """(the Keras model, its zoo entry name or None for a .keras file)."""
    import keras

    import bit_keras

    path = Path(args.model).expanduser()
    if path.suffix == ".keras":
        if not path.is_file():
            raise ConfigError(f"{path}: no such .keras file; pass a zoo name (bit-keras list) or an existing .keras file")
        if args.weights:
            raise ConfigError("--weights applies to zoo names; a .keras file carries its own weights")
        return keras.saving.load_model(path), None
    info = bit_keras.get_model_info(args.model)
    if args.weights is None:
        print(f"note: exporting {info.name} with random weights (pass --weights pretrained for the published ones)",
              file=sys.stderr)
    model = bit_keras.create_model(info.name, weights=args.weights,
                                   num_classes=info.num_classes if args.classifier else None)
    return model, info.name


def _export(args: argparse.Namespace) -> int:
    from hub_export.saved_model import export
    from hub_export.registry import Registry

    registry = Registry(args.registry)
    registry.ensure_available(args.handle)  # fail before the (slow) export
    model, preset = _load_model(args)
    registry.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=registry.root))
    try:
        exported = export(model, scratch / "model", kind="classifier" if args.classifier else "feature_vector",
                          fold_standardization=args.fold, labels=args.labels, preset=preset)
        path = registry.publish(exported, args.handle)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"published {args.handle} -> {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from hub_export.registry import Registry

    models = Registry(args.registry).list()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print(f"no models in {Registry(args.registry).root}")
    for m in models:
        size = f"{(m['size_bytes'] or 0) / 1e6:.1f} MB"
        print(f"{m['handle']}  {m['kind'] or '?'}  {m['arch'] or '?'}  {m['parameters'] or '?'} params  {size}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from hub_export.registry import Registry

    print(json.dumps(Registry(args.registry).show(args.handle), indent=2))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from hub_export.registry import Registry, RegistryError

    registry = Registry(args.registry)
    handles = args.handles or [m["handle"] for m in registry.list()]
    if not handles:
        print(f"nothing to verify: no models in {registry.root}")
    bad = 0
    for handle in handles:
        try:
            problems = registry.verify(handle)
        except RegistryError as e:
            problems = [str(e)]
        print(f"{handle}: {'OK' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"  {problem}")
        bad += bool(problems)
    return 1 if bad else 0


def _serve(args: argparse.Namespace) -> int:
    from hub_export.server import RegistryServer

    try:
        server = RegistryServer(args.registry, args.host, args.port)
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {e}; choose another --port") from e
    print(f"serving registry {server.registry.root} at {server.url}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def _remove(args: argparse.Namespace) -> int:
    from hub_export.registry import Registry

    Registry(args.registry).remove(args.handle)
    print(f"removed {args.handle}")
    return 0
