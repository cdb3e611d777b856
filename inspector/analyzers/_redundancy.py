"""Head and channel redundancy on comparable axes (METRICS.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ._distance import pairwise_js_divergence
from ._record import AnalysisResult, Record, array, record, value
from ._registry import REGISTRY, AnalysisInputs
from ._results import nonfinite_note
from ._similarity import (
    biased_cka_from_moments,
    correlation_from_covariance,
    debiased_cka_from_sums,
    participation_ratio,
    redundancy_summary,
)

__all__ = [
    "ChannelRedundancy",
    "ChannelRedundancyLayer",
    "ChannelRedundancyResult",
    "HeadRedundancy",
    "HeadRedundancyLayer",
    "HeadRedundancyResult",
    "RedundancyStats",
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


def _stats(similarity: np.ndarray, *, absolute: bool = False) -> dict[str, Any]:
    summary = redundancy_summary(similarity, absolute=absolute)
    return {
        "units": summary.units,
        "mean_similarity": summary.mean_similarity,
        "mean_max_similarity": summary.mean_max_similarity,
        "effective_units": summary.effective_units,
        "effective_fraction": summary.effective_fraction,
        "redundancy": summary.redundancy,
        "excluded_units": summary.excluded_units,
    }


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
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"moments", "maps"})
    result: ClassVar[type[HeadRedundancyResult]] = HeadRedundancyResult

    def params(self) -> dict[str, Any]:
        return {
            "similarity": "debiased linear CKA",
            "unit": "head output [sample x token, head_dim]",
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
            layers[name] = HeadRedundancyLayer(
                cka=cka,
                cka_biased=biased_cka_from_moments(comoment, heads, comoment.shape[0] // heads),
                covariance_effective_fraction=_covariance_fraction(layer.moments),
                js_divergence=js,
                **_stats(cka),
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
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"moments"})
    result: ClassVar[type[ChannelRedundancyResult]] = ChannelRedundancyResult

    def params(self) -> dict[str, Any]:
        return {
            "similarity": "Pearson correlation (|r| for mean and max)",
            "grouped": "debiased linear CKA on groups of head_dim channels",
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
            grouped_cka, grouped = None, None
            if layer.groups is not None:
                grouped_cka = _grouped_cka(layer.groups)
                grouped = RedundancyStats(**_stats(grouped_cka))
            layers[name] = ChannelRedundancyLayer(
                covariance_effective_fraction=_covariance_fraction(layer.moments),
                grouped_cka=grouped_cka,
                grouped=grouped,
                **_stats(correlation, absolute=True),
            )
        return ChannelRedundancyResult(
            version=self.version, params=self.params(), layers=layers, notes=notes
        )
