"""Head and channel redundancy on comparable axes (METRICS.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ._distance import pairwise_js_divergence
from ._registry import REGISTRY, AnalysisInputs
from ._results import LayerResults, nonfinite_note
from ._similarity import (
    biased_cka_from_moments,
    correlation_from_covariance,
    debiased_cka_from_sums,
    participation_ratio,
    redundancy_summary,
)

__all__ = ["ChannelRedundancy", "HeadRedundancy"]


def _summary(similarity: np.ndarray, *, absolute: bool = False) -> dict[str, Any]:
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


def _grouped_cka(groups: Mapping[str, np.ndarray]) -> np.ndarray:
    count = len(groups["norms"])
    size = len(groups["sum"]) // count
    return debiased_cka_from_sums(**groups, groups=count, size=size)


def _covariance_fraction(moments: Mapping[str, np.ndarray]) -> float:
    comoment = np.asarray(moments["comoment"])
    if comoment.ndim != 2:
        return float("nan")
    return participation_ratio(comoment) / comoment.shape[0]


@REGISTRY.register
class HeadRedundancy:
    """Per attention layer: debiased CKA between heads' outputs (H×H) and its summaries,
    biased CKA for reference, Jensen–Shannon divergence between heads' maps, and the
    participation ratio of the concatenated head outputs' covariance."""

    name: ClassVar[str] = "head_redundancy"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"moments", "maps"})

    def params(self) -> dict[str, Any]:
        return {
            "similarity": "debiased linear CKA",
            "unit": "head output [sample x token, head_dim]",
        }

    def compute(self, inputs: AnalysisInputs) -> LayerResults:
        layers: dict[str, dict[str, Any]] = {}
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
            heads = int(layer.attrs["heads"])
            cka = _grouped_cka(layer.groups)
            comoment = np.asarray(layer.moments["comoment"])
            values: dict[str, Any] = {
                "cka": cka,
                "cka_biased": biased_cka_from_moments(comoment, heads, comoment.shape[0] // heads),
                "covariance_effective_fraction": _covariance_fraction(layer.moments),
                **_summary(cka),
            }
            if layer.maps is not None and layer.maps.size:
                maps = layer.maps.astype(np.float64)
                if maps.ndim == 5:  # [sample, window, head, query, key]
                    maps = maps.reshape(-1, *maps.shape[2:])
                values["js_divergence"] = pairwise_js_divergence(maps)
            layers[name] = values
        return LayerResults(self.name, self.version, self.params(), layers, notes=notes)


@REGISTRY.register
class ChannelRedundancy:
    """Per channel layer: Pearson correlation between channels (summaries only; the C×C
    matrix is not stored), and the like-for-like variant: debiased CKA between groups of
    ``head_dim`` consecutive channels, compared exactly like heads."""

    name: ClassVar[str] = "channel_redundancy"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"moments"})

    def params(self) -> dict[str, Any]:
        return {
            "similarity": "Pearson correlation (|r| for mean and max)",
            "grouped": "debiased linear CKA on groups of head_dim channels",
        }

    def compute(self, inputs: AnalysisInputs) -> LayerResults:
        layers: dict[str, dict[str, Any]] = {}
        notes: dict[str, str] = {}
        for name, layer in inputs.layers.items():
            if layer.kind != "channel" or layer.moments is None:
                continue
            broken = nonfinite_note(layer, state=True)
            if broken is not None:
                notes[name] = broken
                continue
            comoment = np.asarray(layer.moments["comoment"])
            count = int(layer.moments["count"])
            if comoment.ndim != 2 or count < 3:
                notes[name] = "too wide or too few rows for a covariance"
                continue
            correlation = correlation_from_covariance(comoment / (count - 1))
            values = {
                **_summary(correlation, absolute=True),
                "covariance_effective_fraction": _covariance_fraction(layer.moments),
            }
            if layer.groups is not None:
                grouped = _grouped_cka(layer.groups)
                values["grouped_cka"] = grouped
                values["grouped"] = _summary(grouped)
            layers[name] = values
        return LayerResults(self.name, self.version, self.params(), layers, notes=notes)
