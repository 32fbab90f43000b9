"""BiT-HyperRule, value by value, including every threshold edge."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bit_keras.errors import ConfigError
from bit_keras.recipes.hyperrule import (
    HyperParams,
    get_lr,
    get_mixup,
    get_resolution,
    get_schedule,
    hyperparams_for,
)

SMALL = [100, 200, 300, 400, 500]
MEDIUM = [500, 3000, 6000, 9000, 10_000]
LARGE = [500, 6000, 12_000, 18_000, 20_000]


@pytest.mark.parametrize(
    "size, expected",
    [
        ((32, 32), (160, 128)),
        ((95, 95), (160, 128)),
        ((95, 97), (160, 128)),  # area 9215 < 9216
        ((96, 96), (512, 480)),  # strict: 96x96 is already "large"
        ((1, 9216), (512, 480)),
        ((97, 95), (160, 128)),
        ((224, 224), (512, 480)),
        ((500, 375), (512, 480)),
    ],
)
def test_get_resolution_code_rule(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert get_resolution(size) == expected
    assert get_resolution(size, rule="code") == expected


@pytest.mark.parametrize(
    "size, expected",
    [((32, 32), (160, 128)), ((95, 97), (160, 128)), ((96, 96), (448, 384)), ((224, 224), (448, 384))],
)
def test_get_resolution_paper_rule(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert get_resolution(size, rule="paper") == expected


def test_get_resolution_unknown_rule() -> None:
    with pytest.raises(ConfigError, match="'code', 'paper'"):
        get_resolution((32, 32), rule="timm")


@pytest.mark.parametrize(
    "n, schedule, mixup",
    [
        (0, SMALL, 0.0),
        (1000, SMALL, 0.0),
        (19_999, SMALL, 0.0),
        (20_000, MEDIUM, 0.1),
        (50_000, MEDIUM, 0.1),
        (499_999, MEDIUM, 0.1),
        (500_000, LARGE, 0.1),
        (1_281_167, LARGE, 0.1),
    ],
)
def test_schedule_and_mixup_thresholds(n: int, schedule: list[int], mixup: float) -> None:
    assert get_schedule(n) == schedule
    assert get_mixup(n) == mixup


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),
        (50, 0.0015),
        (99, 0.003 * 99 / 100),
        (100, 0.003),
        (150, 0.003),
        (200, 0.003),  # strict decay: the boundary step itself is not decayed yet
        (201, 3e-4),
        (250, 3e-4),
        (300, 3e-4),
        (350, 3e-5),
        (450, 3e-6),
        (499, 3e-6),
        (500, None),
        (501, None),
    ],
)
def test_get_lr_small_schedule(step: int, expected: float | None) -> None:
    lr = get_lr(step, 1000)
    if expected is None:
        assert lr is None
    else:
        assert lr == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),
        (250, 0.0015),
        (500, 0.003),
        (3000, 0.003),
        (3001, 3e-4),
        (6000, 3e-4),
        (6001, 3e-5),
        (9001, 3e-6),
        (9999, 3e-6),
        (10_000, None),
    ],
)
def test_get_lr_medium_schedule(step: int, expected: float | None) -> None:
    lr = get_lr(step, 50_000)
    if expected is None:
        assert lr is None
    else:
        assert lr == pytest.approx(expected, rel=1e-12)


def test_get_lr_large_schedule_and_base_lr() -> None:
    assert get_lr(250, 1_000_000) == pytest.approx(0.0015)
    assert get_lr(6001, 1_000_000, base_lr=0.01) == pytest.approx(1e-3)
    assert get_lr(19_999, 1_000_000) == pytest.approx(3e-6)
    assert get_lr(20_000, 1_000_000) is None


def test_get_lr_explicit_schedule() -> None:
    schedule = [10, 20, 30]
    assert get_lr(5, None, schedule=schedule) == pytest.approx(0.0015)
    assert get_lr(20, 10**9, schedule=schedule) == pytest.approx(0.003)  # schedule wins over num_examples
    assert get_lr(21, None, schedule=schedule) == pytest.approx(3e-4)
    assert get_lr(30, None, schedule=schedule) is None
    with pytest.raises(ConfigError, match="schedule"):
        get_lr(5, None)


def test_hyperparams_for_small_dataset() -> None:
    hp = hyperparams_for(1000, (32, 32))
    assert (hp.resize, hp.crop) == (160, 128)
    assert hp.schedule == tuple(SMALL)
    assert hp.mixup_alpha == 0.0
    assert (hp.base_lr, hp.batch_size, hp.momentum, hp.weight_decay, hp.zero_head) == (0.003, 512, 0.9, 0.0, True)
    assert hp.steps == 500
    assert hp.to_dict() == {
        "resize": 160,
        "crop": 128,
        "schedule": SMALL,
        "mixup_alpha": 0.0,
        "base_lr": 0.003,
        "batch_size": 512,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "zero_head": True,
    }
    assert json.loads(json.dumps(hp.to_dict())) == hp.to_dict()  # JSON as it is (lists, not tuples)


def test_hyperparams_for_edges() -> None:
    assert hyperparams_for(19_999, (95, 95)).to_dict()["schedule"] == SMALL
    hp = hyperparams_for(20_000, (96, 96))
    assert (hp.resize, hp.crop, hp.mixup_alpha, list(hp.schedule)) == (512, 480, 0.1, MEDIUM)
    assert list(hyperparams_for(499_999, (95, 97)).schedule) == MEDIUM
    assert hyperparams_for(499_999, (95, 97)).crop == 128
    assert list(hyperparams_for(500_000, (224, 224)).schedule) == LARGE
    paper = hyperparams_for(500_000, (224, 224), rule="paper")
    assert (paper.resize, paper.crop) == (448, 384)
    with pytest.raises(ConfigError, match="unknown rule"):
        hyperparams_for(10, (32, 32), rule="nope")


def test_hyperparams_lr_uses_own_schedule_and_base_lr() -> None:
    hp = hyperparams_for(50_000, (32, 32), base_lr=0.001)
    assert hp.lr(250) == pytest.approx(0.0005)
    assert hp.lr(3001) == pytest.approx(1e-4)
    assert hp.lr(10_000) is None
    assert hp.lr(5000) == get_lr(5000, 50_000, base_lr=0.001)
    custom = hyperparams_for(1000, (32, 32), schedule=[10, 20, 40])
    assert custom.schedule == (10, 20, 40)
    assert custom.lr(5) == pytest.approx(0.0015)
    assert custom.lr(21) == pytest.approx(3e-4)
    assert custom.lr(40) is None


def test_overrides() -> None:
    hp = hyperparams_for(1000, (32, 32), resize=256, crop=224, mixup_alpha=0.2, batch_size=64, weight_decay=1e-4)
    assert (hp.resize, hp.crop, hp.mixup_alpha, hp.batch_size, hp.weight_decay) == (256, 224, 0.2, 64, 1e-4)
    assert hp.schedule == tuple(SMALL)  # the rest stays from the rule
    assert hyperparams_for(1000, (32, 32), zero_head=False).zero_head is False
    assert hyperparams_for(1000, (32, 32), momentum=0.0).momentum == 0.0


def test_unknown_override_names_valid_fields() -> None:
    with pytest.raises(ConfigError) as err:
        hyperparams_for(1000, (32, 32), learning_rate=0.1)
    msg = str(err.value)
    assert "learning_rate" in msg
    for name in ("resize", "crop", "schedule", "mixup_alpha", "base_lr", "batch_size", "weight_decay"):
        assert name in msg


def test_invalid_values() -> None:
    with pytest.raises(ConfigError, match="increasing"):
        hyperparams_for(1000, (32, 32), schedule=[300, 200, 500])
    with pytest.raises(ConfigError, match="increasing"):
        hyperparams_for(1000, (32, 32), schedule=[500])
    with pytest.raises(ConfigError, match="crop"):
        hyperparams_for(1000, (32, 32), crop=224)  # resize stays 160
    with pytest.raises(ConfigError, match="num_examples"):
        hyperparams_for(-1, (32, 32))


def test_hyperparams_frozen_and_equality() -> None:
    hp = hyperparams_for(1000, (32, 32))
    with pytest.raises(dataclasses.FrozenInstanceError):
        hp.resize = 1  # type: ignore[misc]
    same = HyperParams(resize=160, crop=128, schedule=SMALL, mixup_alpha=0.0)
    assert same == hp  # provenance fields take no part in equality
    assert isinstance(same.schedule, tuple)
    assert dataclasses.replace(hp, batch_size=128).batch_size == 128


def test_describe_small() -> None:
    lines = hyperparams_for(1000, (32, 32)).describe()
    assert lines[0] == "images 32x32 (< 96x96): resize 160, crop 128"
    assert lines[1] == "1,000 examples (< 20,000): 500 steps, warm-up 100, decays after 200/300/400"
    assert lines[2] == "mixup 0.0 (< 20,000 examples)"
    assert "momentum 0.9" in lines[3] and "weight decay 0.0" in lines[3] and "batch 512" in lines[3]


def test_describe_large_paper_and_overrides() -> None:
    lines = hyperparams_for(50_000, (224, 224), rule="paper", batch_size=128).describe()
    assert lines[0] == "images 224x224 (>= 96x96): resize 448, crop 384 [paper rule]"
    assert lines[1] == (
        "50,000 examples (20,000 to 499,999): 10,000 steps, warm-up 500, decays after 3,000/6,000/9,000"
    )
    assert lines[2] == "mixup 0.1 (>= 20,000 examples)"
    assert "batch 128" in lines[3]
    assert "resize 224 (override)" in hyperparams_for(1000, (32, 32), resize=224, crop=224).describe()[0]
    assert ">= 500,000" in hyperparams_for(600_000, (32, 32)).describe()[1]
    # built by hand: no provenance, still describes the values
    bare = HyperParams(resize=160, crop=128, schedule=SMALL, mixup_alpha=0.0).describe()
    assert bare[0] == "resize 160, crop 128"
    assert bare[2] == "mixup 0.0"
