"""BiT-HyperRule: fine-tuning hyperparameters from the dataset's size and image resolution.

The rule is implemented exactly as the reference code (``bit_hyperrule.py`` of
google-research/big_transfer) applies it, with the reference's function names:

* resolution: images with area ``h * w < 96 * 96`` are resized to 160 and cropped to 128, larger ones to
  512 / 480 (the paper's text says 448 / 384: pass ``rule="paper"``);
* schedule: ``< 20,000`` examples train 500 steps, ``< 500,000`` train 10,000, else 20,000;
  linear warm-up over the first support, then the lr is divided by 10 *after* each later support
  (strict ``s < step``, as the code), and training stops at the last one;
* mixup: alpha 0.1 from 20,000 examples on, else none;
* SGD with momentum 0.9, base lr 0.003, batch 512, no weight decay, zero-initialised head.

Example:
    >>> from bit_keras.recipes.hyperrule import hyperparams_for
    >>> hp = hyperparams_for(1000, (32, 32))
    >>> (hp.resize, hp.crop, hp.schedule[-1], hp.mixup_alpha)
    (160, 128, 500, 0.0)
    >>> hp.lr(50), hp.lr(500)
    (0.0015, None)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bit_keras.errors import ConfigError

RULES = ("code", "paper")
SMALL_IMAGE_AREA = 96 * 96
SMALL_DATASET = 20_000
LARGE_DATASET = 500_000

_RESOLUTIONS = {"code": ((160, 128), (512, 480)), "paper": ((160, 128), (448, 384))}


def _check_rule(rule: str) -> None:
    if rule not in _RESOLUTIONS:
        raise ConfigError(f"unknown rule {rule!r}: choose one of {', '.join(map(repr, RULES))}")


def get_resolution(original_resolution: tuple[int, int], rule: str = "code") -> tuple[int, int]:
    """(resize, crop) for images of ``original_resolution = (h, w)``.

    ``area < 96*96`` (strict, so 96x96 is already "large") gives (160, 128); otherwise (512, 480) with
    ``rule="code"`` (what the released code and checkpoints use) or (448, 384) with ``rule="paper"``.
    Both rules use the code's strict threshold.

    Example:
        >>> get_resolution((32, 32)), get_resolution((96, 96)), get_resolution((224, 224), rule="paper")
        ((160, 128), (512, 480), (448, 384))
    """
    _check_rule(rule)
    small, large = _RESOLUTIONS[rule]
    h, w = original_resolution
    return small if h * w < SMALL_IMAGE_AREA else large


def get_schedule(num_examples: int) -> list[int]:
    """The lr schedule's supports: [warm-up end, decay, decay, decay, end of training].

    Example:
        >>> get_schedule(19_999), get_schedule(20_000)[-1], get_schedule(500_000)[-1]
        ([100, 200, 300, 400, 500], 10000, 20000)
    """
    if num_examples < SMALL_DATASET:
        return [100, 200, 300, 400, 500]
    if num_examples < LARGE_DATASET:
        return [500, 3000, 6000, 9000, 10_000]
    return [500, 6000, 12_000, 18_000, 20_000]


def get_mixup(num_examples: int) -> float:
    """Mixup alpha: 0.0 below 20,000 examples, else 0.1.

    Example:
        >>> get_mixup(19_999), get_mixup(20_000)
        (0.0, 0.1)
    """
    return 0.0 if num_examples < SMALL_DATASET else 0.1


def get_lr(
    step: int,
    num_examples: int | None,
    base_lr: float = 0.003,
    schedule: Sequence[int] | None = None,
) -> float | None:
    """Learning rate at ``step``, or None once training is over (``step >= schedule[-1]``).

    Linear warm-up ``base_lr * step / supports[0]`` before the first support, then ``base_lr`` divided
    by 10 for every later support ``s < step`` (strict, as the reference: the lr at step 200 of the
    small schedule is still ``base_lr``). ``schedule`` overrides ``get_schedule(num_examples)``.

    Example:
        >>> [get_lr(s, 1000) for s in (0, 50, 200, 201, 500)]
        [0.0, 0.0015, 0.003, 0.00030000000000000003, None]
    """
    if schedule is None:
        if num_examples is None:
            raise ConfigError("get_lr needs num_examples or an explicit schedule=")
        schedule = get_schedule(num_examples)
    supports = list(schedule)
    if step < supports[0]:
        return base_lr * step / supports[0]
    if step >= supports[-1]:
        return None
    for s in supports[1:]:
        if s < step:
            base_lr /= 10
    return base_lr


@dataclass(frozen=True)
class HyperParams:
    """Fine-tuning hyperparameters; build with :func:`hyperparams_for`.

    ``schedule`` is stored as a tuple (the dataclass is frozen); ``num_examples``, ``image_size``,
    ``rule`` and ``overridden`` record where the values came from, for :meth:`describe` only: they
    take no part in equality and are not in :meth:`to_dict`.

    Example:
        >>> hp = HyperParams(resize=160, crop=128, schedule=[100, 200, 300, 400, 500], mixup_alpha=0.0)
        >>> hp.steps, hp.lr(100), hp.to_dict()["schedule"]
        (500, 0.003, [100, 200, 300, 400, 500])
    """

    resize: int
    crop: int
    schedule: tuple[int, ...]
    mixup_alpha: float
    base_lr: float = 0.003
    batch_size: int = 512
    momentum: float = 0.9
    weight_decay: float = 0.0
    zero_head: bool = True
    num_examples: int | None = dataclasses.field(default=None, compare=False, repr=False)
    image_size: tuple[int, int] | None = dataclasses.field(default=None, compare=False, repr=False)
    rule: str = dataclasses.field(default="code", compare=False, repr=False)
    overridden: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        schedule = tuple(int(s) for s in self.schedule)
        if len(schedule) < 2 or schedule[0] < 0 or any(b <= a for a, b in zip(schedule, schedule[1:])):
            raise ConfigError(
                f"schedule must be >= 2 increasing step counts [warm-up, decays..., end]; got {list(self.schedule)}"
            )
        if self.crop > self.resize:
            raise ConfigError(f"crop ({self.crop}) cannot be larger than resize ({self.resize})")
        object.__setattr__(self, "schedule", schedule)

    @property
    def steps(self) -> int:
        """Total number of training steps (the schedule's last support)."""
        return self.schedule[-1]

    def lr(self, step: int) -> float | None:
        """Learning rate at ``step`` from this schedule and base_lr; None when training is over.

        Example:
            >>> hyperparams_for(1000, (32, 32), base_lr=0.01).lr(100)
            0.01
        """
        return get_lr(step, None, self.base_lr, schedule=self.schedule)

    def to_dict(self) -> dict[str, Any]:
        """The hyperparameters as a JSON-friendly dict (schedule as a list).

        Example:
            >>> sorted(hyperparams_for(1000, (32, 32)).to_dict())[:3]
            ['base_lr', 'batch_size', 'crop']
        """
        d = {name: getattr(self, name) for name in TUNABLE_FIELDS}
        d["schedule"] = list(self.schedule)
        return d

    def describe(self) -> list[str]:
        """A few human lines explaining each choice.

        Example:
            >>> print("\\n".join(hyperparams_for(1000, (32, 32)).describe()[:3]))
            images 32x32 (< 96x96): resize 160, crop 128
            1,000 examples (< 20,000): 500 steps, warm-up 100, decays after 200/300/400
            mixup 0.0 (< 20,000 examples)
        """
        over = set(self.overridden)

        def tag(name: str) -> str:
            return " (override)" if name in over else ""

        res = f"resize {self.resize}{tag('resize')}, crop {self.crop}{tag('crop')}"
        if self.image_size is not None:
            h, w = self.image_size
            cmp = "<" if h * w < SMALL_IMAGE_AREA else ">="
            rule = " [paper rule]" if self.rule == "paper" else ""
            res = f"images {h}x{w} ({cmp} 96x96): {res}{rule}"
        sched = (
            f"{self.steps:,} steps{tag('schedule')}, warm-up {self.schedule[0]:,}, "
            f"decays after {'/'.join(f'{s:,}' for s in self.schedule[1:-1])}"
        )
        mix = f"mixup {self.mixup_alpha}{tag('mixup_alpha')}"
        if self.num_examples is not None:
            n = self.num_examples
            band = "< 20,000" if n < SMALL_DATASET else "20,000 to 499,999" if n < LARGE_DATASET else ">= 500,000"
            sched = f"{n:,} examples ({band}): {sched}"
            mix += f" ({'<' if n < SMALL_DATASET else '>='} 20,000 examples)"
        opt = (
            f"SGD base lr {self.base_lr}{tag('base_lr')} (x0.1 after each decay), momentum {self.momentum}, "
            f"weight decay {self.weight_decay}, batch {self.batch_size}, "
            f"{'zero-initialised' if self.zero_head else 'randomly initialised'} head"
        )
        return [res, sched, mix, opt]


TUNABLE_FIELDS = (
    "resize",
    "crop",
    "schedule",
    "mixup_alpha",
    "base_lr",
    "batch_size",
    "momentum",
    "weight_decay",
    "zero_head",
)


def hyperparams_for(
    num_examples: int, image_size: tuple[int, int], rule: str = "code", **overrides: Any
) -> HyperParams:
    """BiT-HyperRule hyperparameters for a training set of ``num_examples`` images of ``image_size``.

    ``num_examples`` is the number of training examples actually used (after few-shot sampling);
    ``image_size`` is a representative original (h, w). Any field of :class:`HyperParams` can be
    overridden by keyword; an unknown keyword raises TypeError.

    Example:
        >>> hp = hyperparams_for(50_000, (32, 32), batch_size=128, base_lr=0.001)
        >>> hp.schedule, hp.mixup_alpha, hp.batch_size, hp.lr(3001)
        ((500, 3000, 6000, 9000, 10000), 0.1, 128, 0.0001)
    """
    unknown = sorted(set(overrides) - set(TUNABLE_FIELDS))
    if unknown:
        raise ConfigError(
            f"hyperparams_for() got unknown override(s) {', '.join(unknown)}; valid fields: {', '.join(TUNABLE_FIELDS)}"
        )
    if num_examples < 0:
        raise ConfigError(f"num_examples must be >= 0, got {num_examples}")
    h, w = (int(v) for v in image_size)
    resize, crop = get_resolution((h, w), rule)
    values: dict[str, Any] = {
        "resize": resize,
        "crop": crop,
        "schedule": get_schedule(num_examples),
        "mixup_alpha": get_mixup(num_examples),
    }
    values.update(overrides)
    return HyperParams(
        **values,
        num_examples=num_examples,
        image_size=(h, w),
        rule=rule,
        overridden=tuple(sorted(overrides)),
    )
