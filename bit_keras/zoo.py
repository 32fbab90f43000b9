"""The BiT model zoo: every published BiT model name with its metadata.

Names follow the official release: ``BiT-S-<arch>`` (upstream ILSVRC-2012, 1000 classes),
``BiT-M-<arch>`` (upstream ImageNet-21k, 21843 classes), ``BiT-L-<arch>`` (JFT-300M; architecture only,
its weights were never published), the ILSVRC-2012 and CIFAR-10 fine-tunes of BiT-M
(``BiT-M-R50x1-ILSVRC2012``, ``BiT-M-R50x1-CIFAR10``) and the distilled R50x1 students and their R152x2
teachers. Each entry carries what a user needs to use it well: architecture, upstream data, classes,
the official weight URL, the recommended resolution and where its label names come from.

The weight base URL is ``https://storage.googleapis.com/bit_models/``; set ``$BIT_KERAS_WEIGHTS_URL`` to use
a mirror.

Example:
    >>> from bit_keras.zoo import get_model_info, list_models
    >>> list_models("BiT-S-R50*")
    ['BiT-S-R50x1', 'BiT-S-R50x3']
    >>> get_model_info("BiT-M-R50x1").num_classes
    21843
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass

from bit_keras.errors import ConfigError, UnknownModelError, WeightsUnavailableError
from bit_keras.resnet import ARCHS, ArchSpec, register_arch

DEFAULT_WEIGHTS_URL = "https://storage.googleapis.com/bit_models/"
WEIGHTS_URL_ENV = "BIT_KERAS_WEIGHTS_URL"

ILSVRC2012 = "ILSVRC-2012"
IMAGENET21K = "ImageNet-21k"
JFT300M = "JFT-300M"

CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def weights_base_url() -> str:
    """The base URL weight files are downloaded from (``$BIT_KERAS_WEIGHTS_URL`` overrides it).

    Example:
        >>> weights_base_url().startswith("http")
        True
    """
    base = os.environ.get(WEIGHTS_URL_ENV) or DEFAULT_WEIGHTS_URL
    return base if base.endswith("/") else base + "/"


def _resolve(location: str | None) -> str | None:
    if not location:
        return None
    if "://" in location or os.path.isabs(location):
        return location
    return weights_base_url() + location


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of one zoo entry.

    Attributes:
        name: the zoo name, e.g. ``BiT-M-R50x1``.
        arch: the architecture name, a key of ``bit_keras.resnet.ARCHS``.
        upstream: the pre-training data: ILSVRC-2012, ImageNet-21k or JFT-300M.
        num_classes: the size of the checkpoint's head.
        weights_file: path of the ``.npz`` relative to the weight base URL (or an absolute URL or local
            path, for custom entries); None if never published.
        resolution: the recommended input side in pixels (resize the image to it, no crop).
        fine_tuned_on: the downstream data of a fine-tuned or distilled entry, else None.
        labels_file: label-name file (relative to the base URL), for ILSVRC-2012 and ImageNet-21k heads.
        labels: label names shipped with the entry (CIFAR-10).
        multi_label: True where the head was trained with sigmoid cross-entropy (ImageNet-21k).
        sha256: expected checksum of the weight file, where known.
        description: one line for humans.
    """

    name: str
    arch: str
    upstream: str
    num_classes: int
    weights_file: str | None
    resolution: int
    fine_tuned_on: str | None = None
    labels_file: str | None = None
    labels: tuple[str, ...] | None = None
    multi_label: bool = False
    sha256: str | None = None
    description: str = ""

    @property
    def spec(self) -> ArchSpec:
        return ARCHS[self.arch]

    @property
    def weights_url(self) -> str | None:
        """The weight file's URL (or local path, for registered custom entries)."""
        return _resolve(self.weights_file)

    @property
    def labels_url(self) -> str | None:
        return _resolve(self.labels_file)

    @property
    def has_weights(self) -> bool:
        return self.weights_file is not None

    def to_dict(self) -> dict:
        """The metadata as plain JSON-able values (URLs resolved)."""
        spec = self.spec
        return {
            "name": self.name,
            "arch": self.arch,
            "depths": list(spec.depths),
            "width": spec.width,
            "feature_dim": spec.feature_dim,
            "upstream": self.upstream,
            "fine_tuned_on": self.fine_tuned_on,
            "num_classes": self.num_classes,
            "multi_label": self.multi_label,
            "resolution": self.resolution,
            "weights_url": self.weights_url,
            "labels_url": self.labels_url,
            "sha256": self.sha256,
            "description": self.description,
        }


