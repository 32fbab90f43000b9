"""The 19 VTAB-1k tasks as tensorflow-datasets builders, splits and labels (one :class:`TaskSpec` each).

Written from google-research/task_adaptation (``task_adaptation/data/<file>.py``, named in each spec's
``source``); no code is copied. Every task has the "1k" splits of the reference: ``train800`` (800 training
examples), ``val200`` (200 held-out examples), ``train800val200`` (their union, what the final number is
trained on) and ``test`` (the reference's test split, scored once). Splits that the reference derives from
the split sizes (e.g. caltech101's val = the last 10% of tfds "train") are written out here with the sizes
of the tensorflow-datasets release (``counts``), so that each split is a plain tfds split string.

Labels: the tfds label feature, or a derivation as in the reference (clevr: object count - 3 and the
closest object's depth bin; kitti: the closest vehicle's distance bin; dsprites: the 32 x-positions or 40
orientations binned into 16 classes; smallnorb: azimuth (18) or elevation (9); dmlab: its label).
Images come out as ``uint8 [H, W, 3]`` (greyscale dsprites/smallnorb tiled to three channels, dsprites's
0/1 pixels scaled to 0/255).

Versions are those tensorflow-datasets 4.9.10 ships; two differ from the reference's pins:
oxford_iiit_pet 4.0.0 (reference 3.*; same images, labels and splits) and kitti 3.3.0 (reference 3.1.0).

Example:
    >>> len(TASKS), [len(names) for names in GROUPS.values()]
    (19, [7, 4, 8])
    >>> spec = TASKS["clevr_count"]
    >>> spec.tfds_name, spec.splits["val200"], spec.num_classes, spec.group
    ('clevr:3.1.0', 'train[63000:63200]', 8, 'structured')
    >>> split_sizes(spec)["train800val200"], split_sizes(spec)["test"]
    (1000, 15000)
    >>> prepare_command(TASKS["diabetic_retinopathy"]).startswith("manual download")
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from bit_keras.errors import ConfigError

SPLITS = ("train800", "val200", "train800val200", "test")
REFERENCE = "https://github.com/google-research/task_adaptation/blob/master/task_adaptation/data/"


def _splits_from_train(train_count: int, test: str = "test") -> dict[str, str]:
    """The 1k splits of a task whose validation part is tfds "train" from ``train_count`` on."""
    return {"train800": "train[:800]", "val200": f"train[{train_count}:{train_count + 200}]",
            "train800val200": f"train[:800]+train[{train_count}:{train_count + 200}]", "test": test}


def _splits_with_validation(test: str = "test") -> dict[str, str]:
    """The 1k splits of a task with a tfds "validation" split."""
    return {"train800": "train[:800]", "val200": "validation[:200]",
            "train800val200": "train[:800]+validation[:200]", "test": test}


# ----------------------------------------------------------------------------- derived labels (reference logic)

def _bin(value: tf.Tensor, thresholds: list[float]) -> tf.Tensor:
    """The index of the last threshold strictly below ``value`` (the reference's ``max(where(thrs - v < 0))``)."""
    below = tf.cast(tf.constant(thresholds, tf.float32) < tf.cast(value, tf.float32), tf.int64)
    return tf.reduce_sum(below) - 1


def clevr_count(ex: dict[str, Any]) -> tf.Tensor:
    """clevr.py ``count_all``: number of objects - 3 (CLEVR scenes hold 3..10 objects: 8 classes)."""
    return tf.cast(tf.size(ex["objects"]["size"]), tf.int64) - 3


CLEVR_DISTANCE_THRESHOLDS = [0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0]


def clevr_distance(ex: dict[str, Any]) -> tf.Tensor:
    """clevr.py ``closest_object_distance``: the smallest depth (pixel_coords[:, 2]) binned at 8, 8.5, 9, 9.5,
    10 (6 classes)."""
    return _bin(tf.reduce_min(ex["objects"]["pixel_coords"][:, 2]), CLEVR_DISTANCE_THRESHOLDS)


KITTI_DISTANCE_THRESHOLDS = [-100.0, 8.0, 20.0, 999.0]


def kitti_distance(ex: dict[str, Any]) -> tf.Tensor:
    """kitti.py ``closest_vehicle_distance``: depth (location[:, 2]) of the closest Car/Van/Truck (type < 3),
    1000 when there is none, binned at 8, 20, 999 metres (4 classes)."""
    objects = ex["objects"]
    depth = tf.boolean_mask(tf.cast(objects["location"][:, 2], tf.float32), objects["type"] < 3)
    return _bin(tf.reduce_min(tf.concat([depth, [1000.0]], 0)), KITTI_DISTANCE_THRESHOLDS)


def _dsprites(key: str, original: int, classes: int = 16) -> Callable[[dict[str, Any]], tf.Tensor]:
    factor = float(original) / classes

    def label(ex: dict[str, Any]) -> tf.Tensor:
        return tf.cast(tf.math.floordiv(tf.cast(ex[key], tf.float32), factor), tf.int64)

    label.__doc__ = f"dsprites.py: {key} ({original} values) // {factor:g} -> {classes} classes."
    return label


def _grey_to_rgb(image: tf.Tensor) -> tf.Tensor:
    return tf.tile(image, [1, 1, 3])


def _binary_to_rgb(image: tf.Tensor) -> tf.Tensor:
    """dsprites: pixels are 0/1; the reference tiles and multiplies by 255."""
    return _grey_to_rgb(tf.where(image > 0, tf.constant(255, tf.uint8), tf.constant(0, tf.uint8)))


@dataclass(frozen=True)
class TaskSpec:
    """One VTAB-1k task.

    Attributes:
        name: the task's name here (``bit-keras vtab --tasks``). group: natural, specialized or structured.
        tfds_name: ``builder[/config]:version`` for ``tfds.builder``/``tfds.load``.
        splits: ``train800``, ``val200``, ``train800val200``, ``test`` as tfds split strings.
        counts: the sizes of the tfds splits the strings index (from the tfds catalog), for checks.
        num_classes: the task's classes. label: the label feature, or a function of the example (derived).
        image: the image feature; ``to_rgb``: a conversion of it to ``uint8 [H, W, 3]`` (None: already).
        source: the reference file. manual: tfds needs a manual download (the note to show).
    """

    name: str
    group: str
    tfds_name: str
    splits: dict[str, str]
    counts: dict[str, int]
    num_classes: int
    label: str | Callable[[dict[str, Any]], tf.Tensor] = "label"
    image: str = "image"
    to_rgb: Callable[[tf.Tensor], tf.Tensor] | None = None
    source: str = ""
    manual: str | None = None
    notes: str = field(default="", compare=False)

    @property
    def builder_name(self) -> str:
        return self.tfds_name.partition(":")[0]

    def label_description(self) -> str:
        return self.label if isinstance(self.label, str) else (self.label.__doc__ or self.label.__name__).strip()


_S = [
    # ---- natural
    TaskSpec("caltech101", "natural", "caltech101:3.0.2", _splits_from_train(2754), {"train": 3060, "test": 6084},
             102, source="caltech.py (train 90% / val 10% of tfds train)"),
    TaskSpec("cifar100", "natural", "cifar100:3.0.2", _splits_from_train(45000), {"train": 50000, "test": 10000},
             100, source="cifar.py (train 90% / val 10% of tfds train)"),
    TaskSpec("dtd", "natural", "dtd:3.0.1", _splits_with_validation(),
             {"train": 1880, "validation": 1880, "test": 1880}, 47, source="dtd.py"),
    TaskSpec("oxford_flowers102", "natural", "oxford_flowers102:2.1.1", _splits_with_validation(),
             {"train": 1020, "validation": 1020, "test": 6149}, 102, source="oxford_flowers102.py"),
    TaskSpec("oxford_iiit_pet", "natural", "oxford_iiit_pet:4.0.0", _splits_from_train(2944),
             {"train": 3680, "test": 3669}, 37, source="oxford_iiit_pet.py (train 80% / val 20% of tfds train)"),
    TaskSpec("sun397", "natural", "sun397/tfds:4.0.0", _splits_with_validation(),
             {"train": 76128, "validation": 10875, "test": 21750}, 397, source="sun397.py (config 'tfds')"),
    TaskSpec("svhn", "natural", "svhn_cropped:3.1.0", _splits_from_train(65931), {"train": 73257, "test": 26032},
             10, source="svhn.py (train 90% / val 10% of tfds train)"),
    # ---- specialized
    TaskSpec("patch_camelyon", "specialized", "patch_camelyon:2.0.0", _splits_with_validation(),
             {"train": 262144, "validation": 32768, "test": 32768}, 2, source="patch_camelyon.py"),
    TaskSpec("eurosat", "specialized", "eurosat/rgb:2.0.0", _splits_from_train(16200, test="train[21600:]"),
             {"train": 27000}, 10, source="eurosat.py (60/20/20% of tfds train)"),
    TaskSpec("resisc45", "specialized", "resisc45:3.0.0", _splits_from_train(18900, test="train[25200:]"),
             {"train": 31500}, 45, source="resisc45.py (60/20/20% of tfds train)"),
    TaskSpec("diabetic_retinopathy", "specialized", "diabetic_retinopathy_detection/btgraham-300:3.0.0",
             _splits_with_validation(), {"train": 35126, "validation": 10906, "test": 42670}, 5,
             source="diabetic_retinopathy.py (config btgraham-300)",
             manual="manual download: the Kaggle 'Diabetic Retinopathy Detection' files into "
                    "~/tensorflow_datasets/downloads/manual/ (see tfds's diabetic_retinopathy_detection page), then "
                    "`tfds build diabetic_retinopathy_detection/btgraham-300`"),
    # ---- structured
    TaskSpec("clevr_count", "structured", "clevr:3.1.0", _splits_from_train(63000, test="validation"),
             {"train": 70000, "validation": 15000, "test": 15000}, 8, clevr_count,
             source="clevr.py task count_all (test = tfds validation)"),
    TaskSpec("clevr_distance", "structured", "clevr:3.1.0", _splits_from_train(63000, test="validation"),
             {"train": 70000, "validation": 15000, "test": 15000}, 6, clevr_distance,
             source="clevr.py task closest_object_distance (test = tfds validation)"),
    TaskSpec("dmlab", "structured", "dmlab:2.0.1", _splits_with_validation(),
             {"train": 65550, "validation": 22628, "test": 22735}, 6, source="dmlab.py"),
    TaskSpec("kitti_distance", "structured", "kitti:3.3.0", _splits_with_validation(),
             {"train": 6347, "validation": 423, "test": 711}, 4, kitti_distance,
             source="kitti.py task closest_vehicle_distance"),
    TaskSpec("dsprites_location", "structured", "dsprites:2.0.0", _splits_from_train(589824, test="train[663552:]"),
             {"train": 737280}, 16, _dsprites("label_x_position", 32), to_rgb=_binary_to_rgb,
             source="dsprites.py predicted_attribute label_x_position, num_classes 16 (80/10/10% of tfds train)"),
    TaskSpec("dsprites_orientation", "structured", "dsprites:2.0.0",
             _splits_from_train(589824, test="train[663552:]"), {"train": 737280}, 16,
             _dsprites("label_orientation", 40), to_rgb=_binary_to_rgb,
             source="dsprites.py predicted_attribute label_orientation, num_classes 16 (80/10/10% of tfds train)"),
    TaskSpec("smallnorb_azimuth", "structured", "smallnorb:2.0.0",
             {"train800": "train[:800]", "val200": "test[:200]", "train800val200": "train[:800]+test[:200]",
              "test": "test[50%:]"}, {"train": 24300, "test": 24300}, 18, "label_azimuth", to_rgb=_grey_to_rgb,
             source="smallnorb.py predicted_attribute label_azimuth (val = first half of tfds test)"),
    TaskSpec("smallnorb_elevation", "structured", "smallnorb:2.0.0",
             {"train800": "train[:800]", "val200": "test[:200]", "train800val200": "train[:800]+test[:200]",
              "test": "test[50%:]"}, {"train": 24300, "test": 24300}, 9, "label_elevation", to_rgb=_grey_to_rgb,
             source="smallnorb.py predicted_attribute label_elevation (val = first half of tfds test)"),
]
TASKS: dict[str, TaskSpec] = {s.name: s for s in _S}
GROUPS: dict[str, list[str]] = {g: [s.name for s in _S if s.group == g] for g in ("natural", "specialized",
                                                                                   "structured")}


def resolve_tasks(tasks: str | list[str] | tuple[str, ...]) -> list[TaskSpec]:
    """``"vtab-1k"`` (all 19), a group name, or task names (a list or a comma-separated string), in order.

    Example:
        >>> [s.name for s in resolve_tasks("specialized")]
        ['patch_camelyon', 'eurosat', 'resisc45', 'diabetic_retinopathy']
        >>> [s.name for s in resolve_tasks("dtd,svhn")]
        ['dtd', 'svhn']
    """
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for raw in (n.strip() for n in names):
        if not raw:
            continue
        if raw.lower() in ("vtab-1k", "vtab", "all"):
            picked = list(TASKS)
        elif raw in GROUPS:
            picked = GROUPS[raw]
        elif raw in TASKS:
            picked = [raw]
        else:
            raise ConfigError(f"unknown VTAB task {raw!r}: choose from vtab-1k, {', '.join(GROUPS)}, "
                              f"{', '.join(TASKS)}")
        out += [p for p in picked if p not in out]
    if not out:
        raise ConfigError("no VTAB task given")
    return [TASKS[n] for n in out]


def split_sizes(spec: TaskSpec) -> dict[str, int]:
    """Examples per 1k split, from the tfds split sizes in ``spec.counts`` (tfds's own split arithmetic)."""
    return {name: sum(stop - start for _, start, stop in pieces) for name, pieces in split_ranges(spec).items()}


@dataclass
class _Count:
    num_examples: int

    @property
    def num_shards(self) -> int:  # what to_absolute may ask for
        return 1

    @property
    def shard_lengths(self) -> list[int]:
        return [self.num_examples]


def split_ranges(spec: TaskSpec) -> dict[str, list[tuple[str, int, int]]]:
    """Per 1k split, its ``(tfds split, start, stop)`` pieces (for overlap checks)."""
    import tensorflow_datasets as tfds

    infos = {k: _Count(v) for k, v in spec.counts.items()}
    return {name: [(i.splitname, i.from_ or 0, spec.counts[i.splitname] if i.to is None else i.to)
                   for i in tfds.core.ReadInstruction.from_spec(text).to_absolute(infos)]
            for name, text in spec.splits.items()}


def prepare_command(spec: TaskSpec) -> str:
    """How to prepare the task's data with tensorflow-datasets.

    Example:
        >>> prepare_command(TASKS["sun397"])
        'tfds build sun397/tfds'
    """
    return spec.manual or f"tfds build {spec.builder_name}"


def missing_reason(spec: TaskSpec, data_dir: str | None = None) -> str | None:
    """None when the task's tfds data can be read (in ``data_dir``, default tfds's), else why not; never
    downloads.

    Example:
        >>> import tempfile
        >>> missing_reason(TASKS["dtd"], data_dir=tempfile.mkdtemp()).split(":")[0]
        'AssertionError'
    """
    import tensorflow_datasets as tfds

    try:
        tfds.builder(spec.tfds_name, data_dir=data_dir).as_dataset(split=spec.splits["test"])
    except Exception as err:  # noqa: BLE001 - tfds raises AssertionError for data not prepared
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0] if text else ''}"
    return None


