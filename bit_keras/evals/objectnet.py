"""ObjectNet: an ILSVRC-2012 classifier evaluated on a user's copy of ObjectNet, through its 113 classes that
overlap ImageNet-1k (:func:`objectnet`).

* The class mappings are the ObjectNet release's own (``objectnet-1.0/mappings``), shipped verbatim in
  ``bit_keras/evals/data`` (their source and the dataset's terms are in the README.md there):
  folder -> ObjectNet label, ObjectNet label -> ImageNet class names (several separated by ``"; "``), the names
  of the ILSVRC-2012 ids, and the standard (PyTorch/TFDS, sorted-WordNet-id) output index -> ILSVRC-2012 id.
  :func:`objectnet_classes` resolves them to the 113 overlapping classes and their output indices (0..999).
* Scoring, per image of an overlapping class: the model's 1000 logits are ranked and the prediction is correct
  when it is one of the ImageNet classes mapped to the image's ObjectNet class (top-1; top-5: one of the five
  best is). This is the ObjectNet paper's protocol (Barbu et al., 2019), the default (``restrict=False``).
  The "restricted" protocol (CLIP, WiSE-FT and most robustness benchmarks since Taori et al., 2020) scores each
  of the 113 ObjectNet classes by the largest logit of its mapped ImageNet classes and ranks those 113 scores;
  it gives higher numbers. Both are computed on every run (it costs nothing); ``restrict`` picks the headline
  one. Whether the BiT paper's ObjectNet numbers restrict the predictions is not stated in what we could check:
  compare with care. Accuracies are over images (not a mean of per-class accuracies); per-class numbers are
  reported too.
* The release's images carry a 1-pixel red border; as the release's own loading code and common practice do,
  ``border=2`` pixels are cropped from each side of the decoded image before the model's preprocessing
  (the zoo entry's resize / centre crop / interpolation, :func:`bit_keras.evals.features.preprocessing_for`).

ObjectNet may be used to evaluate models only, never to train them (the dataset's license).

Example:
    >>> classes = objectnet_classes()
    >>> len(classes), classes[0].folder, classes[0].imagenet, classes[0].indices
    (113, 'alarm_clock', ('analog clock', 'digital clock'), (409, 530))
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bit_keras.errors import ConfigError, DataError

RESULTS_FILE = "objectnet.json"
LOGITS_DIR = "logits"
NUM_IMAGENET_CLASSES = 1000
DATA_PACKAGE = "bit_keras.evals"
FOLDER_TO_LABEL = "data/folder_to_objectnet_label.json"
LABEL_TO_IMAGENET = "data/objectnet_to_imagenet_1k.json"
INDEX_TO_ILSVRC_ID = "data/pytorch_to_imagenet_2012_id.json"
ILSVRC_ID_NAMES = "data/imagenet_to_label_2012_v2.txt"


@dataclass(frozen=True)
class ObjectNetClass:
    """One of the 113 ObjectNet classes that overlap ImageNet-1k: its image folder, its ObjectNet label, the
    ImageNet class names it maps to and their indices in the standard 1000-class output order."""

    folder: str
    label: str
    imagenet: tuple[str, ...]
    indices: tuple[int, ...]


def _read(name: str) -> str:
    return resources.files(DATA_PACKAGE).joinpath(name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def objectnet_classes() -> tuple[ObjectNetClass, ...]:
    """The overlapping ObjectNet classes, sorted by folder name, from the shipped release mappings.

    Each mapped ImageNet name is looked up among the ILSVRC-2012 id names (it must name exactly one id), and the
    id is turned into the output index of an ILSVRC-2012 classifier in the standard order.
    """
    folder_to_label: dict[str, str] = json.loads(_read(FOLDER_TO_LABEL))
    label_to_imagenet: dict[str, str] = json.loads(_read(LABEL_TO_IMAGENET))
    index_to_id = {int(k): int(v) for k, v in json.loads(_read(INDEX_TO_ILSVRC_ID)).items()}
    id_names = [line for line in _read(ILSVRC_ID_NAMES).splitlines() if line]
    if sorted(index_to_id) != list(range(NUM_IMAGENET_CLASSES)) or sorted(index_to_id.values()) != sorted(
            range(len(id_names))):
        raise DataError(f"{INDEX_TO_ILSVRC_ID} is not a permutation of the {NUM_IMAGENET_CLASSES} ILSVRC-2012 ids")
    id_to_index = {v: k for k, v in index_to_id.items()}
    label_to_folder = {label: folder for folder, label in folder_to_label.items()}
    classes = []
    for label, names in label_to_imagenet.items():
        if label not in label_to_folder:
            raise DataError(f"ObjectNet label {label!r} of {LABEL_TO_IMAGENET} has no folder in {FOLDER_TO_LABEL}")
        imagenet = tuple(n.strip() for n in names.split(";"))
        indices = []
        for name in imagenet:
            ids = [i for i, n in enumerate(id_names) if n == name]
            if len(ids) != 1:
                raise DataError(f"ImageNet class {name!r} (ObjectNet {label!r}) names {len(ids)} ILSVRC-2012 ids")
            indices.append(id_to_index[ids[0]])
        classes.append(ObjectNetClass(label_to_folder[label], label, imagenet, tuple(indices)))
    return tuple(sorted(classes, key=lambda c: c.folder))


def objectnet_folders() -> dict[str, str]:
    """Every ObjectNet image folder (313) -> its ObjectNet label."""
    return json.loads(_read(FOLDER_TO_LABEL))


# ------------------------------------------------------------------------------------------------- scoring


def score_logits(logits: np.ndarray, targets: np.ndarray, classes: tuple[ObjectNetClass, ...] | None = None,
                 ) -> dict[str, np.ndarray]:
    """Per-image hits of both protocols: ``logits`` [n, 1000], ``targets`` [n] (indices into ``classes``) ->
    boolean arrays ``top1``, ``top5`` (all 1000 classes) and ``top1_restricted``, ``top5_restricted`` (the
    ObjectNet classes, each scored by the largest logit of its mapped ImageNet classes). Ties go to the lower
    index.

    Example:
        >>> logits = np.zeros((1, 1000)); logits[0, 530] = 2.0; logits[0, 954] = 1.0   # digital clock, banana
        >>> {k: v.tolist() for k, v in score_logits(logits, np.array([0])).items()}   # class 0: alarm_clock
        {'top1': [True], 'top5': [True], 'top1_restricted': [True], 'top5_restricted': [True]}
    """
    classes = objectnet_classes() if classes is None else classes
    logits = np.asarray(logits, np.float64)
    targets = np.asarray(targets, np.int64)
    mapped = np.zeros((len(classes), logits.shape[1]), bool)
    for c, cls in enumerate(classes):
        mapped[c, list(cls.indices)] = True
    order = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    hits = np.take_along_axis(mapped[targets], order, axis=1)  # [n, 5]: is the k-th best class a mapped one
    restricted = np.stack([logits[:, list(cls.indices)].max(axis=1) for cls in classes], axis=1)
    rorder = np.argsort(-restricted, axis=1, kind="stable")[:, :5]
    rhits = rorder == targets[:, None]
    return {"top1": hits[:, 0], "top5": hits.any(axis=1), "top1_restricted": rhits[:, 0],
            "top5_restricted": rhits.any(axis=1)}


# ------------------------------------------------------------------------------------------------- result


@dataclass
class ObjectNetResult:
    """What :func:`objectnet` measured. ``top1``/``top5``: the headline protocol's (``restricted``), over the
    images of the overlapping classes; ``protocols``: both protocols' top-1/top-5; ``per_class``: folder ->
    its numbers; ``skipped_folders``: folders not scored (ObjectNet classes without an ImageNet counterpart, and
    folders that are not ObjectNet classes) -> their number of files."""

    top1: float
    top5: float
    restricted: bool
    num_images: int
    protocols: dict[str, dict[str, float]]
    per_class: dict[str, dict[str, Any]]
    skipped_folders: dict[str, int] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    folder: str = ""
    border: int = 2
    computed: int = 0  # forward passes this call made (images whose logits were cached cost none)
    output_dir: Path | None = None

    @property
    def skipped_images(self) -> int:
        return sum(self.skipped_folders.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "folder": self.folder, "protocol": "restricted" if self.restricted else "all-1000",
            "top1": self.top1, "top5": self.top5, "num_images": self.num_images,
            "num_classes": len(self.per_class), "protocols": self.protocols, "border": self.border,
            "preprocessing": self.preprocessing, "skipped_images": self.skipped_images,
            "skipped_folders": self.skipped_folders, "per_class": self.per_class,
        }

    def table(self, max_classes: int | None = None) -> str:
        """A plain-text summary: overall numbers of both protocols, then one line per class."""
        head = "restricted" if self.restricted else "all-1000"
        lines = [f"ObjectNet: {self.model} on {self.num_images} images of {len(self.per_class)} classes "
                 f"(headline protocol: {head}; {self.skipped_images} images in {len(self.skipped_folders)} "
                 "non-overlapping folders skipped)",
                 f"{'protocol':<12} {'top-1':>7} {'top-5':>7}"]
        for name, p in self.protocols.items():
            lines.append(f"{name:<12} {100 * p['top1']:6.2f}% {100 * p['top5']:6.2f}%")
        width = max([len(k) for k in self.per_class] + [5])
        lines.append(f"{'class':<{width}} {'images':>6} {'top-1':>7} {'top-5':>7} {'r-top-1':>7} {'r-top-5':>7}")
        rows = list(self.per_class.items())[:max_classes]
        for name, c in rows:
            lines.append(f"{name:<{width}} {c['images']:>6} {100 * c['top1']:6.2f}% {100 * c['top5']:6.2f}% "
                         f"{100 * c['top1_restricted']:6.2f}% {100 * c['top5_restricted']:6.2f}%")
        if max_classes is not None and len(self.per_class) > max_classes:
            lines.append(f"... and {len(self.per_class) - max_classes} more classes")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- runner


def images_root(folder: str | os.PathLike) -> Path:
    """The folder that holds the class folders: ``folder/images`` when ``folder`` is ``objectnet-1.0``, else
    ``folder`` itself. DataError when it does not exist or holds no ObjectNet class folder."""
    from bit_keras.data.images import class_folders, printable

    root = Path(folder)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(f"ObjectNet folder {printable(str(root))} {what}: pass objectnet-1.0 or objectnet-1.0/images")
    if (root / "images").is_dir():
        root = root / "images"
    known = objectnet_folders()
    try:
        found = [name for name in class_folders(str(root)) if name in known]
    except DataError:  # no sub-folders at all
        found = []
    if not found:
        raise DataError(
            f"{printable(str(root))} has no ObjectNet class folders (e.g. {printable(str(root / 'alarm_clock'))}): "
            "pass objectnet-1.0 or objectnet-1.0/images of the ObjectNet release")
    return root


def _classifier(model: Any, weights: Any, input_range: tuple[float, float], progress: bool) -> tuple[Any, Any]:
    from bit_keras.evals.features import built_model
    from bit_keras.models.presets import get_model_info

    if isinstance(model, (str, os.PathLike)):
        info = get_model_info(os.fspath(model))
        if info.num_classes != NUM_IMAGENET_CLASSES:
            raise ConfigError(f"{info.name} has {info.num_classes} outputs; ObjectNet needs an ILSVRC-2012 "
                              f"classifier with {NUM_IMAGENET_CLASSES} (e.g. BiT-M-R50x1-ILSVRC2012)")
    return built_model(model, weights=weights, input_range=input_range, progress=progress)


def objectnet(model: Any, folder: str | os.PathLike, *, weights: Any = "pretrained", restrict: bool = False,
              output_dir: str | os.PathLike | None = None, border: int = 2, resolution: int | None = None,
              crop_pct: float | None = None, interpolation: str | None = None,
              input_range: tuple[float, float] = (0.0, 1.0), batch_size: int = 64,
              progress: bool = True) -> ObjectNetResult:
    """Evaluate an ILSVRC-2012 classifier on ObjectNet's 113 classes that overlap ImageNet-1k.

    Args:
        model: a zoo name with a 1000-class head (e.g. ``"BiT-M-R50x1-ILSVRC2012"``; built with ``weights``)
            or a ``keras.Model`` whose output is 1000 ImageNet logits in the standard order.
        folder: ``objectnet-1.0`` or its ``images`` sub-folder (``<folder>/<class folder>/*.png``). Folders of
            ObjectNet classes without an ImageNet counterpart, and folders that are not ObjectNet's, are skipped
            (counted in ``skipped_folders``); a bad image stops the run with a DataError naming it.
        restrict: the headline protocol: False (default): the prediction over all 1000 classes must be a mapped
            class (the ObjectNet paper); True: the prediction among the 113 ObjectNet classes (each scored by its
            best mapped logit). Both are always reported in ``protocols``.
        output_dir: where ``objectnet.json`` (overall and per-class numbers) is written atomically, and the
            logits are cached per image (``logits/``): a run interrupted or repeated computes only what is missing.
        border: pixels cropped from each side of every image first (the release's 1-pixel red border).
        resolution, crop_pct, interpolation: override the zoo entry's preprocessing; a ``keras.Model`` takes its
            input size as the resolution (resized straight, bilinear) unless given.
        input_range: the range of the model's input (the zoo model is built with it).

    Raises:
        DataError: no such folder, no ObjectNet class folder in it, or a bad image. ConfigError: a model without
            1000 outputs.

    Example:
        >>> objectnet("BiT-M-R50x1-ILSVRC2012", "/no/such/objectnet-1.0")
        Traceback (most recent call last):
        ...
        bit_keras.errors.DataError: ObjectNet folder /no/such/objectnet-1.0 does not exist: pass objectnet-1.0 or objectnet-1.0/images
    """
    import tensorflow as tf

    from bit_keras.atomic import write_json
    from bit_keras.data.images import decode_files, list_images, printable, scan_files
    from bit_keras.evals.features import FeatureStore, extract_features, preprocessing_for

    if border < 0:
        raise ConfigError(f"border must be >= 0, got {border}")
    root = images_root(folder)
    classes = objectnet_classes()
    by_folder = {c.folder: i for i, c in enumerate(classes)}
    known = objectnet_folders()
    net, info = _classifier(model, weights, tuple(input_range), progress)  # type: ignore[arg-type]
    if net.outputs and net.outputs[0].shape[-1] != NUM_IMAGENET_CLASSES:
        raise ConfigError(f"model {net.name!r} outputs {tuple(net.outputs[0].shape)}: ObjectNet needs "
                          f"{NUM_IMAGENET_CLASSES} ILSVRC-2012 logits")
    image_size = None
    if info is None and resolution is None:
        shape = tuple(net.inputs[0].shape[1:3]) if net.inputs else (None, None)
        if None in shape:
            raise ConfigError(f"model {net.name!r} has no fixed input size: pass resolution=")
        image_size = shape
    prep = preprocessing_for(info, resolution=resolution, crop_pct=crop_pct, interpolation=interpolation,
                             input_range=input_range, image_size=image_size)

    paths: list[str] = []
    targets: list[int] = []
    skipped: dict[str, int] = {}
    for name in sorted(os.listdir(root)):
        sub = root / name
        if name.startswith(".") or not sub.is_dir():
            continue
        files, problems = list_images(str(sub))
        if problems:
            raise DataError(f"cannot list {printable(problems[0][0])}: {problems[0][1]}")
        if name not in by_folder:
            skipped[name if name in known else f"{name} (not an ObjectNet folder)"] = len(files)
            continue
        paths += files
        targets += [by_folder[name]] * len(files)
    if not paths:
        raise DataError(f"{printable(str(root))} has no images in the ObjectNet classes that overlap ImageNet-1k")
    scans = scan_files(paths)
    bad = [(s.path, s.problem) for s in scans if s.problem]
    if bad:
        listed = "; ".join(f"{printable(p)} ({why})" for p, why in bad[:10])
        more = f"; ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DataError(f"{len(bad)} bad image file(s) in {printable(str(root))}: {listed}{more}. "
                        "Fix: remove or replace them (the release's images all decode)")

    ds = decode_files(np.array([os.fsencode(p) for p in paths]), [printable(p) for p in paths],
                      np.array([s.route for s in scans], np.int32), np.array(targets, np.int64))

    def crop(image: tf.Tensor) -> tf.Tensor:
        if border == 0:
            return image
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        keep = tf.logical_and(h > 2 * border, w > 2 * border)  # too small to crop: left whole
        return tf.cond(keep, lambda: image[border:h - border, border:w - border], lambda: image)

    # Logits are cached per (cropped) image like the probe's features (evals.features.FeatureStore, keyed by the
    # model's weights and the preprocessing; the crop is in the pixels the image is fingerprinted from), under
    # output_dir/logits: an interrupted or repeated run computes only what is missing.
    store = FeatureStore(net, prep, Path(output_dir) / LOGITS_DIR if output_dir is not None else None,
                         description={"what": "ObjectNet logits", "border": border})
    ds = ds.map(lambda x, y: (crop(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    try:
        logits, y_all, computed = extract_features(net, ds, prep, store, batch_size=batch_size, progress=progress)
    except tf.errors.InvalidArgumentError as err:  # decode_files names the file that failed
        text = err.message
        text = text[text.find("image file "):] if "image file " in text else text
        raise DataError(text.split("\n")[0].rstrip("] ")) from None
    hits = score_logits(logits, y_all, classes)

    per_class: dict[str, dict[str, Any]] = {}
    for c in sorted(set(y_all.tolist())):
        mask = y_all == c
        cls = classes[c]
        per_class[cls.folder] = {"label": cls.label, "imagenet": list(cls.imagenet), "images": int(mask.sum()),
                                 **{k: float(v[mask].mean()) for k, v in hits.items()}}
    protocols = {"all-1000": {"top1": float(hits["top1"].mean()), "top5": float(hits["top5"].mean())},
                 "restricted": {"top1": float(hits["top1_restricted"].mean()),
                                "top5": float(hits["top5_restricted"].mean())}}
    head = protocols["restricted" if restrict else "all-1000"]
    result = ObjectNetResult(
        top1=head["top1"], top5=head["top5"], restricted=bool(restrict), num_images=len(y_all),
        protocols=protocols, per_class=per_class, skipped_folders=skipped, preprocessing=prep.to_dict(),
        model=info.name if info is not None else net.name, folder=str(root), border=border, computed=computed,
        output_dir=Path(output_dir) if output_dir is not None else None)
    if result.output_dir is not None:
        result.output_dir.mkdir(parents=True, exist_ok=True)
        write_json(result.output_dir / RESULTS_FILE, result.to_dict())
    return result
