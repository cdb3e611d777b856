"""95 % intervals from resampling images (METRICS.md §7): the shared primitives.

Every reported number carries its sample size and an interval. Where per-image values
exist (distance, entropy, ERF maps) the interval is a percentile bootstrap over images;
for streaming accumulators it is a bootstrap over G disjoint image groups, each group
one mergeable accumulator (:func:`bootstrap_indices` with ``n`` = G). Resampling is
seeded; the count is stored with the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "IntervalSpec",
    "bootstrap",
    "bootstrap_indices",
    "bootstrap_mean",
]

LEVEL = 0.95
"""Coverage of every interval inspector reports."""

RESAMPLES = 1000
"""Bootstrap resamples by default."""


@dataclass(frozen=True)
class IntervalSpec:
    """How an interval was made (stored with a result's parameters).

    Attributes:
        level: Nominal coverage.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        method: ``percentile bootstrap over images`` or ``... over image groups``.
    """

    level: float = LEVEL
    resamples: int = RESAMPLES
    seed: int = 0
    method: str = "percentile bootstrap over images"

    def __post_init__(self) -> None:
        if not 0 < self.level < 1:
            raise ValueError(f"interval level must be in (0, 1), got {self.level}")
        if self.resamples < 1:
            raise ValueError(f"resamples must be >= 1, got {self.resamples}")


def bootstrap_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``[resample, n]`` indices drawn with replacement from ``range(n)`` (seeded)."""
    if n < 1:
        raise ValueError(f"bootstrap needs at least one image (or group), got {n}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap(
    n: int,
    statistic: Callable[[np.ndarray], np.ndarray],
    spec: IntervalSpec = IntervalSpec(),
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``statistic`` over ``n`` images (or groups).

    Args:
        n: Number of images (or image groups) to resample.
        statistic: Maps an index array ``[n]`` (a resample, with repeats) to the
            statistic's value (any shape); it is also the point estimate on
            ``arange(n)``.
        spec: Level, resamples and seed.

    Returns:
        ``(low, high)`` with the statistic's shape; NaN where it is NaN in most
        resamples.
    """
    draws = np.stack(
        [
            np.asarray(statistic(i), dtype=np.float64)
            for i in bootstrap_indices(n, spec.resamples, spec.seed)
        ]
    )
    tail = (1 - spec.level) / 2 * 100
    with np.errstate(invalid="ignore"), _quiet():
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return low, high


def bootstrap_mean(
    values: np.ndarray, spec: IntervalSpec = IntervalSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the NaN-ignoring mean over the first axis
    (images) of ``values`` ``[sample, ...]``."""
    values = np.asarray(values, dtype=np.float64)
    index = bootstrap_indices(values.shape[0], spec.resamples, spec.seed)
    flat = values.reshape(values.shape[0], -1)
    draws = np.empty((spec.resamples, flat.shape[1]))
    chunk = max(1, (1 << 24) // max(flat.size, 1))  # about 128 MiB of resampled rows at once
    with np.errstate(invalid="ignore"), _quiet():
        for start in range(0, spec.resamples, chunk):
            draws[start : start + chunk] = np.nanmean(flat[index[start : start + chunk]], axis=1)
        tail = (1 - spec.level) / 2 * 100
        low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    shape = values.shape[1:]
    return low.reshape(shape), high.reshape(shape)


class _quiet:
    """Silence numpy's 'Mean of empty slice' / 'All-NaN slice' warnings (NaN is the answer)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)
