"""The few-shot linear probe's classifier: closed-form L2-regularised least squares on frozen features.

The idea of big_vision's ``fewshot_lsr`` evaluator (google-research/big_vision), written anew in float64 NumPy:

* features are standardised per dimension with the training shots' mean and standard deviation;
* the bias is handled exactly by centring: features and targets are centred on the training shots, the weights
  solve the ridge problem on the centred data and the bias is what centring removed. The bias is therefore not
  regularised at all (big_vision appends a constant column of 100, which regularises it a little);
* targets are one-hot in {0, 1}. big_vision uses {-1, +1}; with a centred (unregularised) bias the two give the
  same predictions: centred ±1 targets are exactly twice the centred {0, 1} ones, so the weights double and
  every class score becomes ``2 * s - 1``, the same arg-max (a test checks it). {0, 1} keeps the scores
  readable as class memberships;
* one eigendecomposition of the Gram matrix (``X Xᵀ`` when there are fewer examples than dimensions, the
  few-shot case, else ``Xᵀ X``) gives the solution for every L2 strength at the cost of a matrix product, so a
  grid of strengths costs about as much as one.

L2 strengths are given relative to the feature dimension ``d``: ``l2 = alpha * d``. After standardisation each
training row has a mean squared norm of ``d``, so ``alpha`` means the same for 512- and 8192-d features
(big_vision's fixed ``2**10`` on 2048-d features is ``alpha = 0.5``).

:func:`choose_l2` picks ``alpha`` from :data:`L2_GRID` on the training pool alone: a held-out part of the pool's
examples is scored while k-shot sets are drawn from the rest (see its docstring). The test set never enters.

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [0.2, 0.9], [1.0, 0.0], [0.9, 0.1]])
    >>> probe = fit_lsr(x, np.array([0, 0, 1, 1]), num_classes=2, alpha=0.01)
    >>> probe.predict(np.array([[0.1, 1.0], [1.0, 0.2]])).tolist()
    [0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bit_keras.errors import ConfigError, DataError

# alpha = l2 / feature_dim, half-decade steps from 1e-4 to 1e2 (big_vision's fixed 2**10 on 2048-d is 0.5).
L2_GRID: tuple[float, ...] = tuple(float(f"{v:.3g}") for v in np.logspace(-4, 2, 13))
DEFAULT_ALPHA = 0.5  # when the pool is too small to hold examples out (big_vision's fixed strength)
STD_FLOOR = 1e-6  # relative to the largest per-dimension std: dimensions below it are constant on the shots


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float64)[labels]


def _check(features: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise DataError(f"need features [n, d] and n labels with n >= 1; got {x.shape} and {y.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError("the features hold NaN or infinite values: the model diverged or the images are broken")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"labels must be in [0, {num_classes}); got {int(y.min())}..{int(y.max())}")
    return x, y.astype(np.int64)


@dataclass(frozen=True)
class LinearProbe:
    """A fitted linear classifier on raw features: ``scores = features @ weights + bias``."""

    weights: np.ndarray  # [d, num_classes], float64, in the raw feature coordinates
    bias: np.ndarray  # [num_classes]
    alpha: float
    l2: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weights + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.argmax(self.scores(features), axis=1)

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.predict(features) == np.asarray(labels).reshape(-1)))


class RidgePath:
    """Centred, standardised ridge regression onto one-hot targets, solved once for any number of strengths.

    ``weights(l2)`` is the minimiser of ``|Xs W - Ys|² + l2 |W|²`` with ``Xs`` the standardised, centred
    features and ``Ys`` the centred one-hot targets (``l2 = 0``: the minimum-norm least-squares solution).

    Example:
        >>> path = RidgePath(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]), 2)
        >>> path.probe(alpha=0.0).predict(np.array([[0.4], [2.6]])).tolist()
        [0, 1]
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, num_classes: int, *, targets: str = "one_hot"):
        x, y = _check(features, labels, num_classes)
        self.num_classes = num_classes
        self.dim = x.shape[1]
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        floor = STD_FLOOR * (float(std.max()) if std.size else 0.0)
        # Dimensions constant on the shots carry nothing to fit: an infinite scale maps them to 0, here and on
        # any later features (dividing a tiny std would blow a test example's value up instead).
        self.scale = np.where(std > floor, std, np.inf)
        xs = (x - self.mean) / self.scale
        t = _one_hot(y, num_classes)
        if targets == "plus_minus_one":
            t = 2.0 * t - 1.0
        elif targets != "one_hot":
            raise ConfigError(f"targets must be 'one_hot' or 'plus_minus_one', got {targets!r}")
        self.target_mean = t.mean(axis=0)
        yc = t - self.target_mean
        n, d = xs.shape
        if n <= d:  # dual: W = Xᵀ (X Xᵀ + l2 I)⁻¹ Y = Xᵀ Q diag(1/(e + l2)) Qᵀ Y
            eigs, q = np.linalg.eigh(xs @ xs.T)
            self._left, self._right = xs.T @ q, q.T @ yc
        else:  # primal: W = (Xᵀ X + l2 I)⁻¹ Xᵀ Y = Q diag(1/(e + l2)) Qᵀ Xᵀ Y
            eigs, q = np.linalg.eigh(xs.T @ xs)
            self._left, self._right = q, q.T @ (xs.T @ yc)
        self._eigs = np.clip(eigs, 0.0, None)
        self._tol = max(self._eigs.max(initial=0.0), 1.0) * max(n, d) * np.finfo(np.float64).eps

    def _inverse(self, l2: float) -> np.ndarray:
        denom = self._eigs + l2
        # l2 = 0: the pseudo-inverse (the directions the data does not span get no weight).
        return np.where(denom > self._tol, 1.0 / np.where(denom > self._tol, denom, 1.0), 0.0)

    def weights(self, l2: float) -> np.ndarray:
        """The ridge weights in standardised coordinates, [d, num_classes]."""
        if l2 < 0:
            raise ConfigError(f"the L2 strength must be >= 0, got {l2}")
        return (self._left * self._inverse(l2)) @ self._right

    def probe(self, alpha: float) -> LinearProbe:
        """The classifier for ``l2 = alpha * d``, folded back onto the raw features."""
        l2 = float(alpha) * self.dim
        w = self.weights(l2) / self.scale[:, None]
        return LinearProbe(w, self.target_mean - self.mean @ w, float(alpha), l2)

    def accuracies(self, features: np.ndarray, labels: np.ndarray, alphas: Sequence[float]) -> list[float]:
        """Top-1 on (features, labels) for every ``alpha``, from one projection of the features."""
        xs = (np.asarray(features, np.float64) - self.mean) / self.scale
        projected = xs @ self._left  # [m, r]
        y = np.asarray(labels).reshape(-1)
        out = []
        for alpha in alphas:
            scores = (projected * self._inverse(float(alpha) * self.dim)) @ self._right  # + target_mean: same argmax
            out.append(float(np.mean(np.argmax(scores, axis=1) == y)))
        return out


