"""The BiT model zoo as data: every published BiT model with its weights and preprocessing, in one table.

Names follow the official release (google-research/big_transfer README): ``BiT-S-<arch>`` (upstream
ILSVRC-2012, 1000 classes), ``BiT-M-<arch>`` (upstream ImageNet-21k, 21843 classes, sigmoid head),
``BiT-L-<arch>`` (JFT-300M; architecture only, its weights were never published), the ILSVRC-2012 and
CIFAR-10 fine-tunes of BiT-M, the distilled ``BiT-R50x1`` students and their ``BiT-M-R152x2`` teachers.
Each :class:`ModelInfo` carries what a user needs to use the weights well: the architecture, the upstream
data, the head, the weight file, and the preprocessing the weights expect (resolution, ``crop_pct``,
interpolation, input range), with the source of those numbers. ``bit-keras list`` and the README's model
table are generated from :data:`PRESETS`. Plain Python: no TensorFlow.

The weight base URL is ``https://storage.googleapis.com/bit_models/``; set ``$BIT_KERAS_WEIGHTS_URL`` to use
a mirror.

Example:
    >>> list_models("BiT-S-R50*")
    ['BiT-S-R50x1', 'BiT-S-R50x3']
    >>> info = get_model_info("BiT-M-R50x1-ILSVRC2012")
    >>> info.resolution, info.crop_pct, info.interpolation
    (448, 1.0, 'bilinear')
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import warnings
from dataclasses import dataclass, field

from bit_keras.errors import ConfigError, UnknownModelError
from bit_keras.models.spec import ARCHS, TINY_ARCH, ArchSpec

DEFAULT_WEIGHTS_URL = "https://storage.googleapis.com/bit_models/"
WEIGHTS_URL_ENV = "BIT_KERAS_WEIGHTS_URL"

ILSVRC2012 = "ILSVRC-2012"
IMAGENET21K = "ImageNet-21k"
JFT300M = "JFT-300M"
CIFAR10_LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BIT_ARCHS = ("R50x1", "R50x3", "R101x1", "R101x3", "R152x2", "R152x4")

# Where the preprocessing numbers come from.
TIMM = "timm default_cfgs (resnetv2_*_bit)"
OFFICIAL = "google-research/big_transfer README"
HYPERRULE = "BiT-HyperRule (resize 160 / crop 128 for images under 96x96)"


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
    """One zoo entry: weights and how to feed them.

    Attributes:
        name: the zoo name, e.g. ``BiT-M-R50x1``.
        arch: the architecture name, a key of :data:`bit_keras.models.spec.ARCHS`.
        upstream: the pre-training data: ILSVRC-2012, ImageNet-21k or JFT-300M.
        num_classes: the size of the checkpoint's head.
        weights_file: path of the ``.npz`` relative to the weight base URL (or an absolute URL or local
            path, for custom entries); None if never published.
        resolution: the input side the weights are evaluated at.
        crop_pct: resize the shorter side to ``resolution / crop_pct``, then centre-crop ``resolution``
            (1.0: resize straight to ``resolution``).
        interpolation: ``"bilinear"`` or ``"bicubic"``.
        input_range: the pixel range the checkpoint was trained on; ``create_model(input_range=...)`` maps the
            range you feed onto it.
        preprocessing_source: where the four numbers above come from.
        fine_tuned_on: the downstream data of a fine-tuned or distilled entry, else None.
        labels_file: label-name file (relative to the base URL), for ILSVRC-2012 and ImageNet-21k heads.
        labels: label names shipped with the entry (CIFAR-10).
        multi_label: True where the head was trained with sigmoid cross-entropy (ImageNet-21k).
        sha256: expected checksum of the weight file, where known.
        size: expected size of the weight file in bytes, where known.
        description: one line for humans.
    """

    name: str
    arch: str
    upstream: str
    num_classes: int
    weights_file: str | None
    resolution: int
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    input_range: tuple[float, float] = (-1.0, 1.0)
    preprocessing_source: str = ""
    fine_tuned_on: str | None = None
    labels_file: str | None = None
    labels: tuple[str, ...] | None = None
    multi_label: bool = False
    sha256: str | None = None
    size: int | None = None
    description: str = field(default="", compare=False)

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
        """The metadata as plain JSON-able values (URLs resolved, architecture and parameter count included).

        Example:
            >>> get_model_info("BiT-M-R50x1-CIFAR10").to_dict()["parameters"]
            23520842
        """
        spec = self.spec
        return {
            "name": self.name,
            "arch": self.arch,
            "depths": list(spec.depths),
            "width": spec.width,
            "groups": spec.groups,
            "feature_dim": spec.feature_dim,
            "parameters": spec.param_count(self.num_classes),
            "upstream": self.upstream,
            "fine_tuned_on": self.fine_tuned_on,
            "num_classes": self.num_classes,
            "multi_label": self.multi_label,
            "preprocessing": {"resolution": self.resolution, "crop_pct": self.crop_pct,
                              "interpolation": self.interpolation, "input_range": list(self.input_range),
                              "source": self.preprocessing_source},
            "weights_url": self.weights_url,
            "labels_url": self.labels_url,
            "sha256": self.sha256,
            "size": self.size,
            "description": self.description,
        }


def _table() -> list[ModelInfo]:
    """Every published entry. Resolutions: timm's default_cfgs where timm has the weights, else the release."""
    rows: list[ModelInfo] = []
    for arch in BIT_ARCHS:
        rows += [
            ModelInfo(f"BiT-S-{arch}", arch, ILSVRC2012, 1000, f"BiT-S-{arch}.npz", 224, 0.875, "bilinear",
                      preprocessing_source=TIMM, labels_file="ilsvrc2012_wordnet_lemmas.txt",
                      description=f"{arch} pre-trained on ILSVRC-2012 (1.3M images, 1000 classes)"),
            ModelInfo(f"BiT-M-{arch}", arch, IMAGENET21K, 21843, f"BiT-M-{arch}.npz", 224, 0.875, "bilinear",
                      preprocessing_source=TIMM, labels_file="imagenet21k_wordnet_lemmas.txt", multi_label=True,
                      description=f"{arch} pre-trained on ImageNet-21k (14M images, 21843 classes, sigmoid head)"),
            ModelInfo(f"BiT-L-{arch}", arch, JFT300M, 18291, None, 224, 0.875, "bilinear",
                      description=f"{arch} as pre-trained on JFT-300M in the paper: architecture only, "
                                  "the weights were never published"),
            ModelInfo(f"BiT-M-{arch}-ILSVRC2012", arch, IMAGENET21K, 1000, f"BiT-M-{arch}-ILSVRC2012.npz",
                      480 if arch == "R152x4" else 448, 1.0, "bilinear", preprocessing_source=TIMM,
                      fine_tuned_on=ILSVRC2012, labels_file="ilsvrc2012_wordnet_lemmas.txt",
                      description=f"BiT-M-{arch} fine-tuned on ILSVRC-2012"),
        ]
    rows.append(ModelInfo("BiT-M-R50x1-CIFAR10", "R50x1", IMAGENET21K, 10, "BiT-M-R50x1-CIFAR10.npz", 128, 1.0,
                          "bilinear", preprocessing_source=HYPERRULE, fine_tuned_on="CIFAR-10",
                          labels=CIFAR10_LABELS,
                          description="BiT-M-R50x1 fine-tuned on CIFAR-10 (97.6% top-1 at 128 px)"))
    for res, top1 in ((224, 82.8), (160, 80.5)):
        rows.append(ModelInfo(f"BiT-R50x1-distilled-{res}", "R50x1", ILSVRC2012, 1000, f"distill/R50x1_{res}.npz",
                              res, 0.875, "bicubic", preprocessing_source=f"{OFFICIAL}; {TIMM}",
                              fine_tuned_on=ILSVRC2012, labels_file="ilsvrc2012_wordnet_lemmas.txt",
                              description=f"BiT-R50x1 distilled on ILSVRC-2012 from the BiT-M-R152x2 teacher "
                                          f"({top1}% top-1 at {res} px)"))
    for res, crop in ((224, 0.875), (384, 1.0)):
        rows.append(ModelInfo(f"BiT-M-R152x2-teacher-{res}", "R152x2", IMAGENET21K, 1000,
                              f"distill/R152x2_T_{res}.npz", res, crop, "bicubic",
                              preprocessing_source=f"{OFFICIAL}; {TIMM}", fine_tuned_on=ILSVRC2012,
                              labels_file="ilsvrc2012_wordnet_lemmas.txt",
                              description=f"the BiT-M-R152x2 distillation teacher, fine-tuned on ILSVRC-2012 at "
                                          f"{res} px"))
    rows.append(ModelInfo("BiT-tiny", TINY_ARCH, "none (random init)", 1000, None, 32, 1.0, "bilinear",
                          description="a tiny BiT (depths 1-1-1-1, width 0.25, GroupNorm(8)) for demos and "
                                      "tests; pre-train it with bit_keras.pretrain(preset='tiny')"))
    return rows


