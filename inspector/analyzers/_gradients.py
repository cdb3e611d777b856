"""Analyzers of the gradient and ablation passes: ERF, importance, pruning (METRICS.md §3, §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ._erf import REPLKNET_THRESHOLDS, erf_mean_distance, erf_radius, replknet_area_ratios
from ._importance import largest_prunable_fraction, normalise_importance, spearman
from ._record import AnalysisResult, Record, array, pair, value
from ._registry import REGISTRY, AnalysisInputs

__all__ = [
    "AblationCheck",
    "ErfLayer",
    "ErfResult",
    "Importance",
    "ImportanceLayer",
    "ImportanceResult",
    "PruningCurve",
    "PruningCurveResult",
    "PruningKind",
    "ReceptiveField",
]


@dataclass(frozen=True, kw_only=True, eq=False)
class ErfLayer(Record):
    """Gradient ERF of one layer (METRICS.md §3)."""

    mean_distance: float = value("mass-weighted mean distance from the centre, pixels")
    radius_50: float = value("radius of the disc about the centre holding 50 % of the mass")
    radius_90: float = value("the same for 90 %")
    area_ratio: np.ndarray = array(
        "threshold", doc="RepLKNet high-contribution area ratio per replknet_thresholds entry "
        "(NaN where no tested square exceeds it)"
    )  # fmt: skip
    map: np.ndarray = array("y", "x", dtype="float32", doc="the ERF map, mean |ds/dx|")
    centre: tuple[float, float] = pair("(y, x) of the output unit in input pixels")
    branch: str = value("block (after the residual), attention (before it) or conv")
    position: str = value("which output unit was selected and how its centre was placed")


@dataclass(frozen=True, kw_only=True, eq=False)
class ErfResult(AnalysisResult):
    """Per ERF layer, its map and summaries; skipped layers get a
    note."""

    analyzer: ClassVar[str] = "receptive_field"
    layers: Mapping[str, ErfLayer] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, eq=False)
class ImportanceLayer(Record):
    """Gate-gradient importance of one layer's units (METRICS.md §5)."""

    kind: str = value("unit kind: heads or channels")
    raw: np.ndarray = array(
        "unit", dtype="float32", doc="mean |dL/dgate| over images (the gradient's dtype)"
    )
    normalised: np.ndarray = array(
        "unit", doc="raw / the layer's L2 norm, then min-max over the model's units of the kind"
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class AblationCheck(Record):
    """Gate gradient against true single-unit ablation, for one unit kind."""

    spearman_vs_ablation: float = value("Spearman rank correlation (NaN under 3 units)")
    ablation_units: int = value("units ablated")
    ablation_images: int | None = value("images each ablation ran on", optional=True)
    ablation_gradient: np.ndarray = array("unit", doc="mean |dL/dgate| of each ablated unit")
    ablation_delta: np.ndarray = array("unit", doc="mean |change of L| when it is removed")


@dataclass(frozen=True, kw_only=True, eq=False)
class ImportanceResult(AnalysisResult):
    """Per layer, its units' importance; per unit kind (``heads``,
    ``channels``) the ablation check."""

    analyzer: ClassVar[str] = "importance"
    layers: Mapping[str, ImportanceLayer] = field(default_factory=dict)
    summary: Mapping[str, AblationCheck] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, eq=False)
