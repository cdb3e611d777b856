"""Unit importance, pruning-curve summaries and rank agreement (METRICS.md §5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._intervals import IntervalSpec, bootstrap

__all__ = [
    "largest_prunable_fraction",
    "normalise_importance",
    "prunable_with_interval",
    "rankdata",
    "spearman",
    "spearman_interval",
    "wilson_interval",
]


def normalise_importance(raw: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Normalise importance per layer by the L2 norm, then min–max over the whole model.

    Args:
        raw: One ``[unit]`` array of raw importances per layer.

    Returns:
        One array per layer, in ``[0, 1]`` across the model. A layer whose importances are
        all 0 stays 0 (no norm to divide by); if every normalised value is equal the result
        is all 0, since no unit is more important than another.

    Raises:
        ValueError: If there are no layers, or a value is negative or not finite.
    """
    layers = [np.asarray(layer, dtype=np.float64) for layer in raw]
    if not layers or all(layer.size == 0 for layer in layers):
        raise ValueError("normalise_importance needs at least one unit")
    for index, layer in enumerate(layers):
        if not np.isfinite(layer).all() or (layer < 0).any():
            raise ValueError(f"importance of layer {index} must be finite and >= 0")
    scaled = []
    for layer in layers:
        norm = np.linalg.norm(layer)
        scaled.append(layer / norm if norm > 0 else np.zeros_like(layer))
    values = np.concatenate([layer.ravel() for layer in scaled])
    low, high = values.min(), values.max()
    if high <= low:
        return [np.zeros_like(layer) for layer in scaled]
    return [(layer - low) / (high - low) for layer in scaled]


def largest_prunable_fraction(
    fractions: Sequence[float], agreements: Sequence[float], threshold: float = 0.99
) -> float:
    """Largest fraction of units removable while top-1 agreement stays at ``threshold``.

    The curve is read in increasing order of fraction and stops at the first step below
    the threshold: a later recovery (agreement is not always monotone) does not count,
    because pruning removes units cumulatively.

    Args:
        fractions: Fractions of units removed, e.g. ``0.0, 0.1, …, 1.0``.
        agreements: Top-1 agreement with the unpruned model at each fraction.
        threshold: Least agreement accepted.

    Returns:
        The fraction; 0.0 when even the first step falls below the threshold.
    """
    f = np.asarray(fractions, dtype=np.float64)
    a = np.asarray(agreements, dtype=np.float64)
    if f.ndim != 1 or f.shape != a.shape:
        raise ValueError(
            f"fractions and agreements must be equal-length 1-d, got {f.shape}, {a.shape}"
        )
    order = np.argsort(f, kind="stable")
    best = 0.0
    for fraction, agreement in zip(f[order], a[order], strict=True):
        if not agreement >= threshold:  # NaN agreement fails too
            break
        best = float(fraction)
    return best


def rankdata(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties given their average rank (as ``scipy.stats.rankdata``)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # Each run of equal values gets the mean of the ranks it spans.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]
    run_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(v.size)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation, ties averaged.

    Args:
        a: ``[unit]`` values, e.g. gate-gradient importance.
        b: ``[unit]`` values for the same units, e.g. true ablation loss change.

    Returns:
        Pearson correlation of the ranks; NaN if either side is constant or has fewer
        than two values.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"spearman needs equal lengths, got {x.size} and {y.size}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("spearman got NaN values")
    if x.size < 2:
        return float("nan")
    rx = rankdata(x) - (x.size + 1) / 2.0
    ry = rankdata(y) - (y.size + 1) / 2.0
    denominator = np.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denominator) if denominator > 0 else float("nan")


def wilson_interval(
    successes: np.ndarray, n: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion (Wilson 1927), elementwise.

    With ``n`` images all agreeing the lower bound is ``n / (n + z²)`` (9 of 9 at 95 %:
    0.701), so a threshold of 99 % needs about 380 agreeing images to be cleared.

    Args:
        successes: Number of agreeing images (any shape).
        n: Images, at least 1.
        level: Coverage.
    """
    if n < 1:
        raise ValueError(f"a Wilson interval needs at least one image, got {n}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    k = np.asarray(successes, dtype=np.float64)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def prunable_with_interval(
    fractions: Sequence[float], lower: Sequence[float], threshold: float = 0.99
) -> float:
    """Largest fraction removable while the agreement interval's lower bound clears
    ``threshold`` (METRICS.md §5): :func:`largest_prunable_fraction` on the lower bound."""
    return largest_prunable_fraction(fractions, lower, threshold)


def spearman_interval(
    gradient: np.ndarray, delta: np.ndarray, spec: IntervalSpec | None = None
) -> tuple[float, float]:
    """Bootstrap over images of the Spearman correlation between the units' mean gate
    gradient and mean |ΔL| (``[unit, image]`` each; the units stay fixed)."""
    gradient, delta = np.asarray(gradient, np.float64), np.asarray(delta, np.float64)

    def rho(index: np.ndarray) -> np.ndarray:
        return np.asarray(spearman(gradient[:, index].mean(1), delta[:, index].mean(1)))

    low, high = bootstrap(gradient.shape[1], rho, spec or IntervalSpec())
    return float(low), float(high)
