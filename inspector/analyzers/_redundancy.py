"""Head and channel redundancy on comparable axes (METRICS.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ._distance import pairwise_js_divergence
from ._group_intervals import GROUP_METHOD, batch_means_interval, interval_of
from ._record import AnalysisResult, Record, array, record, value
from ._registry import REGISTRY, AnalysisInputs
from ._results import nonfinite_note
from ._similarity import (
    biased_cka_from_moments,
    corrected_participation_ratio,
    correlation_from_covariance,
    debiased_cka_from_sums,
    participation_ratio,
    redundancy_summary,
)

SAMPLE_LIMIT = 5
"""A layer is flagged sample-limited when its rows are fewer than this many times its
units (METRICS.md §4)."""


__all__ = [
    "ChannelRedundancy",
    "ChannelRedundancyLayer",
    "ChannelRedundancyResult",
    "HeadRedundancy",
    "HeadRedundancyLayer",
    "HeadRedundancyResult",
    "RedundancyStats",
    "correlation_summary",
]


@dataclass(frozen=True, kw_only=True, eq=False)
class RedundancyStats(Record):
    """How redundant a layer's units are, from their similarity matrix (METRICS.md §4)."""

    units: int = value("units summarised (units with NaN similarity left out)")
    mean_similarity: float = value("mean off-diagonal similarity")
    mean_max_similarity: float = value("mean over units of the largest similarity to another")
    effective_units: float = value("participation ratio of the similarity matrix")
    effective_fraction: float = value("effective_units / units")
    redundancy: float = value("1 - effective_fraction")
    excluded_units: int = value("units left out (dead channels, constant heads)")
    redundancy_low: float | None = value(
        "95 % interval of redundancy, low end (batch means over contiguous image groups)",
        optional=True,
    )
    redundancy_high: float | None = value("95 % interval of redundancy, high end", optional=True)
    mean_similarity_low: float | None = value(
        "95 % interval of mean_similarity, low end", optional=True
    )
    mean_similarity_high: float | None = value(
        "95 % interval of mean_similarity, high end", optional=True
    )
    rows: int | None = value("rows (sampled positions x images) estimated from", optional=True)
    images: int | None = value("images the rows came from", optional=True)
    image_groups: int | None = value("image groups the interval's spread came from", optional=True)
    sample_limited: bool | None = value(
        "rows < 5 x units (the width of the unit's similarity estimate)", optional=True
    )


def _vector(similarity: np.ndarray, *, absolute: bool = False, rows: int = 0) -> np.ndarray:
    """``[redundancy, mean_similarity]`` as :func:`_stats` computes them."""
    stats = _stats(similarity, absolute=absolute, rows=rows)
    return np.array([stats["redundancy"], stats["mean_similarity"]])


