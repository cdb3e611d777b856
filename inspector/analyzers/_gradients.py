"""Analyzers of the gradient and ablation passes: ERF, importance, pruning (METRICS.md §3, §5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ._erf import (
    REPLKNET_THRESHOLDS,
    degenerate_erf,
    erf_mean_distance,
    erf_radius,
    radius_intervals,
    replknet_area_ratios,
)
from ._importance import (
    largest_prunable_fraction,
    normalise_importance,
    prunable_with_interval,
    spearman,
    spearman_interval,
    wilson_interval,
)
from ._intervals import IntervalSpec, bootstrap
from ._record import AnalysisResult, Record, array, pair, value
from ._registry import REGISTRY, AnalysisInputs

__all__ = [
    "AblationCheck",
    "ErfLayer",
    "ErfResult",
    "ErfSummary",
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
    mean_distance_low: float | None = value(
        "95 % percentile-bootstrap interval of mean_distance over images: low", optional=True
    )
    mean_distance_high: float | None = value("the same: high", optional=True)
    images: int | None = value("images the map averages", optional=True)
    theoretical_rf: float | None = value(
        "side in input pixels of the region that can influence the centre unit at all, "
        "from the traced kernel/stride/dilation/padding arithmetic (inf: unbounded, after "
        "global attention or pooling; NaN: not traceable)",
        optional=True,
    )
    area_ratio_saturated: np.ndarray | None = array(
        "threshold", dtype="bool", doc="the area ratio's square is the largest the RepLKNet "
        "search tests (or none is enough): the ratio is a floor", optional=True
    )  # fmt: skip
    radius_50_low: float | None = value(
        "95 % percentile-bootstrap interval of radius_50 over images: low", optional=True
    )
    radius_50_high: float | None = value("the same: high", optional=True)
    radius_90_low: float | None = value(
        "95 % percentile-bootstrap interval of radius_90 over images: low", optional=True
    )
    radius_90_high: float | None = value("the same: high", optional=True)


@dataclass(frozen=True, kw_only=True, eq=False)
class ErfSummary(Record):
    """Model-level reading of the ERF series (METRICS.md §3, degenerate ERFs)."""

    degenerate: bool = value("ERF flat across depth while the theoretical RF grows")
    reason: str = value("why it is (or is not) judged degenerate")
    images: int = value("images of the ERF pass")


@dataclass(frozen=True, kw_only=True, eq=False)
class ErfResult(AnalysisResult):
    """Per ERF layer, its map and summaries; skipped layers get a
    note; under ``summary/model`` the degenerate-ERF check."""

    analyzer: ClassVar[str] = "receptive_field"
    layers: Mapping[str, ErfLayer] = field(default_factory=dict)
    summary: Mapping[str, ErfSummary] = field(default_factory=dict)


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
    spearman_low: float | None = value(
        "95 % percentile-bootstrap interval of spearman_vs_ablation over the ablation "
        "images (units fixed): low",
        optional=True,
    )
    spearman_high: float | None = value("the same: high", optional=True)


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
        "largest fraction removed before the agreement interval's lower bound first falls "
        "below the threshold (held-out images)"
    )
    agreement_low: np.ndarray | None = array(
        "step", doc="95 % Wilson interval of agreement: low", optional=True
    )
    agreement_high: np.ndarray | None = array("step", doc="the same: high", optional=True)
    point_prunable_fraction: float | None = value(
        "the same read off the point estimate of agreement (no interval)", optional=True
    )
    accuracy: np.ndarray | None = array(
        "step", doc="top-1 accuracy on the labelled held-out images", optional=True
    )
    images: int | None = value("held-out images the curve is measured on", optional=True)
    labelled: int | None = value("of them with a label (accuracy)", optional=True)
    importance_images: int | None = value(
        "images the importance order was estimated on (disjoint from the held-out ones)",
        optional=True,
    )
    accuracy_low: np.ndarray | None = array(
        "step",
        doc="95 % Wilson interval of accuracy over the labelled held-out images: low",
        optional=True,
    )
    accuracy_high: np.ndarray | None = array("step", doc="the same: high", optional=True)


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


def _distance_interval(
    weighted: np.ndarray, mass: np.ndarray, spec: IntervalSpec
) -> tuple[float, float]:
    """Bootstrap over images of ``Σ weighted / Σ mass`` (the mean map's mean distance)."""

    def ratio(index: np.ndarray) -> np.ndarray:
        total = mass[index].sum()
        return np.asarray(weighted[index].sum() / total if total > 0 else np.nan)

    low, high = bootstrap(weighted.size, ratio, spec)
    return float(low), float(high)


@REGISTRY.register
class ReceptiveField:
    """Gradient ERF per layer: mean distance (comparable with ``MAD_centre``, with its
    bootstrap interval over images), 50 % / 90 % radii in input pixels, the theoretical
    receptive field, RepLKNet area ratios (their protocol's map where measured, squares
    centred on the unit), the averaged map; and a degenerate-ERF check."""

    name: ClassVar[str] = "receptive_field"
    version: ClassVar[str] = "2"
    needs: ClassVar[frozenset[str]] = frozenset({"erf"})
    result: ClassVar[type[ErfResult]] = ErfResult

    def __init__(
        self,
        thresholds: tuple[float, ...] = REPLKNET_THRESHOLDS,
        interval: IntervalSpec | None = None,
    ) -> None:
        self.thresholds = thresholds
        self.interval = interval or IntervalSpec()

    def params(self) -> dict[str, Any]:
        return {
            "gradient": "|ds/dx| summed over colour channels, mean over images",
            "s": "sum over channels of the output at the centre position",
            "replknet_thresholds": list(self.thresholds),
            "replknet_note": (
                "RepLKNet protocol where measured (ReLU on the centre activations and on the "
                "gradient of the normalised image, mean over images, A = log10(M + 1) / max; "
                "squares centred on the unit's pixel); the ratios depend on the input "
                "resolution (published numbers are at 1024 px) and on the map's absolute scale"
            ),
            "interval": {
                "level": self.interval.level,
                "resamples": self.interval.resamples,
                "seed": self.interval.seed,
                "method": self.interval.method,
                "of": ["mean_distance", "radius_50", "radius_90"],
                "radii": "from radial mass profiles per image, past 32 images per image "
                "group (image i in group i mod 32), the groups resampled",
            },
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
            protocol = erf.replknet_map
            usable = (
                protocol is not None
                and np.isfinite(protocol).all()
                and np.log10(np.asarray(protocol) + 1).max() > 0
            )
            ratios = replknet_area_ratios(
                np.asarray(protocol) if usable else erf_map, self.thresholds, centre
            )
            low = high = None
            images = None
            if erf.weighted is not None and erf.mass is not None:
                weighted, mass = np.asarray(erf.weighted), np.asarray(erf.mass)
                images = int(weighted.size)
                low, high = _distance_interval(weighted, mass, self.interval)
            r50: tuple[float | None, float | None] = (None, None)
            r90: tuple[float | None, float | None] = (None, None)
            if erf.profile is not None and erf.radii is not None:
                r50, r90 = radius_intervals(erf.profile, erf.radii, (0.5, 0.9), self.interval)
            layers[name] = ErfLayer(
                mean_distance=erf_mean_distance(erf_map, centre),
                radius_50=erf_radius(erf_map, centre, 0.5),
                radius_90=erf_radius(erf_map, centre, 0.9),
                area_ratio=np.array([np.nan if r is None else r[1] for r in ratios.values()]),
                map=erf_map.astype(np.float32),
                centre=(float(centre[0]), float(centre[1])),
                branch=erf.branch,
                position=erf.position,
                mean_distance_low=low,
                mean_distance_high=high,
                images=images,
                theoretical_rf=float(erf.theoretical_rf),
                area_ratio_saturated=np.array([r is None or r[2] for r in ratios.values()]),
                radius_50_low=r50[0],
                radius_50_high=r50[1],
                radius_90_low=r90[0],
                radius_90_high=r90[1],
            )
        series = [v for v in layers.values() if v.branch in ("block", "conv")]
        summary: dict[str, ErfSummary] = {}
        if series:
            reason = degenerate_erf(
                [v.mean_distance for v in series],
                [np.nan if v.theoretical_rf is None else v.theoretical_rf for v in series],
            )
            summary["model"] = ErfSummary(
                degenerate=reason is not None,
                reason=reason
                or "the ERF grows with the theoretical receptive field "
                "(or the theoretical RF does not grow)",
                images=max((v.images or 0) for v in series),
            )
        return ErfResult(
            version=self.version, params=self.params(), layers=layers, summary=summary, notes=notes
        )


@REGISTRY.register
class Importance:
    """Gate-gradient importance of heads and channels, one normalisation for both: per
    layer by its L2 norm, then min–max over the model; raw values kept. Validated by
    Spearman rank correlation against true single-unit ablation on a sample of units."""

    name: ClassVar[str] = "importance"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"gates"})
    result: ClassVar[type[ImportanceResult]] = ImportanceResult

    def __init__(self, interval: IntervalSpec | None = None) -> None:
        self.interval = interval or IntervalSpec()

    def params(self) -> dict[str, Any]:
        return {
            "loss": "cross-entropy of the model's top-1 (or the label)",
            "gate": "per unit",
            "interval": {
                "level": self.interval.level,
                "resamples": self.interval.resamples,
                "seed": self.interval.seed,
                "method": "percentile bootstrap over the ablation images (units fixed)",
                "of": "spearman_vs_ablation",
            },
        }

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
            low = high = None
            per_image = (
                None if ablation is None else (ablation.gradient_images, ablation.delta_images)
            )
            if finite and gradient.size > 2 and per_image and all(a is not None for a in per_image):
                low, high = spearman_interval(*per_image, self.interval)
            summary[kind] = AblationCheck(
                spearman_vs_ablation=(
                    spearman(gradient, delta) if gradient.size > 2 and finite else np.nan
                ),
                ablation_units=int(gradient.size),
                ablation_images=int(ablation.images if ablation else 0),
                ablation_gradient=gradient,
                ablation_delta=delta,
                spearman_low=low,
                spearman_high=high,
            )
        return ImportanceResult(
            version=self.version, params=self.params(), layers=layers, summary=summary, notes=notes
        )


