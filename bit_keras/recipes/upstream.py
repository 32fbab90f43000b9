"""The BiT upstream (pre-training) recipe as configs, with the paper's numbers beside them.

BiT-S / BiT-M: SGD with momentum 0.9, lr 0.03 x batch/256 with a linear warm-up of 5,000 steps, divided by
10 at epochs 30, 60 and 80 of 90, weight decay 1e-4, global batch 4096, inception-style random crop to
224 px and a random flip, inputs in [-1, 1]. BiT-L: 40 epochs, decays at 10, 23, 30 and 37.
ImageNet-21k is multi-label: sigmoid cross-entropy; ILSVRC-2012 uses softmax cross-entropy.

Example:
    >>> cfg = PRESETS["BiT-S"]
    >>> cfg.base_lr, cfg.warmup_steps, cfg.decay_epochs
    (0.48, 5000, (30, 60, 80))
    >>> cfg.lr(step=0, steps_per_epoch=312), cfg.lr(5000, 312), cfg.lr(30 * 312, 312)
    (0.0, 0.48, 0.048)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bit_keras.errors import ConfigError


@dataclass(frozen=True)
class UpstreamConfig:
    """Hyper-parameters of an upstream run. ``base_lr`` is derived: ``lr_per_256 * batch_size / 256``.

    Attributes:
        name: the preset's name.
        epochs: total epochs; ``decay_epochs``: epochs after which the lr is divided by 10.
        batch_size: the global batch, split across replicas.
        lr_per_256: the learning rate for a batch of 256 (0.03 in BiT).
        warmup_steps: linear warm-up from 0 (5,000 in BiT).
        weight_decay: L2 weight decay on the conv and dense kernels (1e-4), added to the loss.
        momentum: SGD momentum (0.9).
        image_size: the training crop (224).
        min_crop_area: the smallest area fraction of the inception-style crop (0.05 in Inception).
        loss: ``"softmax"`` or ``"sigmoid"`` (multi-label upstream data such as ImageNet-21k).
        expected: what the paper reports for models trained with this preset, for reference.
    """

    name: str
    epochs: int = 90
    decay_epochs: tuple[float, ...] = (30, 60, 80)
    batch_size: int = 4096
    lr_per_256: float = 0.03
    warmup_steps: int = 5000
    weight_decay: float = 1e-4
    momentum: float = 0.9
    image_size: int = 224
    min_crop_area: float = 0.05
    loss: str = "softmax"
    expected: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.loss not in ("softmax", "sigmoid"):
            raise ConfigError(f"loss must be 'softmax' or 'sigmoid', got {self.loss!r}")
        if list(self.decay_epochs) != sorted(self.decay_epochs) or any(e >= self.epochs for e in self.decay_epochs):
            raise ConfigError(f"decay_epochs {self.decay_epochs} must be increasing and below epochs={self.epochs}")

    @property
    def base_lr(self) -> float:
        return round(self.lr_per_256 * self.batch_size / 256, 10)

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.epochs * steps_per_epoch

    def lr(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate at ``step``: linear warm-up, then /10 after each decay epoch.

        Example:
            >>> PRESETS["tiny"].lr(10**6, steps_per_epoch=10) < PRESETS["tiny"].base_lr
            True
        """
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        decays = sum(step >= e * steps_per_epoch for e in self.decay_epochs)
        return round(self.base_lr * 0.1**decays, 12)

    def replace(self, **overrides: Any) -> "UpstreamConfig":
        """A copy with some values changed; unknown names raise a TypeError that lists the valid ones.

        Changing ``epochs`` alone moves the decay epochs proportionally (30/60/80 of 90 -> 10/20/26.667 of 30).

        Example:
            >>> PRESETS["BiT-S"].replace(epochs=9).decay_epochs
            (3.0, 6.0, 8.0)
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown upstream setting(s) {unknown}; valid: {sorted(names)}")
        if "epochs" in overrides and "decay_epochs" not in overrides:
            ratio = overrides["epochs"] / self.epochs
            overrides["decay_epochs"] = tuple(round(e * ratio, 3) for e in self.decay_epochs)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "base_lr": self.base_lr}


PRESETS: dict[str, UpstreamConfig] = {
    "BiT-S": UpstreamConfig(
        "BiT-S", loss="softmax",
        expected={"data": "ILSVRC-2012 (1.28M images, 1000 classes)",
                  "ILSVRC-2012 top-1 of BiT-S-R50x1 fine-tuned": 0.80, "hardware": "TPUv3-512 class"}),
    "BiT-M": UpstreamConfig(
        "BiT-M", loss="sigmoid",
        expected={"data": "ImageNet-21k (14.2M images, 21843 classes)",
                  "ILSVRC-2012 top-1 of BiT-M-R152x4 fine-tuned": 0.855}),
    "BiT-L": UpstreamConfig(
        "BiT-L", epochs=40, decay_epochs=(10, 23, 30, 37), loss="sigmoid",
        expected={"data": "JFT-300M (300M images, 18291 classes)",
                  "ILSVRC-2012 top-1 of BiT-L-R152x4 fine-tuned": 0.8754}),
    # Trains in a minute or two on 2 CPU cores: for demos, tutorials and tests.
    "tiny": UpstreamConfig(
        "tiny", epochs=30, decay_epochs=(15, 22, 27), batch_size=64, lr_per_256=0.1, warmup_steps=20,
        weight_decay=1e-4, image_size=32, min_crop_area=0.35, loss="softmax",
        expected={"data": "any small labelled set (the demo uses scikit-learn digits)"}),
}


def get_preset(name: str) -> UpstreamConfig:
    """A preset by name (case-insensitive).

    Example:
        >>> get_preset("bit-m").loss
        'sigmoid'
    """
    for key, cfg in PRESETS.items():
        if key.lower() == name.lower():
            return cfg
    raise ConfigError(f"unknown upstream preset {name!r}; choose from {', '.join(PRESETS)}")