def load_task(spec: TaskSpec, split: str, data_dir: str | None = None) -> tf.data.Dataset:
    """One 1k split of a task as ``(image uint8 [H, W, 3], label int64)`` pairs, in the tfds order.

    ``split`` is one of :data:`SPLITS`. Image features other than ``spec.image`` are not decoded.
    """
    import tensorflow_datasets as tfds

    if split not in spec.splits:
        raise ConfigError(f"unknown VTAB split {split!r}: choose from {', '.join(SPLITS)}")
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    skip = {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items()
            if isinstance(f, tfds.features.Image) and k != spec.image}
    ds = builder.as_dataset(split=spec.splits[split], decoders=skip or None, shuffle_files=False)
    label, image_key, to_rgb = spec.label, spec.image, spec.to_rgb

    def pair(ex: dict[str, Any]) -> tuple[tf.Tensor, tf.Tensor]:
        image = ex[image_key]
        image = to_rgb(image) if to_rgb is not None else image
        y = ex[label] if isinstance(label, str) else label(ex)
        return image, tf.cast(y, tf.int64)

    return ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE)


def task_table() -> str:
    """The task table as Markdown (group, task, tfds builder, classes, label, reference file).

    Example:
        >>> print(task_table().splitlines()[2])
        | natural | caltech101 | caltech101:3.0.2 | 102 | label | caltech.py (train 90% / val 10% of tfds train) |
    """
    lines = ["| group | task | tfds | classes | label | reference |", "|---|---|---|---:|---|---|"]
    for s in _S:
        label = s.label if isinstance(s.label, str) else s.label_description().split(":")[0]
        lines.append(f"| {s.group} | {s.name} | {s.tfds_name} | {s.num_classes} | {label} | {s.source} |")
    return "\n".join(lines)