ORDERS = ("normalised", "raw")
"""Pruning orders: increasing per-layer-L2-normalised importance, or raw ``|∂L/∂ξ|``."""


@REGISTRY.register
class PruningCurve:
    """Top-1 agreement (with its Wilson interval) and KL(full ‖ pruned) on held-out images
    as units are removed in increasing order of importance (10 % steps); the largest
    fraction whose agreement lower bound clears the threshold."""

    name: ClassVar[str] = "pruning_curve"
    version: ClassVar[str] = "2"
    needs: ClassVar[frozenset[str]] = frozenset({"gates", "pruning"})
    requires: ClassVar[frozenset[str]] = frozenset({"importance"})  # ranks by its scores
    result: ClassVar[type[PruningCurveResult]] = PruningCurveResult

    def __init__(
        self, threshold: float = 0.99, order: str = "raw", level: float = IntervalSpec().level
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"pruning threshold {threshold} must be in (0, 1]")
        if order not in ORDERS:
            raise ValueError(f"pruning order {order!r} is not one of {', '.join(ORDERS)}")
        self.threshold, self.order, self.level = threshold, order, level

    def params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "order": f"increasing {self.order} importance",
            "interval": f"Wilson score, {self.level:.0%}, over held-out images (agreement; "
            "accuracy over the labelled ones)",
            "split": "importance on the first images, the curve on the held-out rest",
        }

    def compute(self, inputs: AnalysisInputs) -> PruningCurveResult:
        summary: dict[str, PruningKind] = {}
        for kind, curve in inputs.pruning.items():
            fractions = np.asarray(curve.fractions)
            agreement = np.asarray(curve.agreement)
            low = high = None
            prunable = largest_prunable_fraction(fractions, agreement, self.threshold)
            point = prunable
            if curve.images:
                low, high = wilson_interval(np.round(agreement * curve.images), curve.images)
                prunable = prunable_with_interval(fractions, low, self.threshold)
            accuracy = None if curve.accuracy is None else np.asarray(curve.accuracy)
            acc_low = acc_high = None
            if accuracy is not None and curve.labelled:
                acc_low, acc_high = wilson_interval(
                    np.round(accuracy * curve.labelled), curve.labelled
                )
            summary[kind] = PruningKind(
                fractions=fractions,
                agreement=agreement,
                kl=np.asarray(curve.kl),
                units=int(curve.units),
                prunable_fraction=prunable,
                agreement_low=low,
                agreement_high=high,
                point_prunable_fraction=point,
                accuracy=accuracy,
                images=int(curve.images) or None,
                labelled=int(curve.labelled) if curve.accuracy is not None else None,
                importance_images=int(curve.importance_images) or None,
                accuracy_low=acc_low,
                accuracy_high=acc_high,
            )
        return PruningCurveResult(version=self.version, params=self.params(), summary=summary)
