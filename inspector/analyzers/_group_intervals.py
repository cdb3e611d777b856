"""Intervals of streamed CKA statistics from contiguous image groups (METRICS.md §7).

The capture keeps, per contiguous image group, the small per-group-pair reductions of
its CKA sums (``hooks.ImageGroups``; a group's full ``p × p`` sums exist only while its
images stream in). Each group gives its own estimate of a statistic; the interval is the
batch-means interval around the point estimate of all images:
``point ± t(0.975, G − 1) · sd_g / √G``. Image groups are independent (images are), so
the spread of G group estimates, each from 1/G of the rows, estimates the standard error
of the all-image estimate when the statistic's variance scales like one over its rows;
groups only shift the centre of their own estimates (a group of one image reads
within-image rows), which the interval does not use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from ._similarity import debiased_cka_from_blocks

__all__ = ["GROUP_METHOD", "batch_means_interval", "group_cka", "interval_of", "t_quantile"]

GROUP_METHOD = "batch means over contiguous image groups"
_BLOCK_KEYS = ("count", "frob", "trace", "quad", "sum_sq", "sum_weighted", "norms")

# t(0.975, df) for df = 1..30; beyond, the normal quantile's 1.96 is within 1.5 %.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (two-sided 95 %)."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def group_cka(state: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The debiased CKA matrix of every closed image group of a ``ImageGroups`` state
    (groups too small for the estimator, fewer than 4 rows, are skipped)."""
    closed = np.asarray(state.get("closed", ()))
    out = []
    for position in range(closed.size):
        pieces = {k: np.asarray(state[k])[position] for k in _BLOCK_KEYS}
        if int(pieces["count"]) >= 4:
            out.append(debiased_cka_from_blocks(**pieces))
    return out


def batch_means_interval(
    point: np.ndarray, per_group: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(low, high, groups)``: 95 % batch-means interval around ``point`` from the
    groups' own estimates (NaN entries of a group are left out of that entry; an entry
    with fewer than 2 groups gets NaN ends). A constant statistic has zero width."""
    point = np.asarray(point, dtype=np.float64)
    if not per_group:
        nan = np.full(point.shape, np.nan)
        return nan, nan.copy(), 0
    values = np.stack([np.asarray(v, dtype=np.float64) for v in per_group])
    finite = np.isfinite(values)
    count = finite.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.nansum(values, 0) / np.maximum(count, 1), np.nan)
        squares = np.nansum((values - mean) ** 2, 0)
        sd = np.sqrt(squares / np.maximum(count - 1, 1))
        t = np.vectorize(lambda k: t_quantile(int(k)) if k >= 2 else math.nan)(count)
        half = t * sd / np.sqrt(np.maximum(count, 1))
    half = np.where(count >= 2, half, np.nan)
    return point - half, point + half, int(count.max(initial=0))


def interval_of(
    point: np.ndarray,
    state: Mapping[str, np.ndarray],
    statistic: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, int]:
    """Batch-means interval of ``statistic(cka matrix)`` over the closed image groups."""
    per_group = [np.asarray(statistic(cka), dtype=np.float64) for cka in group_cka(state)]
    return batch_means_interval(point, per_group)
