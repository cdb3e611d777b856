"""Analyzers of the gradient and ablation passes: ERF, importance, pruning (METRICS.md §3, §5)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._erf import REPLKNET_THRESHOLDS, erf_mean_distance, erf_radius, replknet_area_ratios
from ._importance import largest_prunable_fraction, normalise_importance, spearman
from ._registry import REGISTRY, AnalysisInputs
from ._results import LayerResults

__all__ = ["Importance", "PruningCurve", "ReceptiveField"]


@REGISTRY.register
class ReceptiveField:
    """Gradient ERF per layer: mean distance (comparable with MAD), 50 % / 90 % radii in
    input pixels, RepLKNet area ratios, and the averaged map."""

    name: ClassVar[str] = "receptive_field"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"erf"})

    def __init__(self, thresholds: tuple[float, ...] = REPLKNET_THRESHOLDS) -> None:
        self.thresholds = thresholds

    def params(self) -> dict[str, Any]:
        return {
            "gradient": "|ds/dx| summed over colour channels, mean over images",
            "s": "sum over channels of the output at the centre position",
            "replknet_thresholds": list(self.thresholds),
            "replknet_note": "on |gradient| (RepLKNet uses ReLU'd gradients); resolution-dependent",
        }

    def compute(self, inputs: AnalysisInputs) -> LayerResults:
        layers: dict[str, dict[str, Any]] = {}
        notes: dict[str, str] = {}
        for name, erf in inputs.erf.items():
            if "map" not in erf:
                notes[name] = str(erf.get("reason", "not measured"))
                continue
            erf_map, centre = np.asarray(erf["map"]), tuple(erf["centre"])
            if not np.isfinite(erf_map).all() or erf_map.sum() <= 0:
                notes[name] = "the gradient map is zero or not finite"
                continue
            ratios = replknet_area_ratios(erf_map, self.thresholds)
            layers[name] = {
                "mean_distance": erf_mean_distance(erf_map, centre),
                "radius_50": erf_radius(erf_map, centre, 0.5),
                "radius_90": erf_radius(erf_map, centre, 0.9),
                "area_ratio": np.array([np.nan if r is None else r[1] for r in ratios.values()]),
                "map": erf_map.astype(np.float32),
                "centre": np.asarray(centre, dtype=np.float64),
                "branch": str(erf.get("branch", "")),
                "position": str(erf.get("note", "")),
            }
        return LayerResults(self.name, self.version, self.params(), layers, notes=notes)


@REGISTRY.register
class Importance:
    """Gate-gradient importance of heads and channels, one normalisation for both: per
    layer by its L2 norm, then min–max over the model; raw values kept. Validated by
    Spearman rank correlation against true single-unit ablation on a sample of units."""

    name: ClassVar[str] = "importance"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"gates"})

    def params(self) -> dict[str, Any]:
        return {"loss": "cross-entropy of the model's top-1 (or the label)", "gate": "per unit"}

    def compute(self, inputs: AnalysisInputs) -> LayerResults:
        layers: dict[str, dict[str, Any]] = {}
        summary: dict[str, Any] = {}
        notes: dict[str, str] = {}
        for kind, data in inputs.gates.items():
            raw = {p: np.asarray(g).mean(0) for p, g in data["raw"].items()}
            for path in [p for p, values in raw.items() if not np.isfinite(values).all()]:
                notes[path] = "not measured: NaN or inf in its gate gradients"
                del raw[path]
            if not raw:
                continue
            normalised = normalise_importance(list(raw.values()))
            for (path, values), norm in zip(raw.items(), normalised, strict=True):
                layers[path] = {"kind": kind, "raw": values, "normalised": norm}
            ablation = data.get("ablation", {})
            gradient = np.asarray(ablation.get("gradient", []))
            delta = np.asarray(ablation.get("delta", []))
            finite = bool(np.isfinite(gradient).all() and np.isfinite(delta).all())
            summary[kind] = {
                "spearman_vs_ablation": (
                    spearman(gradient, delta) if gradient.size > 2 and finite else np.nan
                ),
                "ablation_units": int(gradient.size),
                "ablation_images": int(ablation.get("images", 0)),
                "ablation_gradient": gradient,
                "ablation_delta": delta,
            }
        return LayerResults(
            self.name, self.version, self.params(), layers, summary=summary, notes=notes
        )


@REGISTRY.register
class PruningCurve:
    """Top-1 agreement and KL(full ‖ pruned) as units are removed in increasing order of
    importance (10 % steps), and the largest fraction removable at ≥ 99 % agreement."""

    name: ClassVar[str] = "pruning_curve"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"gates", "pruning"})

    def __init__(self, threshold: float = 0.99) -> None:
        self.threshold = threshold

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "order": "increasing normalised importance"}

    def compute(self, inputs: AnalysisInputs) -> LayerResults:
        summary: dict[str, Any] = {}
        for kind, curve in inputs.pruning.items():
            fractions = np.asarray(curve["fractions"])
            agreement = np.asarray(curve["agreement"])
            summary[kind] = {
                "fractions": fractions,
                "agreement": agreement,
                "kl": np.asarray(curve["kl"]),
                "units": int(curve.get("units", 0)),
                "prunable_fraction": largest_prunable_fraction(
                    fractions, agreement, self.threshold
                ),
            }
        return LayerResults(self.name, self.version, self.params(), {}, summary=summary)