PRESETS: dict[str, ModelInfo] = {info.name: info for info in _table()}
# Names of earlier bit-keras releases -> the official name (timm-style deprecations: they still work, with a warning).
ALIASES: dict[str, str] = {
    "BiT-M-R50x1-distilled-224": "BiT-R50x1-distilled-224",
    "BiT-M-R50x1-distilled-160": "BiT-R50x1-distilled-160",
}


def register_model(info: ModelInfo, *, overwrite: bool = False) -> ModelInfo:
    """Add a custom entry (e.g. your own pre-trained BiT) so that ``create_model(info.name)`` builds it.

    Its ``arch`` must be registered (:func:`bit_keras.register_arch`) or one of the BiT archs.

    Example:
        >>> from bit_keras.models.spec import ArchSpec, register_arch
        >>> _ = register_arch("R14x0.5", ArchSpec((1, 1, 1, 1), 0.5))
        >>> register_model(ModelInfo("my-tiny-bit", "R14x0.5", "digits", 10, None, 32), overwrite=True).name
        'my-tiny-bit'
    """
    if info.arch not in ARCHS:
        raise ConfigError(f"{info.name}: unknown architecture {info.arch!r}; register it with "
                          "bit_keras.register_arch first")
    if info.name in PRESETS and not overwrite and PRESETS[info.name] != info:
        raise ConfigError(f"a model named {info.name!r} is already registered; pass overwrite=True to replace it")
    PRESETS[info.name] = info
    return info


