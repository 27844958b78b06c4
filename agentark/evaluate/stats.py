"""Small-sample statistics for comparing systems on the same items.

Pilots evaluate a few hundred questions at most, so every accuracy is reported with a bootstrap
confidence interval, and two systems are compared *paired* (same items, same resamples): the
per-item correlation between them makes paired intervals far tighter than two independent ones.
Intervals are scipy's percentile bootstrap (``scipy.stats.bootstrap``, paired resamples where two
systems are compared); everything is a pure function of its inputs and a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Interval = tuple[float, float, float]
"""``(point estimate, lower bound, upper bound)``."""


def _as_array(values: Sequence[float] | np.ndarray, name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-d sequence, got shape {array.shape}")
    return array


def _paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} != {y.size}")
    return x, y


def _bootstrap(samples: tuple[np.ndarray, ...], statistic, point: float, n_boot: int, alpha: float,
               seed: int) -> Interval:
    """Percentile bootstrap of a vectorised ``statistic(*samples, axis)``; several samples are
    resampled with the same item indices (``paired``), which keeps the pairing of two systems."""
    from scipy.stats import bootstrap

    if np.all([np.all(x == x[0]) for x in samples]):
        return float(point), float(point), float(point)  # no spread to resample (scipy refuses it)
    result = bootstrap(samples, statistic, n_resamples=n_boot, confidence_level=1 - alpha, method="percentile",
                       paired=len(samples) > 1, vectorized=True, rng=np.random.default_rng(seed))
    return float(point), float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis)


def _diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return x.mean(axis=axis) - y.mean(axis=axis)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> Interval:
    """Percentile-bootstrap CI of the mean; the same seed gives the same interval."""
    x = _as_array(values)
    return _bootstrap((x,), _mean, x.mean(), n_boot, alpha, seed)


def paired_bootstrap_diff(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_boot: int = 2000,
                          alpha: float = 0.05, seed: int = 0) -> Interval:
    """CI of ``mean(a) - mean(b)`` where ``a[i]`` and ``b[i]`` are two systems on the same item ``i``."""
    x, y = _paired(a, b)
    if np.all(x - y == (x - y)[0]):
        return float(x.mean() - y.mean()), float((x - y)[0]), float((x - y)[0])  # every resample agrees
    return _bootstrap((x, y), _diff, x.mean() - y.mean(), n_boot, alpha, seed)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``0/0 = 1`` (two systems that both score 0 are equal) and ``x/0 = inf``."""
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 1.0))


def _mean_ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _ratio(x.mean(axis=axis), y.mean(axis=axis))


def relative_ratio_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_boot: int = 2000,
                      alpha: float = 0.05, seed: int = 0) -> Interval:
    """Paired-bootstrap CI of ``mean(a) / mean(b)``, e.g. student accuracy as a share of the MAS's.

    The rollout gate tests the *lower* bound against its target (0.95), so a student is adopted only
    when the data make "at least 95% of the multi-agent accuracy" plausible, not merely possible.
    """
    x, y = _paired(a, b)
    point = _ratio(np.array([x.mean()]), np.array([y.mean()]))[0]
    if np.all(x == x[0]) and np.all(y == y[0]):
        return float(point), float(point), float(point)
    return _bootstrap((x, y), _mean_ratio, point, n_boot, alpha, seed)


def mcnemar(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> dict[str, float | int]:
    """Exact McNemar test of paired correctness: do ``a`` and ``b`` disagree in one direction more?

    ``b01`` counts items ``a`` got wrong and ``b`` right, ``b10`` the reverse. Under the null the
    ``n = b01 + b10`` discordant items split Binomial(n, 1/2); the p-value is scipy's exact two-sided
    binomial test (the chi-square approximation is poor for the small discordant counts a pilot has).
    """
    from scipy.stats import binomtest

    x, y = _paired(a, b)
    x, y = x.astype(bool), y.astype(bool)
    b01 = int(np.sum(~x & y))
    b10 = int(np.sum(x & ~y))
    n = b01 + b10
    p_value = float(binomtest(b01, n, 0.5).pvalue) if n else 1.0
    return {"b01": b01, "b10": b10, "p_value": p_value}


def percentiles(latencies: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 95, 99)) -> dict[float, float]:
    """``{q: q-th percentile}`` with linear interpolation between order statistics (numpy's default)."""
    x = _as_array(latencies, "latencies")
    return {q: float(v) for q, v in zip(qs, np.percentile(x, list(qs), method="linear"), strict=True)}