class PruningKind(Record):
    """The pruning curve of one unit kind."""

    fractions: np.ndarray = array("step", doc="fraction of the units removed")
    agreement: np.ndarray = array("step", doc="top-1 agreement with the unpruned model")
    kl: np.ndarray = array("step", doc="mean KL(full || pruned) over images")
    units: int = value("units of the kind in the model")
    prunable_fraction: float = value(
        "largest fraction removed before agreement first falls below the threshold"
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class PruningCurveResult(AnalysisResult):
    """Per unit kind (``heads``, ``channels``) the curve; no
    per-layer records."""

    analyzer: ClassVar[str] = "pruning_curve"
    summary: Mapping[str, PruningKind] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """The least top-1 agreement ``prunable_fraction`` accepts (a parameter)."""
        return float(self.params["threshold"])


@REGISTRY.register
class ReceptiveField:
    """Gradient ERF per layer: mean distance (comparable with MAD), 50 % / 90 % radii in
    input pixels, RepLKNet area ratios, and the averaged map."""

    name: ClassVar[str] = "receptive_field"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"erf"})
    result: ClassVar[type[ErfResult]] = ErfResult

    def __init__(self, thresholds: tuple[float, ...] = REPLKNET_THRESHOLDS) -> None:
        self.thresholds = thresholds

    def params(self) -> dict[str, Any]:
        return {
            "gradient": "|ds/dx| summed over colour channels, mean over images",
            "s": "sum over channels of the output at the centre position",
            "replknet_thresholds": list(self.thresholds),
            "replknet_note": "on |gradient| (RepLKNet uses ReLU'd gradients); resolution-dependent",
        }

    def compute(self, inputs: AnalysisInputs) -> ErfResult:
        layers: dict[str, ErfLayer] = {}
        notes: dict[str, str] = {}
        for name, erf in inputs.erf.items():
            if erf.map is None or erf.centre is None:
                notes[name] = erf.reason or "not measured"
                continue
            erf_map, centre = np.asarray(erf.map), tuple(erf.centre)
            if not np.isfinite(erf_map).all() or erf_map.sum() <= 0:
                notes[name] = "the gradient map is zero or not finite"
                continue
            ratios = replknet_area_ratios(erf_map, self.thresholds)
            layers[name] = ErfLayer(
                mean_distance=erf_mean_distance(erf_map, centre),
                radius_50=erf_radius(erf_map, centre, 0.5),
                radius_90=erf_radius(erf_map, centre, 0.9),
                area_ratio=np.array([np.nan if r is None else r[1] for r in ratios.values()]),
                map=erf_map.astype(np.float32),
                centre=(float(centre[0]), float(centre[1])),
                branch=erf.branch,
                position=erf.position,
            )
        return ErfResult(version=self.version, params=self.params(), layers=layers, notes=notes)


@REGISTRY.register
class Importance:
    """Gate-gradient importance of heads and channels, one normalisation for both: per
    layer by its L2 norm, then min–max over the model; raw values kept. Validated by
    Spearman rank correlation against true single-unit ablation on a sample of units."""

    name: ClassVar[str] = "importance"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"gates"})
    result: ClassVar[type[ImportanceResult]] = ImportanceResult

    def params(self) -> dict[str, Any]:
        return {"loss": "cross-entropy of the model's top-1 (or the label)", "gate": "per unit"}

    def compute(self, inputs: AnalysisInputs) -> ImportanceResult:
        layers: dict[str, ImportanceLayer] = {}
        summary: dict[str, AblationCheck] = {}
        notes: dict[str, str] = {}
        for kind, data in inputs.gates.items():
            raw = {p: np.asarray(g).mean(0) for p, g in data.raw.items()}
            for path in [p for p, values in raw.items() if not np.isfinite(values).all()]:
                notes[path] = "not measured: NaN or inf in its gate gradients"
                del raw[path]
            if not raw:
                continue
            normalised = normalise_importance(list(raw.values()))
            for (path, values), norm in zip(raw.items(), normalised, strict=True):
                layers[path] = ImportanceLayer(kind=kind, raw=values, normalised=norm)
            ablation = data.ablation
            gradient = np.asarray(ablation.gradient if ablation else [])
            delta = np.asarray(ablation.delta if ablation else [])
            finite = bool(np.isfinite(gradient).all() and np.isfinite(delta).all())
            summary[kind] = AblationCheck(
                spearman_vs_ablation=(
                    spearman(gradient, delta) if gradient.size > 2 and finite else np.nan
                ),
                ablation_units=int(gradient.size),
                ablation_images=int(ablation.images if ablation else 0),
                ablation_gradient=gradient,
                ablation_delta=delta,
            )
        return ImportanceResult(
            version=self.version, params=self.params(), layers=layers, summary=summary, notes=notes
        )


@REGISTRY.register
class PruningCurve:
    """Top-1 agreement and KL(full ‖ pruned) as units are removed in increasing order of
    importance (10 % steps), and the largest fraction removable at ≥ 99 % agreement."""

    name: ClassVar[str] = "pruning_curve"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"gates", "pruning"})
    requires: ClassVar[frozenset[str]] = frozenset({"importance"})  # ranks by its scores
    result: ClassVar[type[PruningCurveResult]] = PruningCurveResult

    def __init__(self, threshold: float = 0.99) -> None:
        self.threshold = threshold

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "order": "increasing normalised importance"}

    def compute(self, inputs: AnalysisInputs) -> PruningCurveResult:
        summary: dict[str, PruningKind] = {}
        for kind, curve in inputs.pruning.items():
            fractions = np.asarray(curve.fractions)
            agreement = np.asarray(curve.agreement)
            summary[kind] = PruningKind(
                fractions=fractions,
                agreement=agreement,
                kl=np.asarray(curve.kl),
                units=int(curve.units),
                prunable_fraction=largest_prunable_fraction(fractions, agreement, self.threshold),
            )
        return PruningCurveResult(version=self.version, params=self.params(), summary=summary)
