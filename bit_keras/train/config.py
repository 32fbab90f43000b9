"""The configuration of a training run, in one place: how to train (:class:`EngineConfig`) and which run this
is (:class:`RunConfig`, with the keys that must match for a run to resume from another's checkpoints).

Settings are frozen dataclasses with defaults, ``replace(**overrides)`` (an unknown name lists the valid ones
and the closest match) and ``to_dict()``. Recipes keep their own hyper-parameters (the HyperRule's, the
upstream recipe's) and route keyword overrides to the right object with :func:`route_overrides`.

Example:
    >>> engine = EngineConfig(batch_size=64).replace(batch_split=2, jit_compile=True)
    >>> engine.micro_batch, engine.to_dict()["jit_compile"]
    (32, True)
    >>> EngineConfig().replace(batch_splt=2)
    Traceback (most recent call last):
    ...
    bit_keras.errors.ConfigError: unknown setting 'batch_splt' (did you mean 'batch_split'?); valid: ...
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bit_keras.atomic import json_default
from bit_keras.errors import ConfigError
from bit_keras.models.policy import MIXED_PRECISION_POLICIES

PREEMPTION_MODES = ("auto", "tf", "signal")


def unknown_setting(name: str, valid: Iterable[str]) -> ConfigError:
    """The error for a setting nobody takes, naming the closest valid one.

    Example:
        >>> str(unknown_setting("base_lt", ["base_lr", "batch_size"]))
        "unknown setting 'base_lt' (did you mean 'base_lr'?); valid: base_lr, batch_size"
    """
    valid = sorted(set(valid))
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown setting {name!r}{hint}; valid: {', '.join(valid)}")


def route_overrides(overrides: Mapping[str, Any], targets: Mapping[str, Iterable[str]]) -> dict[str, dict[str, Any]]:
    """Split keyword ``overrides`` between the objects named in ``targets`` (name -> its field names).

    A name goes to the first target that has it; one that no target has raises :func:`unknown_setting`.

    Example:
        >>> route_overrides({"base_lr": 0.01, "remat": True}, {"hyperrule": ["base_lr"], "engine": ["remat"]})
        {'hyperrule': {'base_lr': 0.01}, 'engine': {'remat': True}}
    """
    routed: dict[str, dict[str, Any]] = {name: {} for name in targets}
    for key, value in overrides.items():
        target = next((name for name, fields in targets.items() if key in set(fields)), None)
        if target is None:
            raise unknown_setting(key, [f for fields in targets.values() for f in fields])
        routed[target][key] = value
    return routed


def field_names(cls: type) -> tuple[str, ...]:
    """The init fields of a dataclass."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine trains; the same for every recipe.

    Attributes:
        batch_size: the global batch (split across replicas); recipes set it from their own recipe.
        batch_split: accumulate gradients over this many micro-batches of ``batch_size / batch_split``
            (the same update, less memory).
        mixed_precision: None, ``"mixed_bfloat16"`` or ``"mixed_float16"`` (with loss scaling); GroupNorm and
            weight-standardization statistics stay float32.
        jit_compile: compile the per-replica forward/backward pass with XLA. A GPU/TPU setting: on a CPU it is
            not a speed option (XLA:CPU compiles its own convolutions instead of calling oneDNN, a step compiles
            for about a minute; README, Performance).
        remat: recompute each residual unit's activations in the backward pass (less memory, ~1/3 more compute).
        checkpoint_every: save a checkpoint every this many steps (None or 0: only at the end).
        keep_checkpoints: how many checkpoints to keep.
        eval_every: evaluate every this many steps (besides the end), when the recipe evaluates.
        preemption: None (no guard), or how a pre-emption notice is heard: ``"auto"`` (TensorFlow's
            PreemptionCheckpointHandler where it works, else a SIGTERM flag), ``"tf"`` or ``"signal"``.
        progress: show a Keras progress bar.
    """

    batch_size: int = 512
    batch_split: int = 1
    mixed_precision: str | None = None
    jit_compile: bool = False
    remat: bool = False
    checkpoint_every: int | None = 100
    keep_checkpoints: int = 2
    eval_every: int | None = None
    preemption: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.batch_split, int) or self.batch_split < 1 or self.batch_size % self.batch_split:
            raise ConfigError(f"batch_split ({self.batch_split!r}) must be a positive int that divides batch_size "
                              f"({self.batch_size})")
        if self.mixed_precision not in (None, *MIXED_PRECISION_POLICIES):
            raise ConfigError(f"mixed_precision must be None or one of {MIXED_PRECISION_POLICIES}, "
                              f"got {self.mixed_precision!r}")
        if self.preemption not in (None, *PREEMPTION_MODES):
            raise ConfigError(f"preemption must be None or one of {PREEMPTION_MODES}, got {self.preemption!r}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.batch_split

    def replace(self, **overrides: Any) -> EngineConfig:
        """A copy with some settings changed; unknown names raise :class:`~bit_keras.errors.ConfigError`."""
        for key in overrides:
            if key not in field_names(EngineConfig):
                raise unknown_setting(key, field_names(EngineConfig))
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=json_default))


@dataclass(frozen=True)
class RunConfig:
    """One training run: the recipe, the model and weights it starts from, the data, the recipe's settings,
    the seed and the engine's settings. The engine writes it to ``run.json`` and, when a run is started again
    on the same folder, resumes only if the :attr:`RESUME_KEYS` are unchanged (the engine settings may change:
    a different ``batch_split`` gives the same updates).

    Example:
        >>> run = RunConfig("transfer", "BiT-tiny", None, seed=0, data={"num_examples": 40}, settings={"lr": 0.1})
        >>> run.check_resumable(run.to_dict(), "runs/x")
        >>> run.check_resumable({**run.to_dict(), "seed": 1}, "runs/x")
        Traceback (most recent call last):
        ...
        bit_keras.errors.ConfigError: runs/x holds a different run, which cannot be resumed with these settings (seed: saved 1, now 0): use a new output_dir, or delete the old one to start over
    """

    recipe: str
    model: str
    weights: str | None
    seed: int = 0
    data: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    engine: EngineConfig = field(default_factory=EngineConfig)

    RESUME_KEYS: ClassVar[tuple[str, ...]] = ("recipe", "model", "weights", "seed", "data", "settings")

    def to_dict(self) -> dict[str, Any]:
        return _plain({"recipe": self.recipe, "model": self.model, "weights": self.weights, "seed": self.seed,
                       "data": dict(self.data), "settings": dict(self.settings), "engine": self.engine.to_dict()})

    def check_resumable(self, saved: Mapping[str, Any], where: str | Path) -> None:
        """Raise :class:`~bit_keras.errors.ConfigError` naming every resume key that differs from ``saved``."""
        now = self.to_dict()
        diff = [k for k in self.RESUME_KEYS if now.get(k) != saved.get(k)]
        if diff:
            shown = "; ".join(f"{k}: saved {saved.get(k)!r}, now {now.get(k)!r}" for k in diff)
            raise ConfigError(f"{where} holds a different run, which cannot be resumed with these settings ({shown}): "
                              "use a new output_dir, or delete the old one to start over")
