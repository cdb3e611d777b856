"""Intervals of streamed statistics from per-image-group sums (METRICS.md §7).

The capture keeps one set of CKA sums per disjoint image group (``ImageGroupSums``);
all groups are taken about one common shift, so any multiset of groups adds up to the
sums of its images. A percentile bootstrap over the non-empty groups recomputes a
statistic on each resample's summed sums; the point estimate is the statistic of the
total (nothing changes for it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ._intervals import IntervalSpec, bootstrap

__all__ = ["GROUP_METHOD", "GroupedSums", "group_interval"]

GROUP_METHOD = "percentile bootstrap over image groups"
_KEYS = ("count", "sum", "cross", "weighted", "norms")


class GroupedSums:
    """The non-empty image groups of an ``ImageGroupSums`` state, stacked.

    Args:
        state: ``count [G]``, ``sum [G, p]``, ``cross [G, p, p]``, ``weighted``,
            ``norms`` and ``shift [G, p]`` (one shift shared by the non-empty groups).
    """

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        counts = np.asarray(state["count"], dtype=np.int64)
        keep = counts > 0
        self.parts = {k: np.asarray(state[k], dtype=np.float64)[keep] for k in _KEYS}
        self.groups = int(keep.sum())
        self.images = int(np.asarray(state.get("images", self.groups)))
        shifts = np.asarray(state["shift"], dtype=np.float64)[keep]
        if self.groups and not (shifts == shifts[0]).all():
            raise ValueError("image-group sums about different shifts cannot be added")

    def total(self, index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The sums of the groups in ``index`` (with repeats; all groups when None)."""
        if index is None:
            return {k: v.sum(0) for k, v in self.parts.items()}
        weights = np.bincount(index, minlength=self.groups).astype(np.float64)
        return {k: np.tensordot(weights, v, axes=1) for k, v in self.parts.items()}


def group_interval(
    sums: GroupedSums,
    statistic: Callable[[dict[str, np.ndarray]], np.ndarray],
    spec: IntervalSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of ``statistic(total sums)`` from a bootstrap over image groups.

    NaN (the statistic's shape) with fewer than 2 non-empty groups.
    """
    if sums.groups < 2:
        shape = np.shape(statistic(sums.total()))
        return np.full(shape, np.nan), np.full(shape, np.nan)

    def draw(index: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(statistic(sums.total(index)), dtype=np.float64)
        except (ValueError, np.linalg.LinAlgError):
            return np.full(np.shape(statistic(sums.total())), np.nan)

    return bootstrap(sums.groups, draw, spec)