def fit_lsr(features: np.ndarray, labels: np.ndarray, *, num_classes: int, alpha: float,
            targets: str = "one_hot") -> LinearProbe:
    """Fit the probe on ``features`` [n, d] with integer ``labels`` [n] at ``l2 = alpha * d``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(6, 20)) + 5 * np.repeat(np.eye(3, 20), 2, axis=0)   # 3 separable classes
        >>> fit_lsr(x, np.repeat([0, 1, 2], 2), num_classes=3, alpha=0.1).predict(x).tolist()
        [0, 0, 1, 1, 2, 2]
    """
    return RidgePath(features, labels, num_classes, targets=targets).probe(alpha)


def _holdout(labels: np.ndarray, num_classes: int, max_shots: int, per_class: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """(draw-from indices, held-out indices) of the pool, or None when some class cannot spare an example."""
    draw, held = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        spare = min(per_class, len(idx) - max_shots, len(idx) // 2)
        if spare < 1:
            return None
        held.append(idx[:spare])
        draw.append(idx[spare:])
    return np.concatenate(draw), np.concatenate(held)


@dataclass(frozen=True)
class L2Choice:
    """The strength :func:`choose_l2` picked for one shot count, and why."""

    shots: int
    alpha: float
    scores: dict[float, float]  # alpha -> mean held-out top-1 (empty: not chosen from data)
    method: str

    def to_dict(self) -> dict:
        return {"shots": self.shots, "alpha": self.alpha, "method": self.method,
                "held_out_top1": {str(a): s for a, s in self.scores.items()}}


def selection_plan(labels: np.ndarray, num_classes: int, shots: Sequence[int], *, seed: int = 100,
                   draws: int = 3, held_out_per_class: int = 20) -> dict[str, object]:
    """Which pool examples :func:`choose_l2` uses: a held-out part and, per shot count, ``draws`` k-shot sets.

    Per class, ``min(held_out_per_class, n_c - max(shots), n_c // 2)`` examples are held out (seeded by ``seed``,
    a seed of its own, not an evaluation seed); each k-shot set is drawn from the rest of the class. When a
    class cannot spare one example the plan is empty and :data:`DEFAULT_ALPHA` is used.

    Example:
        >>> plan = selection_plan(np.repeat([0, 1], 10), 2, [1, 2], draws=2)
        >>> len(plan["held_out"]), [len(s) for s in plan["draws"][2]]
        (10, [4, 4])
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    split = _holdout(labels, num_classes, max(shots), held_out_per_class, rng)
    if split is None:
        return {"held_out": np.zeros([0], np.int64), "draws": {}}
    pool, held = split
    sets: dict[int, list[np.ndarray]] = {}
    for k in shots:
        sets[k] = []
        for _ in range(draws):
            chosen = [rng.choice(pool[labels[pool] == c], k, replace=False) for c in range(num_classes)]
            sets[k].append(np.sort(np.concatenate(chosen)))
    return {"held_out": np.sort(held), "draws": sets}


def choose_l2(features: dict[int, np.ndarray] | np.ndarray, labels: np.ndarray, num_classes: int,
              plan: dict[str, object], shots: int, *, grid: Sequence[float] = L2_GRID) -> L2Choice:
    """Pick ``alpha`` for ``shots`` examples per class on the pool alone: the best mean top-1 on the plan's
    held-out examples of probes fitted on the plan's k-shot draws (ties: the stronger regulariser).

    Why a held-out part of the pool rather than cross-validation inside the k shots: with 1 example per class,
    leaving one out removes its class, so the score says nothing about the strength; the pool's other
    examples are labelled data the probe may use, and the test set stays untouched. ``features`` is the pool's
    feature matrix, or a mapping from pool index to feature row (only the plan's indices are read).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> labels = np.repeat(np.arange(3), 30)
        >>> x = rng.normal(size=(90, 50)) + 3 * np.eye(3, 50)[labels]
        >>> plan = selection_plan(labels, 3, [1, 5])
        >>> choice = choose_l2(x, labels, 3, plan, 5)
        >>> choice.method, choice.alpha in L2_GRID, len(choice.scores) == len(L2_GRID)
        ('held-out pool examples', True, True)
    """
    labels = np.asarray(labels).reshape(-1)
    grid = [float(a) for a in grid]
    if not grid:
        raise ConfigError("the L2 grid is empty")
    if len(grid) == 1:
        return L2Choice(shots, grid[0], {}, "given")
    draws = plan["draws"].get(shots) if isinstance(plan["draws"], dict) else None
    if not draws:
        return L2Choice(shots, DEFAULT_ALPHA, {}, "default: the pool cannot spare held-out examples")
    rows = (lambda idx: features[idx]) if isinstance(features, np.ndarray) else (
        lambda idx: np.stack([features[int(i)] for i in idx]))
    held = plan["held_out"]
    x_held, y_held = rows(held), labels[held]
    totals = np.zeros(len(grid))
    for chosen in draws:
        path = RidgePath(rows(chosen), labels[chosen], num_classes)
        totals += path.accuracies(x_held, y_held, grid)
    scores = {a: float(s / len(draws)) for a, s in zip(grid, totals)}
    best = max(grid, key=lambda a: (round(scores[a], 12), a))
    return L2Choice(shots, best, scores, "held-out pool examples")
