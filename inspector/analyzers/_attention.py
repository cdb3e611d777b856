"""Analyzers of attention layers: mean attention distance and entropy (METRICS.md §1-2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ._intervals import IntervalSpec, bootstrap_mean
from ._record import AnalysisResult, Record, array, value
from ._registry import REGISTRY, AnalysisInputs
from ._results import nan_stats, nonfinite_note

__all__ = [
    "GLOBAL",
    "LOCAL",
    "AttentionDistance",
    "AttentionEntropy",
    "DistanceLayer",
    "DistanceResult",
    "EntropyLayer",
    "EntropyResult",
]

LOCAL, GLOBAL = 0.35, 0.75
"""Heads below / above these fractions of the uniform-attention distance count as local /
global (report findings, the ``locality`` column of ``Run.to_dataframe("heads")``)."""

# Geometries with token centres: ``windowed`` and ``dilated`` (MaxViT grid attention)
# measure positions inside one sequence, as the in-hook summaries do.
_SPATIAL = ("global", "windowed", "dilated")
_SPEC = IntervalSpec()


@dataclass(frozen=True, kw_only=True, eq=False)
class DistanceLayer(Record):
    """Mean attention distance of one attention layer (METRICS.md §1)."""

    mean: np.ndarray = array("head", doc="renormalised MAD in input pixels, mean over images")
    std: np.ndarray = array("head", doc="its standard deviation over images (ddof 1)")
    raw_mean: np.ndarray = array("head", doc="MAD without renormalising, mean over images")
    raw_std: np.ndarray = array("head", doc="its standard deviation over images")
    prefix_mass: np.ndarray = array("head", doc="attention on prefix keys, mean over images")
    uniform: float = value(
        "MAD of uniform attention on the layer's grid (one window's; over real keys and "
        "queries where border windows are zero-padded)"
    )
    windowed: bool = value("the geometry is windowed (the reference is one window's)")
    images: int = value("images averaged")
    mean_low: np.ndarray | None = array(
        "head", doc="95 % interval of mean, low end (percentile bootstrap over images)",
        optional=True,
    )  # fmt: skip
    mean_high: np.ndarray | None = array(
        "head", doc="95 % interval of mean, high end", optional=True
    )
    centre_mean: np.ndarray | None = array(
        "head", doc="MAD_centre: renormalised distance of the query token(s) nearest the "
        "image centre (2x2 for an even grid), px, mean over images", optional=True
    )  # fmt: skip
    centre_low: np.ndarray | None = array(
        "head",
        doc="95 % percentile-bootstrap interval over images of centre_mean: low",
        optional=True,
    )
    centre_high: np.ndarray | None = array("head", doc="the same: high", optional=True)
    centre_uniform: float | None = value(
        "MAD_centre of uniform attention on the layer's grid", optional=True
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class DistanceResult(AnalysisResult):
    """Per attention layer, per head mean attention distance;
    layers with unknown or non-spatial geometry get a note instead."""

    analyzer: ClassVar[str] = "attention_distance"
    layers: Mapping[str, DistanceLayer] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, eq=False)
class EntropyLayer(Record):
    """Attention entropy of one attention layer (METRICS.md §2)."""

    mean: np.ndarray = array("head", doc="entropy in nats over all keys, mean over images")
    std: np.ndarray = array("head", doc="its standard deviation over images (ddof 1)")
    normalised: np.ndarray = array("head", doc="entropy / ln(keys), mean over images")
    mean_low: np.ndarray | None = array(
        "head", doc="95 % interval of mean, low end (percentile bootstrap over images)",
        optional=True,
    )  # fmt: skip
    mean_high: np.ndarray | None = array(
        "head", doc="95 % interval of mean, high end", optional=True
    )
    images: int | None = value("images averaged", optional=True)


@dataclass(frozen=True, kw_only=True, eq=False)
class EntropyResult(AnalysisResult):
    """Per attention layer, per head entropy."""

    analyzer: ClassVar[str] = "attention_entropy"
    layers: Mapping[str, EntropyLayer] = field(default_factory=dict)


@REGISTRY.register
class AttentionDistance:
    """Per layer × head mean attention distance in input pixels, mean and std over images.

    Renormalised over spatial keys (the default shown) and raw, the prefix mass, and the
    uniform-attention reference of the layer's grid (of one window for ``windowed``, of
    one dilated sequence for ``dilated``). Layers whose geometry is unknown or not
    spatial get no numbers, only the reason.
    """

    name: ClassVar[str] = "attention_distance"
    version: ClassVar[str] = "2"
    needs: ClassVar[frozenset[str]] = frozenset({"summaries"})
    result: ClassVar[type[DistanceResult]] = DistanceResult

    def __init__(self, interval: IntervalSpec | None = None) -> None:
        self.interval = interval or IntervalSpec()

    def params(self) -> dict[str, Any]:
        return {
            "shown": "renormalised",
            "queries": "spatial",
            "self_pair": "included",
            "centre_queries": "the token(s) nearest the grid centre (2x2 for an even grid)",
            "interval": {
                "level": self.interval.level,
                "resamples": self.interval.resamples,
                "seed": self.interval.seed,
                "method": self.interval.method,
                "of": "centre_mean",
            },
        }

    def compute(self, inputs: AnalysisInputs) -> DistanceResult:
        layers: dict[str, DistanceLayer] = {}
        notes: dict[str, str] = {}
        for name, layer in inputs.layers.items():
            if layer.kind != "attention" or "distance" not in layer.summaries:
                continue
            broken = nonfinite_note(layer)
            if broken is not None:
                notes[name] = broken
                continue
            geometry = layer.attrs.get("geometry", {})
            if geometry.get("kind") not in _SPATIAL or layer.distances is None:
                notes[name] = f"{geometry.get('kind', 'unknown')}: {geometry.get('reason', '')}"
                continue
            mean, std = nan_stats(layer.summaries["distance"])
            mean_low, mean_high = bootstrap_mean(layer.summaries["distance"], self.interval)
            raw_mean, raw_std = nan_stats(layer.summaries["distance_raw"])
            prefix_mean, _ = nan_stats(layer.summaries["prefix_mass"])
            centre: dict[str, Any] = {}
            per_image = layer.summaries.get("distance_centre")
            if per_image is not None and per_image.size:
                centre_mean, _ = nan_stats(per_image)
                low, high = bootstrap_mean(per_image, self.interval)
                centre = {
                    "centre_mean": centre_mean,
                    "centre_low": low,
                    "centre_high": high,
                    "centre_uniform": centre_uniform(layer.distances, layer.slots),
                }
            layers[name] = DistanceLayer(
                mean=mean,
                std=std,
                raw_mean=raw_mean,
                raw_std=raw_std,
                prefix_mass=prefix_mean,
                uniform=uniform_reference(layer.distances, layer.slots),
                windowed=geometry.get("kind") == "windowed",
                images=int(layer.summaries["distance"].shape[0]),
                mean_low=mean_low,
                mean_high=mean_high,
                **centre,
            )
        return DistanceResult(
            version=self.version, params=self.params(), layers=layers, notes=notes
        )


@REGISTRY.register
class AttentionEntropy:
    """Per layer × head attention entropy (nats) over all keys, prefix tokens included,
    mean over spatial queries and images, and its value normalised by ``ln(#keys)``."""

    name: ClassVar[str] = "attention_entropy"
    version: ClassVar[str] = "2"
    needs: ClassVar[frozenset[str]] = frozenset({"summaries"})
    result: ClassVar[type[EntropyResult]] = EntropyResult

    def params(self) -> dict[str, Any]:
        return {
            "log": "natural",
            "prefix_keys": "included",
            "queries": "spatial",
            "interval": "95 % percentile bootstrap over images, 1000 resamples, seed 0",
        }

    def compute(self, inputs: AnalysisInputs) -> EntropyResult:
        layers: dict[str, EntropyLayer] = {}
        notes: dict[str, str] = {}
        for name, layer in inputs.layers.items():
            if layer.kind != "attention" or "entropy" not in layer.summaries:
                continue
            broken = nonfinite_note(layer)
            if broken is not None:
                notes[name] = broken
                continue
            mean, std = nan_stats(layer.summaries["entropy"])
            normalised, _ = nan_stats(layer.summaries["entropy_normalised"])
            low, high = bootstrap_mean(layer.summaries["entropy"], _SPEC)
            layers[name] = EntropyLayer(
                mean=mean,
                std=std,
                normalised=normalised,
                mean_low=low,
                mean_high=high,
                images=int(layer.summaries["entropy"].shape[0]),
            )
        return EntropyResult(version=self.version, params=self.params(), layers=layers, notes=notes)


def _padded_uniform(
    distances: np.ndarray, slots: tuple[np.ndarray, np.ndarray], rows: np.ndarray
) -> float:
    """Uniform attention over each window's real keys, mean over its real ``rows``."""
    per_query = [
        distances[np.ix_(q & rows, k)].mean(1)
        for q, k in zip(*slots, strict=True)
        if (q & rows).any() and k.any()
    ]
    return float(np.concatenate(per_query).mean()) if per_query else float("nan")


def uniform_reference(
    distances: np.ndarray, slots: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """MAD of attention spread uniformly over every spatial key (self included); with
    ``slots`` (windows zero-padded at the border), over each window's real keys, mean
    over the real queries of every window (METRICS.md §1: padded slots are not tokens)."""
    d = np.asarray(distances, dtype=np.float64)
    if slots is None:
        return float(d.mean())
    return _padded_uniform(d, slots, np.ones(d.shape[0], dtype=bool))


def centre_uniform(
    distances: np.ndarray, slots: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """``MAD_centre`` of uniform attention: the mean distance from the central queries
    (nearest the query grid's centre, as in the capture summary) to every spatial key.

    ``distances`` is ``[query, key]``; the central queries are those whose mean distance
    pattern is that of the grid centre, found as the rows whose summed squared distance
    to every key is least (for a regular grid: the tokens nearest its centre).
    """
    d = np.asarray(distances, dtype=np.float64)
    spread = (d**2).sum(1)
    central = spread <= spread.min() * (1 + 1e-9) + 1e-9
    if slots is not None:
        return _padded_uniform(d, slots, central)
    return float(d[central].mean())
