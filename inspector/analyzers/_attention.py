"""Analyzers of attention layers: mean attention distance and entropy (METRICS.md §1-2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

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


@dataclass(frozen=True, kw_only=True, eq=False)
class DistanceLayer(Record):
    """Mean attention distance of one attention layer (METRICS.md §1)."""

    mean: np.ndarray = array("head", doc="renormalised MAD in input pixels, mean over images")
    std: np.ndarray = array("head", doc="its standard deviation over images (ddof 1)")
    raw_mean: np.ndarray = array("head", doc="MAD without renormalising, mean over images")
    raw_std: np.ndarray = array("head", doc="its standard deviation over images")
    prefix_mass: np.ndarray = array("head", doc="attention on prefix keys, mean over images")
    uniform: float = value("MAD of uniform attention on the layer's grid (one window's)")
    windowed: bool = value("the geometry is windowed (the reference is one window's)")
    images: int = value("images averaged")


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
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"summaries"})
    result: ClassVar[type[DistanceResult]] = DistanceResult

    def params(self) -> dict[str, Any]:
        return {"shown": "renormalised", "queries": "spatial", "self_pair": "included"}

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
            raw_mean, raw_std = nan_stats(layer.summaries["distance_raw"])
            prefix_mean, _ = nan_stats(layer.summaries["prefix_mass"])
            layers[name] = DistanceLayer(
                mean=mean,
                std=std,
                raw_mean=raw_mean,
                raw_std=raw_std,
                prefix_mass=prefix_mean,
                uniform=float(layer.distances.mean()),
                windowed=geometry.get("kind") == "windowed",
                images=int(layer.summaries["distance"].shape[0]),
            )
        return DistanceResult(
            version=self.version, params=self.params(), layers=layers, notes=notes
        )


@REGISTRY.register
class AttentionEntropy:
    """Per layer × head attention entropy (nats) over all keys, prefix tokens included,
    mean over spatial queries and images, and its value normalised by ``ln(#keys)``."""

    name: ClassVar[str] = "attention_entropy"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"summaries"})
    result: ClassVar[type[EntropyResult]] = EntropyResult

    def params(self) -> dict[str, Any]:
        return {"log": "natural", "prefix_keys": "included", "queries": "spatial"}

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
            layers[name] = EntropyLayer(mean=mean, std=std, normalised=normalised)
        return EntropyResult(version=self.version, params=self.params(), layers=layers, notes=notes)


def uniform_reference(distances: np.ndarray) -> float:
    """MAD of attention spread uniformly over every spatial key (self included)."""
    return float(np.asarray(distances).mean())