def _build_zoo() -> dict[str, ModelInfo]:
    zoo: dict[str, ModelInfo] = {}

    def add(info: ModelInfo) -> None:
        zoo[info.name] = info

    for arch in ARCHS:
        add(ModelInfo(f"BiT-S-{arch}", arch, ILSVRC2012, 1000, f"BiT-S-{arch}.npz", 224,
                      labels_file="ilsvrc2012_wordnet_lemmas.txt",
                      description=f"{arch} pre-trained on ILSVRC-2012 (1.3M images, 1000 classes)"))
        add(ModelInfo(f"BiT-M-{arch}", arch, IMAGENET21K, 21843, f"BiT-M-{arch}.npz", 224,
                      labels_file="imagenet21k_wordnet_lemmas.txt", multi_label=True,
                      description=f"{arch} pre-trained on ImageNet-21k (14M images, 21843 classes, sigmoid head)"))
        add(ModelInfo(f"BiT-L-{arch}", arch, JFT300M, 18291, None, 224,
                      description=f"{arch} as pre-trained on JFT-300M in the paper: architecture only, "
                                  "the weights were never published"))
        # Google's own evaluation of the ILSVRC-2012 fine-tunes feeds 384 px (x1, x3) and 480 px (x4).
        add(ModelInfo(f"BiT-M-{arch}-ILSVRC2012", arch, IMAGENET21K, 1000, f"BiT-M-{arch}-ILSVRC2012.npz",
                      480 if arch.endswith("x4") else 384, fine_tuned_on=ILSVRC2012,
                      labels_file="ilsvrc2012_wordnet_lemmas.txt",
                      description=f"BiT-M-{arch} fine-tuned on ILSVRC-2012"))
    add(ModelInfo("BiT-M-R50x1-CIFAR10", "R50x1", IMAGENET21K, 10, "BiT-M-R50x1-CIFAR10.npz", 128,
                  fine_tuned_on="CIFAR-10", labels=CIFAR10_LABELS,
                  description="BiT-M-R50x1 fine-tuned on CIFAR-10 (97.6% top-1 at 128 px)"))
    for res, top1 in ((224, 82.8), (160, 80.5)):
        add(ModelInfo(f"BiT-M-R50x1-distilled-{res}", "R50x1", IMAGENET21K, 1000, f"distill/R50x1_{res}.npz", res,
                      fine_tuned_on=ILSVRC2012, labels_file="ilsvrc2012_wordnet_lemmas.txt",
                      description=f"R50x1 distilled from BiT-M-R152x2 on ILSVRC-2012 ({top1}% top-1 at {res} px)"))
    for res in (224, 384):
        add(ModelInfo(f"BiT-M-R152x2-teacher-{res}", "R152x2", IMAGENET21K, 1000, f"distill/R152x2_T_{res}.npz", res,
                      fine_tuned_on=ILSVRC2012, labels_file="ilsvrc2012_wordnet_lemmas.txt",
                      description=f"the BiT-M-R152x2 distillation teacher, fine-tuned on ILSVRC-2012 at {res} px"))
    # Not a published model: a 0.5M-parameter BiT (same design, GroupNorm(8)) for demos, tutorials and tests.
    register_arch(TINY_ARCH, ArchSpec((1, 1, 1, 1), 0.25, groups=8))
    add(ModelInfo("BiT-tiny", TINY_ARCH, "none (random init)", 1000, None, 32,
                  description="a tiny BiT (depths 1-1-1-1, width 0.25, GroupNorm(8)) for demos and tests; "
                              "pre-train it with bit_keras.pretrain(preset='tiny')"))
    return zoo


TINY_ARCH = "R14x0.25"
ZOO: dict[str, ModelInfo] = _build_zoo()


def register_model(info: ModelInfo, *, overwrite: bool = False) -> ModelInfo:
    """Add a custom entry (e.g. your own pre-trained BiT) so that ``create_model(info.name)`` builds it.

    Its ``arch`` must be registered (``bit_keras.resnet.register_arch``) or one of the six BiT archs.

    Example:
        >>> from bit_keras.resnet import ArchSpec, register_arch
        >>> _ = register_arch("R14x0.5", ArchSpec((1, 1, 1, 1), 0.5))
        >>> register_model(ModelInfo("my-tiny-bit", "R14x0.5", "digits", 10, None, 32), overwrite=True).name
        'my-tiny-bit'
    """
    if info.arch not in ARCHS:
        raise ConfigError(f"{info.name}: unknown architecture {info.arch!r}; register it with "
                         "bit_keras.register_arch first")
    if info.name in ZOO and not overwrite and ZOO[info.name] != info:
        raise ConfigError(f"a model named {info.name!r} is already registered; pass overwrite=True to replace it")
    ZOO[info.name] = info
    return info


def list_models(pattern: str | None = None, *, pretrained: bool | None = None) -> list[str]:
    """Sorted zoo names, optionally filtered by a case-insensitive shell pattern and weight availability.

    Example:
        >>> list_models("*CIFAR10")
        ['BiT-M-R50x1-CIFAR10']
        >>> "BiT-L-R50x1" in list_models(pretrained=False)
        True
    """
    names = sorted(ZOO)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
    if pretrained is not None:
        names = [n for n in names if ZOO[n].has_weights == pretrained]
    return names


def get_model_info(name: str) -> ModelInfo:
    """The metadata of zoo entry ``name`` (case-insensitive); unknown names list the closest ones.

    Example:
        >>> get_model_info("bit-s-r101x3").arch
        'R101x3'
    """
    if name in ZOO:
        return ZOO[name]
    by_lower = {n.lower(): n for n in ZOO}
    if name.lower() in by_lower:
        return ZOO[by_lower[name.lower()]]
    close = difflib.get_close_matches(name, list(ZOO), n=5, cutoff=0.5)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise UnknownModelError(
        f"Unknown BiT model {name!r}.{hint} bit_keras.list_models() lists all {len(ZOO)} names."
    )
