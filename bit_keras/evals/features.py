"""Frozen features for probes: the model's pre-logits, the zoo entry's preprocessing, and a feature cache.

* :func:`feature_model`: a zoo name (built as ``create_model`` builds it, ``weights=`` as there) or a
  ``keras.Model`` -> a model that outputs one feature vector per image: the ``pre_logits`` layer
  (:func:`bit_keras.feature_extractor`), or the model's own output when it is a feature model ``[batch, d]``.
* :class:`Preprocessing`: resize (shorter side to ``resolution / crop_pct``, then a centre crop of
  ``resolution``; ``crop_pct=1`` resizes straight to ``resolution``), interpolation (anti-aliased when
  shrinking, as PIL and timm do) and the input range. :func:`preprocessing_for` takes the zoo entry's numbers
  (:class:`bit_keras.models.presets.ModelInfo`), any of which can be overridden.
* :class:`FeatureStore`: features by image content. Each image is keyed by a 64-bit fingerprint of its decoded
  pixels (shape included); the store itself is keyed by a SHA-256 of the model's weights and layer
  configurations, the feature layer and the preprocessing, so features of another model or another
  preprocessing are never reused. Stores live in memory (the last few, per process) and, given a folder, on
  disk as atomically written parts: an interrupted extraction keeps what it computed and a new run computes
  only the rest.
* :func:`extract_features`: one forward pass per image not yet in the store.

Example:
    >>> import numpy as np
    >>> model, info = feature_model("BiT-tiny", weights=None)
    >>> prep = preprocessing_for(info)
    >>> prep.resolution, model.output_shape
    (32, (None, 512))
    >>> from bit_keras.data.sources import load_dataset
    >>> ds, _ = load_dataset((np.zeros((3, 40, 40, 3), np.uint8), np.array([0, 1, 2])))
    >>> store = FeatureStore(model, prep)
    >>> feats, labels, computed = extract_features(model, ds, prep, store, batch_size=2, progress=False)
    >>> feats.shape, labels.tolist(), computed   # 3 identical images: one forward pass
    ((3, 512), [0, 1, 2], 1)
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from bit_keras.atomic import atomic_path, write_json
from bit_keras.data.sources import standardize
from bit_keras.errors import ConfigError
from bit_keras.models.presets import ModelInfo

AUTOTUNE = tf.data.AUTOTUNE
FEATURE_LAYER = "pre_logits"
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "lanczos3")
STORE_FORMAT = 1
MEMORY_STORES = 4  # stores kept in memory per process (the most recently used)
_MEMORY: collections.OrderedDict[str, dict[int, np.ndarray]] = collections.OrderedDict()


# ------------------------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input (see the module docstring).

    Example:
        >>> Preprocessing(224, 0.875).resize_side
        256
    """

    resolution: int
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    input_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if not isinstance(self.resolution, int) or self.resolution < 1:
            raise ConfigError(f"resolution must be a positive int, got {self.resolution!r}")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {list(INTERPOLATIONS)}, got {self.interpolation!r}")
        lo, hi = (float(v) for v in self.input_range)
        if not hi > lo:
            raise ConfigError(f"input_range must be (low, high) with high > low, got {self.input_range!r}")
        object.__setattr__(self, "input_range", (lo, hi))

    @property
    def resize_side(self) -> int:
        return int(round(self.resolution / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_range": list(self.input_range)}

    def __call__(self, image: tf.Tensor) -> tf.Tensor:
        """uint8 [H, W, 3] -> float32 [resolution, resolution, 3] in ``input_range``."""
        r = self.resolution
        x = tf.cast(image, tf.float32)
        if self.crop_pct >= 1.0:
            x = tf.image.resize(x, (r, r), method=self.interpolation, antialias=True)
        else:
            hw = tf.cast(tf.shape(x)[:2], tf.float32)
            size = tf.cast(tf.round(hw * (self.resize_side / tf.reduce_min(hw))), tf.int32)
            size = tf.maximum(size, r)
            x = tf.image.resize(x, size, method=self.interpolation, antialias=True)
            top, left = (size[0] - r) // 2, (size[1] - r) // 2
            x = x[top:top + r, left:left + r]
        x.set_shape([r, r, 3])
        lo, hi = self.input_range
        return tf.clip_by_value(x, 0.0, 255.0) * ((hi - lo) / 255.0) + lo


def preprocessing_for(info: ModelInfo | None, *, resolution: int | None = None, crop_pct: float | None = None,
                      interpolation: str | None = None, input_range: Sequence[float] | None = None,
                      image_size: Sequence[int] | None = None) -> Preprocessing:
    """The zoo entry's preprocessing (resolution, crop_pct, interpolation), each overridable; without an entry
    (a ``keras.Model``), the data's own size (the shorter side of ``image_size``), resized straight, bilinear.
    ``input_range`` is the range of what the model takes (``create_model``'s, default (0, 1)).

    Example:
        >>> from bit_keras.models.presets import get_model_info
        >>> preprocessing_for(get_model_info("BiT-S-R50x1")).to_dict()
        {'resolution': 224, 'crop_pct': 0.875, 'interpolation': 'bilinear', 'input_range': [0.0, 1.0]}
        >>> preprocessing_for(None, image_size=(48, 64), interpolation="bicubic").to_dict()
        {'resolution': 48, 'crop_pct': 1.0, 'interpolation': 'bicubic', 'input_range': [0.0, 1.0]}
    """
    if info is not None:
        base = Preprocessing(info.resolution, info.crop_pct, info.interpolation)
    elif resolution is None and image_size is None:
        raise ConfigError("a keras.Model has no zoo entry to take the resolution from: pass resolution=")
    else:
        base = Preprocessing(int(resolution or min(image_size)), 1.0, "bilinear")  # type: ignore[arg-type]
    return Preprocessing(int(resolution if resolution is not None else base.resolution),
                         float(crop_pct if crop_pct is not None else base.crop_pct),
                         interpolation or base.interpolation,
                         tuple(input_range) if input_range is not None else (0.0, 1.0))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- model


def built_model(model: str | os.PathLike | keras.Model, *, weights: Any, num_classes: Any = "default",
                input_range: Sequence[float] = (0.0, 1.0), seed: int = 0, load_head: bool = True,
                progress: bool = True) -> tuple[keras.Model, ModelInfo | None]:
    """A zoo name built with ``create_model(name, num_classes=...)`` (random init seeded by ``seed``) and then
    its ``weights`` (``"pretrained"``, a local ``.npz`` or URL, or None), or the user's ``keras.Model`` with
    ``weights`` (an ``.npz`` path; ``"pretrained"`` or None: as it is) loaded into it; and the zoo entry (None
    for a ``keras.Model``). ``num_classes="default"``: the entry's own head.

    Example:
        >>> model, info = built_model("BiT-tiny", weights=None, num_classes=None)
        >>> info.name, model.output_shape
        ('BiT-tiny', (None, 512))
    """
    from bit_keras.models.create import create_model, load_weights
    from bit_keras.models.policy import seeded_init
    from bit_keras.models.presets import get_model_info

    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, str):
        info = get_model_info(model)
        head = {} if num_classes == "default" else {"num_classes": num_classes}
        with seeded_init(seed):
            built = create_model(info.name, weights=None, input_range=tuple(input_range), **head)
        if weights is not None:
            load_weights(built, info, weights, progress=progress)
        return built, info
    if not isinstance(model, keras.Model):
        raise ConfigError(f"model must be a zoo name or a keras.Model; got {type(model).__name__}")
    if weights not in (None, "pretrained"):
        from bit_keras.models.weights import load_npz

        load_npz(model, os.fspath(weights), load_head=load_head)
    return model, None


def feature_model(model: str | os.PathLike | keras.Model, *, weights: Any = "pretrained",
                  input_range: Sequence[float] = (0.0, 1.0), seed: int = 0,
                  progress: bool = True) -> tuple[keras.Model, ModelInfo | None]:
    """A model that outputs one feature vector per image, and its zoo entry (None for a ``keras.Model``).

    * a zoo name: ``create_model(name, num_classes=None, input_range=...)`` (the pre-logits), random init seeded
      by ``seed``, then ``weights``: ``"pretrained"`` (downloaded once), a local ``.npz`` or URL, or None.
    * a ``keras.Model`` with a ``pre_logits`` layer: :func:`bit_keras.feature_extractor` at that layer; a model
      with one ``[batch, d]`` output: itself. ``weights`` as a path loads that ``.npz`` into it first.

    Raises:
        UnknownModelError: an unknown zoo name (the closest names listed). ConfigError: a model without
            pre-logits or a feature output.

    Example:
        >>> feature_model("BiT-S-R50x9")
        Traceback (most recent call last):
        ...
        bit_keras.errors.UnknownModelError: Unknown BiT model 'BiT-S-R50x9'. Closest names: ...
    """
    from bit_keras.models.resnet import feature_extractor

    model, info = built_model(model, weights=weights, num_classes=None, input_range=input_range, seed=seed,
                              load_head=False, progress=progress)
    if info is not None:
        return model, info
    names = {layer.name for layer in model.layers}
    if FEATURE_LAYER in names:
        features = feature_extractor(model, [FEATURE_LAYER])
        return keras.Model(features.inputs, features.outputs[0], name=features.name), None
    if len(model.outputs) == 1 and len(model.outputs[0].shape) == 2:
        return model, None
    raise ConfigError(
        f"model {model.name!r} has no {FEATURE_LAYER!r} layer and its output is not a feature vector [batch, d] "
        f"(outputs: {[tuple(o.shape) for o in model.outputs]}): pass a BiT model or a model ending in pooled features"
    )


def model_fingerprint(model: keras.Model) -> str:
    """SHA-256 of what the features depend on: every weight (name, shape, dtype, values) and every layer's type
    and configuration (automatic layer names left out, so two builds of one network agree).

    Example:
        >>> a, _ = feature_model("BiT-tiny", weights=None, seed=1)
        >>> b, _ = feature_model("BiT-tiny", weights=None, seed=1)
        >>> c, _ = feature_model("BiT-tiny", weights=None, seed=2)
        >>> model_fingerprint(a) == model_fingerprint(b) != model_fingerprint(c)
        True
    """
    digest = hashlib.sha256()
    for layer in model.layers:
        try:
            config = {k: v for k, v in layer.get_config().items() if k != "name"}
            text = json.dumps(config, sort_keys=True, default=str)
        except Exception:  # noqa: BLE001 - a layer without a config: its type still counts
            text = ""
        digest.update(f"{type(layer).__module__}.{type(layer).__name__}:{text};".encode())
    for i, w in enumerate(model.weights):  # by position and own name: layer names may be automatic
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        digest.update(f"{i}:{w.name}:{value.shape}:{value.dtype};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------- store


class FeatureStore:
    """Features by image fingerprint, for one (model, feature layer, preprocessing); see the module docstring.

    ``directory``: where the store's parts go (a sub-folder named by the key is made in it); None keeps it in
    memory only.
    """

    def __init__(self, model: keras.Model, prep: Preprocessing, directory: str | os.PathLike | None = None, *,
                 description: dict[str, Any] | None = None):
        self.identity = {"format": STORE_FORMAT, "model": model_fingerprint(model), "preprocessing": prep.to_dict(),
                         "output": [list(o.shape) for o in model.outputs]}
        self.key = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()[:24]
        self.directory = Path(directory) / self.key if directory is not None else None
        self.features = _MEMORY.setdefault(self.key, {})
        _MEMORY.move_to_end(self.key)
        while len(_MEMORY) > MEMORY_STORES:
            _MEMORY.popitem(last=False)
        self._pending: dict[int, np.ndarray] = {}
        self.loaded = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not (self.directory / "store.json").is_file():
                write_json(self.directory / "store.json", {**self.identity, **(description or {})})
            for part in sorted(self.directory.glob("part-*.npz")):
                try:
                    with np.load(part) as arrays:
                        fps, rows = arrays["fingerprints"].tolist(), arrays["features"]
                except Exception as err:  # noqa: BLE001 - parts are written atomically; a damaged one is recomputed
                    print(f"ignoring unreadable feature cache part {part} ({type(err).__name__}: {err})")
                    continue
                for fp, row in zip(fps, rows):
                    if fp not in self.features:
                        self.features[fp] = row
                        self.loaded += 1

    def __len__(self) -> int:
        return len(self.features)

    def add(self, fingerprints: Sequence[int], rows: np.ndarray) -> None:
        for fp, row in zip(fingerprints, rows):
            self.features[int(fp)] = row
            self._pending[int(fp)] = row

    def flush(self) -> None:
        """Write the features added since the last flush as one new part (atomically)."""
        if self.directory is None or not self._pending:
            self._pending.clear()
            return
        fps = np.array(list(self._pending), np.uint64)
        rows = np.stack(list(self._pending.values()))
        with atomic_path(self.directory / f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, fingerprints=fps, features=rows)
        self._pending.clear()


def _fingerprint(image: tf.Tensor) -> tf.Tensor:
    """A 64-bit fingerprint of a decoded image's pixels and shape, as int64 (two's complement of the uint64)."""
    serialized = tf.reshape(tf.io.serialize_tensor(image), [1])
    return tf.bitcast(tf.reshape(tf.fingerprint(serialized), [8]), tf.int64)


def extract_features(extractor: keras.Model, ds: tf.data.Dataset, prep: Preprocessing, store: FeatureStore, *,
                     batch_size: int = 64, keep: np.ndarray | None = None, progress: bool = True,
                     flush_every: int = 1024) -> tuple[np.ndarray, np.ndarray, int]:
    """Features [n, d] (float32) and labels [n] of the examples of ``ds`` (those set in ``keep``, a mask over
    its order), and how many forward passes that took: images already in ``store`` cost none. New features are
    flushed to the store's folder every ``flush_every`` images and when the loop ends, also by an error or a
    Ctrl-C, so an interrupted run loses at most what was in flight."""
    ds = standardize(ds)
    total = None
    if keep is not None:
        keep_t = tf.constant(np.asarray(keep, bool))

        def kept(i: tf.Tensor, xy: Any) -> tf.Tensor:
            return tf.gather(keep_t, i)

        def drop_index(i: tf.Tensor, xy: Any) -> Any:
            return xy

        ds = ds.enumerate().filter(kept).map(drop_index)
        total = int(np.sum(keep))
    ds = ds.map(lambda x, y: (prep(x), y, _fingerprint(x)), num_parallel_calls=AUTOTUNE)
    batches = ds.batch(batch_size).prefetch(AUTOTUNE)
    bar = keras.utils.Progbar(total, unit_name="image") if progress else None
    keys: list[int] = []
    labels: list[np.ndarray] = []
    computed = since_flush = 0
    try:
        for x, y, fp in batches.as_numpy_iterator():
            fps = fp.view(np.uint64).tolist()
            first: dict[int, int] = {}
            for i, f in enumerate(fps):
                if f not in store.features:
                    first.setdefault(f, i)  # an image twice in a batch: one forward pass
            missing = list(first.values())
            if missing:
                out = extractor.predict_on_batch(x[missing])
                out = np.asarray(out[FEATURE_LAYER] if isinstance(out, dict) else out, np.float32)
                store.add([fps[i] for i in missing], out.reshape(len(missing), -1))
                computed += len(missing)
                since_flush += len(missing)
                if since_flush >= flush_every:
                    store.flush()
                    since_flush = 0
            keys += fps
            labels.append(y)
            if bar is not None:
                bar.add(len(fps))
    finally:
        store.flush()
    if not keys:
        return np.zeros([0, 0], np.float32), np.zeros([0], np.int64), 0
    return np.stack([store.features[k] for k in keys]), np.concatenate(labels).astype(np.int64), computed