def list_models(pattern: str | None = None, *, pretrained: bool | None = None) -> list[str]:
    """Sorted zoo names, optionally filtered by a case-insensitive shell pattern and weight availability.

    Example:
        >>> list_models("*CIFAR10")
        ['BiT-M-R50x1-CIFAR10']
        >>> "BiT-L-R50x1" in list_models(pretrained=False)
        True
    """
    names = sorted(PRESETS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
    if pretrained is not None:
        names = [n for n in names if PRESETS[n].has_weights == pretrained]
    return names


def get_model_info(name: str) -> ModelInfo:
    """The entry ``name`` (case-insensitive); unknown names list the closest ones.

    Example:
        >>> get_model_info("bit-s-r101x3").arch
        'R101x3'
    """
    if name in PRESETS:
        return PRESETS[name]
    by_lower = {n.lower(): n for n in PRESETS}
    if name.lower() in by_lower:
        return PRESETS[by_lower[name.lower()]]
    aliases = {a.lower(): n for a, n in ALIASES.items()}
    if name.lower() in aliases:
        official = aliases[name.lower()]
        warnings.warn(f"{name!r} is now called {official!r} (the official release's name)", DeprecationWarning,
                      stacklevel=2)
        return PRESETS[official]
    close = difflib.get_close_matches(name, list(PRESETS), n=5, cutoff=0.5)
    hint = f" Closest names: {', '.join(close)}." if close else ""
    raise UnknownModelError(
        f"Unknown BiT model {name!r}.{hint} bit_keras.list_models() lists all {len(PRESETS)} names."
    )


def model_table(names: list[str] | None = None) -> str:
    """The zoo as a Markdown table (the README's model table is this output).

    Example:
        >>> print(model_table(["BiT-M-R50x1-CIFAR10"]))  # doctest: +NORMALIZE_WHITESPACE
        | name | arch | parameters | upstream | fine-tuned on | classes | resolution | crop_pct | interpolation |
        |---|---|---:|---|---|---:|---:|---:|---|
        | BiT-M-R50x1-CIFAR10 | R50x1 | 23,520,842 | ImageNet-21k | CIFAR-10 | 10 | 128 | 1.0 | bilinear |
    """
    lines = ["| name | arch | parameters | upstream | fine-tuned on | classes | resolution | crop_pct | interpolation |",
             "|---|---|---:|---|---|---:|---:|---:|---|"]
    for name in names if names is not None else list_models():
        i = PRESETS[name]
        weights = "" if i.has_weights else " (architecture only)"
        lines.append(f"| {i.name}{weights} | {i.arch} | {i.spec.param_count(i.num_classes):,} | {i.upstream} | "
                     f"{i.fine_tuned_on or ''} | {i.num_classes} | {i.resolution} | {i.crop_pct} | {i.interpolation} |")
    return "\n".join(lines)