def _with_interval(stats: dict[str, Any], low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    """The interval's ends, clipped to what each measure can take (a symmetric batch-means
    interval can reach past them): redundancy in [0, 1], similarity in [-1, 1]."""
    return stats | {
        "redundancy_low": float(np.clip(low[0], 0.0, 1.0)),
        "redundancy_high": float(np.clip(high[0], 0.0, 1.0)),
        "mean_similarity_low": float(np.clip(low[1], -1.0, 1.0)),
        "mean_similarity_high": float(np.clip(high[1], -1.0, 1.0)),
    }


def correlation_summary(covariance: np.ndarray, rows: int, overwrite: bool = False) -> np.ndarray:
    """``[redundancy, mean |r|]`` of single channels from one image group's covariance
    (the capture keeps it per closed image group: the |r| summaries' intervals).

    The same numbers as ``_stats(correlation_from_covariance(c), absolute=True,
    rows=rows)`` (dead channels left out, the corrected participation ratio), computed
    in place on one copy: it runs for every group of every channel layer inside the
    capture, where a dozen ``width × width`` temporaries per call would raise the peak
    memory of a run by a quarter. ``overwrite``: work in ``covariance`` itself (a float64
    or float32 array its caller discards: the capture's closing image group), no copy at
    all; sums are taken in float64 either way.
    """
    if overwrite and covariance.dtype in (np.float32, np.float64) and covariance.flags.writeable:
        c = covariance
    else:
        c = np.array(covariance, dtype=np.float64)
    std = np.sqrt(np.clip(np.diag(c), 0.0, None))
    alive = std > 0
    if not alive.all():
        c, std = c[alive][:, alive], std[alive]
    units = c.shape[0]
    if units < 2 or rows < 3:
        return np.array([np.nan, np.nan])
    c /= std[:, None]
    c /= std[None, :]
    np.clip(c, -1.0, 1.0, out=c)
    np.fill_diagonal(c, 1.0)
    step = max(1, (1 << 20) // units)  # row blocks: no second width × width array
    absolute = sum(
        float(np.abs(c[i : i + step]).sum(dtype=np.float64)) for i in range(0, units, step)
    )
    mean = (absolute - units) / (units * (units - 1))
    np.square(c, out=c)
    squares = float(c.sum(dtype=np.float64))  # the unit diagonal included
    np.subtract(1.0, c, out=c)
    np.square(c, out=c)  # (1 − r²)², zero on the diagonal
    corrected = max(squares - float(c.sum(dtype=np.float64)) / (rows - 1), float(units))
    return np.array([1.0 - units / corrected, mean])


def _stats(similarity: np.ndarray, *, absolute: bool = False, rows: int = 0) -> dict[str, Any]:
    """Summaries of ``similarity``; with ``rows`` (correlations), the participation ratio
    carries the first-order small-sample correction and the raw value is kept."""
    summary = redundancy_summary(similarity, absolute=absolute)
    extra: dict[str, Any] = {}
    if rows and summary.units >= 2:
        dead = np.isnan(np.diag(similarity))
        live = np.asarray(similarity)[~dead][:, ~dead]
        effective = corrected_participation_ratio(live, rows)
        extra = {
            "effective_units": effective,
            "effective_fraction": effective / summary.units,
            "redundancy": 1.0 - effective / summary.units,
            "effective_units_raw": summary.effective_units,
        }
    return {
        "units": summary.units,
        "mean_similarity": summary.mean_similarity,
        "mean_max_similarity": summary.mean_max_similarity,
        "effective_units": summary.effective_units,
        "effective_fraction": summary.effective_fraction,
        "redundancy": summary.redundancy,
        "excluded_units": summary.excluded_units,
    } | extra


@dataclass(frozen=True, kw_only=True, eq=False)
class HeadRedundancyLayer(RedundancyStats):
    """Head-to-head similarity of one attention layer; the summaries are of ``cka``."""

    cka: np.ndarray = array("head", "head", doc="debiased linear CKA between head outputs")
    cka_biased: np.ndarray = array("head", "head", doc="biased linear CKA, for reference")
    covariance_effective_fraction: float = value(
        "participation ratio of the concatenated head outputs' covariance / its width"
    )
    js_divergence: np.ndarray | None = array(
        "head", "head", doc="mean Jensen-Shannon divergence between the heads' kept maps",
        optional=True,
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True, eq=False)
class HeadRedundancyResult(AnalysisResult):
    """Per attention layer with per-head outputs, head similarity."""

    analyzer: ClassVar[str] = "head_redundancy"
    layers: Mapping[str, HeadRedundancyLayer] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, eq=False)
class ChannelRedundancyLayer(RedundancyStats):
    """Channel similarity of one channel layer; the summaries are of ``|Pearson r|``."""

    covariance_effective_fraction: float = value(
        "participation ratio of the channels' covariance / channels"
    )
    effective_units_raw: float | None = value(
        "participation ratio of the correlation matrix without the small-sample "
        "correction (effective_units carries it, docs/metrics.md §4)",
        optional=True,
    )
    grouped_cka: np.ndarray | None = array(
        "group", "group", doc="debiased linear CKA between groups of head_dim channels",
        optional=True,
    )  # fmt: skip
    grouped: RedundancyStats | None = record(
        "the summaries of grouped_cka, compared like heads", optional=True
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class ChannelRedundancyResult(AnalysisResult):
    """Per channel layer with a covariance, channel similarity."""

    analyzer: ClassVar[str] = "channel_redundancy"
    layers: Mapping[str, ChannelRedundancyLayer] = field(default_factory=dict)


def _grouped_cka(groups: Mapping[str, np.ndarray]) -> np.ndarray:
    count = len(groups["norms"])
    size = len(groups["sum"]) // count
    return debiased_cka_from_sums(**groups, groups=count, size=size)


def _sample(layer: Any, width: int) -> dict[str, Any]:
    """Rows, images and the sample-limited flag (rows < 5 x the co-moment's width)."""
    rows = int(layer.moments["count"])
    return {
        "rows": rows,
        "images": int(layer.attrs.get("images", 0)),
        "sample_limited": rows < SAMPLE_LIMIT * width,
    }


def _covariance_fraction(moments: Mapping[str, np.ndarray]) -> float:
    comoment = np.asarray(moments["comoment"], dtype=np.float64)
    if comoment.ndim != 2:
        return float("nan")
    # The streamed co-moment is symmetric up to rounding; where the mean is large next to
    # the spread (un-normalised random CNNs: DPN) its corrections cancel and the rounding
    # shows. Average it with its transpose rather than refuse it.
    return participation_ratio((comoment + comoment.T) / 2) / comoment.shape[0]


@REGISTRY.register
class HeadRedundancy:
    """Per attention layer: debiased CKA between heads' outputs (H×H) and its summaries,
    biased CKA for reference, Jensen–Shannon divergence between heads' maps, and the
    participation ratio of the concatenated head outputs' covariance."""

    name: ClassVar[str] = "head_redundancy"
    version: ClassVar[str] = "2"
    needs: ClassVar[frozenset[str]] = frozenset({"moments", "maps"})
    result: ClassVar[type[HeadRedundancyResult]] = HeadRedundancyResult

    def params(self) -> dict[str, Any]:
        return {
            "similarity": "debiased linear CKA",
            "unit": "head output [sample x token, head_dim]",
            "interval": f"95 % {GROUP_METHOD} (t with groups - 1 degrees of freedom)",
            "sample_limited": f"rows < {SAMPLE_LIMIT} x width",
        }

    def compute(self, inputs: AnalysisInputs) -> HeadRedundancyResult:
        layers: dict[str, HeadRedundancyLayer] = {}
        notes: dict[str, str] = {}
        for name, layer in inputs.layers.items():
            if layer.kind != "attention":
                continue
            if layer.groups is None or layer.moments is None:
                notes[name] = "no per-head outputs captured (no linear output projection)"
                continue
            broken = nonfinite_note(layer, state=True)
            if broken is not None:
                notes[name] = broken
                continue
            rows = int(np.asarray(layer.groups["count"]))
            if rows < 4:  # class attention on few images: one query row per image
                notes[name] = (
                    f"{rows} head-output rows (tokens x images) captured: debiased CKA needs "
                    "at least 4 (more images, or more querying tokens)"
                )
                continue
            heads = int(layer.attrs["heads"])
            cka = _grouped_cka(layer.groups)
            comoment = np.asarray(layer.moments["comoment"])
            js = None
            if layer.maps is not None and layer.maps.size:
                maps = layer.maps.astype(np.float64)
                if maps.ndim == 5:  # [sample, window, head, query, key]
                    maps = maps.reshape(-1, *maps.shape[2:])
                js = pairwise_js_divergence(maps)
            stats = _stats(cka) | _sample(layer, comoment.shape[0])
            if layer.image_groups is not None:
                point = np.array([stats["redundancy"], stats["mean_similarity"]])
                low, high, count = interval_of(point, layer.image_groups, _vector)
                stats = _with_interval(stats, low, high) | {"image_groups": count}
            layers[name] = HeadRedundancyLayer(
                cka=cka,
                cka_biased=biased_cka_from_moments(comoment, heads, comoment.shape[0] // heads),
                covariance_effective_fraction=_covariance_fraction(layer.moments),
                js_divergence=js,
                **stats,
            )
        return HeadRedundancyResult(
            version=self.version, params=self.params(), layers=layers, notes=notes
        )


@REGISTRY.register
class ChannelRedundancy:
    """Per channel layer: Pearson correlation between channels (summaries only; the C×C
    matrix is not stored), and the like-for-like variant: debiased CKA between groups of
    ``head_dim`` consecutive channels, compared exactly like heads."""

    name: ClassVar[str] = "channel_redundancy"
    version: ClassVar[str] = "2"
    needs: ClassVar[frozenset[str]] = frozenset({"moments"})
    result: ClassVar[type[ChannelRedundancyResult]] = ChannelRedundancyResult

    def params(self) -> dict[str, Any]:
        return {
            "similarity": "Pearson correlation (|r| for mean and max)",
            "grouped": "debiased linear CKA on groups of head_dim channels",
            "participation_ratio": "first-order small-sample correction (raw kept)",
            "interval": f"95 % {GROUP_METHOD} (t with groups - 1 degrees of freedom), "
            "on the channel-group CKA and on the |r| summaries (each group's own "
            "correlation matrix)",
            "sample_limited": f"rows < {SAMPLE_LIMIT} x channels",
        }

    def compute(self, inputs: AnalysisInputs) -> ChannelRedundancyResult:
        layers: dict[str, ChannelRedundancyLayer] = {}
        notes: dict[str, str] = {}
        for name, layer in inputs.layers.items():
            if layer.kind != "channel" or layer.moments is None:
                continue
            broken = nonfinite_note(layer, state=True)
            if broken is not None:
                notes[name] = broken
                continue
            comoment = np.asarray(layer.moments["comoment"], dtype=np.float64)
            count = int(layer.moments["count"])
            if comoment.ndim != 2 or count < 3:
                notes[name] = "too wide or too few rows for a covariance"
                continue
            comoment = (comoment + comoment.T) / 2  # symmetric up to rounding (see above)
            correlation = correlation_from_covariance(comoment / (count - 1))
            sample = _sample(layer, comoment.shape[0])
            stats = _stats(correlation, absolute=True, rows=count) | sample
            grouped_cka, grouped_stats = None, None
            if layer.groups is not None:
                grouped_cka = _grouped_cka(layer.groups)
                grouped_stats = _stats(grouped_cka) | sample
            summaries = (layer.image_groups or {}).get("summary")
            if summaries is not None:
                point = np.array([stats["redundancy"], stats["mean_similarity"]])
                low, high, count = batch_means_interval(point, list(np.asarray(summaries)))
                stats = _with_interval(stats, low, high) | {"image_groups": count}
            if layer.image_groups is not None and grouped_stats is not None:
                point = np.array([grouped_stats["redundancy"], grouped_stats["mean_similarity"]])
                low, high, count = interval_of(point, layer.image_groups, _vector)
                grouped_stats = _with_interval(grouped_stats, low, high) | {"image_groups": count}
            layers[name] = ChannelRedundancyLayer(
                covariance_effective_fraction=_covariance_fraction(layer.moments),
                grouped_cka=grouped_cka,
                grouped=None if grouped_stats is None else RedundancyStats(**grouped_stats),
                **stats,
            )
        return ChannelRedundancyResult(
            version=self.version, params=self.params(), layers=layers, notes=notes
        )
