"""Analyzers of attention layers: mean attention distance and entropy (METRICS.md §1-2)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._registry import REGISTRY, AnalysisInputs
from ._results import LayerResults, nan_stats, nonfinite_note

__all__ = ["AttentionDistance", "AttentionEntropy"]

# Geometries with token centres: ``windowed`` and ``dilated`` (MaxViT grid attention)
# measure positions inside one sequence, as the in-hook summaries do.
_SPATIAL = ("global", "windowed", "dilated")


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

    def params(self) -> dict[str, Any]:
        return {"shown": "renormalised", "queries": "spatial", "self_pair": "included"}

    def compute(self, inputs: AnalysisInputs) -> LayerResults:
        layers: dict[str, dict[str, Any]] = {}
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
            layers[name] = {
                "mean": mean,
                "std": std,
                "raw_mean": raw_mean,
                "raw_std": raw_std,
                "prefix_mass": prefix_mean,
                "uniform": float(layer.distances.mean()),
                "windowed": geometry.get("kind") == "windowed",
                "images": int(layer.summaries["distance"].shape[0]),
            }
        return LayerResults(self.name, self.version, self.params(), layers, notes=notes)


@REGISTRY.register
class AttentionEntropy:
    """Per layer × head attention entropy (nats) over all keys, prefix tokens included,
    mean over spatial queries and images, and its value normalised by ``ln(#keys)``."""

    name: ClassVar[str] = "attention_entropy"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"summaries"})

    def params(self) -> dict[str, Any]:
        return {"log": "natural", "prefix_keys": "included", "queries": "spatial"}

    def compute(self, inputs: AnalysisInputs) -> LayerResults:
        layers: dict[str, dict[str, Any]] = {}
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
            layers[name] = {"mean": mean, "std": std, "normalised": normalised}
        return LayerResults(self.name, self.version, self.params(), layers, notes=notes)


def uniform_reference(distances: np.ndarray) -> float:
    """MAD of attention spread uniformly over every spatial key (self included)."""
    return float(np.asarray(distances).mean())
