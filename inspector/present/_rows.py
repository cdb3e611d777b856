"""What the report and the terminal share: a run's typed results, per-layer rows, and the
wording of numbers that come from parameters."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..analyzers import (
    AnalysisResult,
    ChannelRedundancyResult,
    DistanceResult,
    EntropyResult,
    EquivarianceResult,
    ErfResult,
    HeadRedundancyResult,
    ImportanceResult,
    InputDependenceResult,
    PruningCurveResult,
)
from ..store import Run

__all__ = [
    "LayerRow",
    "RunResults",
    "agreement_text",
    "failed_analyses",
    "images_text",
    "in_model_order",
    "interval_text",
    "layer_rows",
    "pass_counts",
    "precision",
]


def failed_analyses(run: Run) -> dict[str, str]:
    """Analyses that failed in the run (name -> reason; root attribute ``failed_analyses``,
    a JSON object); the others were written."""
    failed = run.meta.get("failed_analyses")
    if isinstance(failed, str):
        try:
            failed = json.loads(failed)
        except ValueError:
            return {"?": failed}
    return {str(k): str(v) for k, v in failed.items()} if isinstance(failed, dict) else {}


R = TypeVar("R", bound=AnalysisResult)


def _optional(run: Run, result_type: type[R]) -> R | None:
    """The run's result of ``result_type``'s analyzer, or ``None`` when it did not run."""
    if result_type.analyzer not in run.analysis:
        return None
    result = run.result(result_type.analyzer)
    if not isinstance(result, result_type):
        raise TypeError(f"{result_type.analyzer} gave a {type(result).__name__}")
    return result


@dataclass(frozen=True)
class RunResults:
    """The typed results a run holds; ``None`` for an analysis that did not run."""

    distance: DistanceResult | None
    entropy: EntropyResult | None
    erf: ErfResult | None
    heads: HeadRedundancyResult | None
    channels: ChannelRedundancyResult | None
    importance: ImportanceResult | None
    pruning: PruningCurveResult | None
    dependence: InputDependenceResult | None = None
    equivariance: EquivarianceResult | None = None

    @classmethod
    def of(cls, run: Run) -> RunResults:
        return cls(
            distance=_optional(run, DistanceResult),
            entropy=_optional(run, EntropyResult),
            erf=_optional(run, ErfResult),
            heads=_optional(run, HeadRedundancyResult),
            channels=_optional(run, ChannelRedundancyResult),
            importance=_optional(run, ImportanceResult),
            pruning=_optional(run, PruningCurveResult),
            dependence=_optional(run, InputDependenceResult),
            equivariance=_optional(run, EquivarianceResult),
        )


def agreement_text(threshold: float) -> str:
    """A top-1 agreement threshold as the report and the terminal write it (``99 %``)."""
    return f"{threshold * 100:.3g} %"


def precision(low: float, high: float, most: int = 4) -> int:
    """Decimals an interval supports: one significant digit of its half-width."""
    half = (high - low) / 2
    if not (math.isfinite(half) and half > 0):
        return most
    return int(min(most, max(0, -math.floor(math.log10(half)))))


def interval_text(value: float, low: float, high: float) -> str:
    """``0.48 [0.43, 0.49]`` with the precision the interval supports; the value alone
    (two decimals) without an interval."""
    if value is None or not math.isfinite(value):
        return "-"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.2f}"
    digits = precision(low, high)
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def in_model_order(run: Run, layers: dict[str, Any]) -> dict[str, Any]:
    """``layers`` in the model's module order (names it does not list last, by name)."""
    order = {n: i for i, n in enumerate(run.meta.get("module_order", []))}
    return dict(sorted(layers.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-layer table (terminal and report).

    Attributes:
        layer: Module path.
        kind: ``attention``, ``channel``, or the ERF branch of an ERF-only layer.
        units: Heads or channels, as text (empty for ERF-only layers).
        distance: Mean over heads of the mean attention distance (px); NaN if none.
        distance_min: Its smallest head.
        distance_max: Its largest head.
        erf_distance: ERF mean distance (px).
        erf_radius_50: ERF radius holding 50 % of the mass (px).
        redundancy: Head or channel redundancy (``1 − effective / units``).
        centre: Mean over heads of ``MAD_centre`` (px); NaN if none.
        centre_low: Mean over heads of its interval's low end.
        centre_high: The same, high end.
        erf_low: ERF mean distance interval, low end (NaN if not measured).
        erf_high: Its high end.
        theoretical_rf: Theoretical receptive field side (px; inf unbounded).
        erf_radius_90: ERF radius holding 90 % of the mass (px).
        r50_low: ``erf_radius_50``'s bootstrap interval, low end (NaN if not measured).
        r50_high: Its high end.
        r90_low: ``erf_radius_90``'s interval, low end.
        r90_high: Its high end.
        redundancy: Like-for-like redundancy (``1 − effective / units``): debiased CKA
            between heads, or between channel groups of head width (METRICS.md §4).
        redundancy_low: Its 95 % interval, low end (NaN without one).
        redundancy_high: Its high end.
        correlation_redundancy: Channels only: from |Pearson r| between single channels
            (secondary, depends on the channel count).
        correlation_low: Its 95 % interval, low end (NaN without one).
        correlation_high: Its high end.
        rows: Rows the layer's statistics were estimated from (0 when unknown).
        sample_limited: Rows < 5 × the layer's width.
    """

    layer: str
    kind: str
    units: str
    distance: float
    distance_min: float
    distance_max: float
    erf_distance: float
    erf_radius_50: float
    redundancy: float
    centre: float = math.nan
    centre_low: float = math.nan
    centre_high: float = math.nan
    erf_low: float = math.nan
    erf_high: float = math.nan
    theoretical_rf: float = math.nan
    erf_radius_90: float = math.nan
    r50_low: float = math.nan
    r50_high: float = math.nan
    r90_low: float = math.nan
    r90_high: float = math.nan
    redundancy_low: float = math.nan
    redundancy_high: float = math.nan
    correlation_redundancy: float = math.nan
    correlation_low: float = math.nan
    correlation_high: float = math.nan
    rows: int = 0
    sample_limited: bool = False


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _centre(layer: Any) -> dict[str, float]:
    """Mean over heads of ``MAD_centre`` and of its interval's ends (NaN when absent)."""
    if layer is None or layer.centre_mean is None:
        return {}
    out = {}
    for key, values in (
        ("centre", layer.centre_mean),
        ("centre_low", layer.centre_low),
        ("centre_high", layer.centre_high),
    ):
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        out[key] = float(finite.mean()) if finite.size else math.nan
    return out


def pass_counts(results: RunResults) -> list[str]:
    """How many images each gradient pass used, as the terminal and report state it."""
    lines = []
    if results.erf is not None:
        images = {v.images for v in results.erf.layers.values() if v.images}
        if images:
            lines.append(f"ERF pass: {images_text(max(images))}")
    if results.pruning is not None:
        for kind, curve in results.pruning.summary.items():
            if curve.images:
                lines.append(
                    f"{kind} pruning: importance on {images_text(curve.importance_images)}, "
                    f"curve on {images_text(curve.images, 'held-out ')}"
                )
    return lines


def layer_rows(run: Run, results: RunResults | None = None) -> list[LayerRow]:
    """One row per captured or ERF layer, in model order: distance, ERF, redundancy."""
    results = RunResults.of(run) if results is None else results
    distance = results.distance.layers if results.distance else {}
    erf = results.erf.layers if results.erf else {}
    heads = results.heads.layers if results.heads else {}
    channels = results.channels.layers if results.channels else {}
    names = list(run.layers)
    names += [n for n in erf if n not in run.layers]
    # Interleave ERF-only layers (blocks) with captured ones, in the model's own order.
    order = {n: i for i, n in enumerate(run.meta.get("module_order", []))}
    names.sort(key=lambda n: order.get(n, len(order)))
    rows = []
    nan = math.nan
    for name in names:
        layer = run.layers.get(name)
        mean = np.asarray(distance[name].mean if name in distance else [nan], dtype=float)
        measured = bool(np.isfinite(mean).any())
        receptive = erf.get(name)
        channel = channels.get(name)
        redundancy = heads.get(name) or (channel.grouped if channel is not None else None)
        source = heads.get(name) or channel
        if layer is not None:
            kind = layer.kind
            units = str(layer.attrs.get("heads") or layer.attrs.get("channels"))
        else:
            kind, units = (receptive.branch if receptive else "erf"), ""
        rows.append(
            LayerRow(
                layer=name,
                kind=kind,
                units=units,
                distance=float(np.nanmean(mean)) if measured else nan,
                distance_min=float(np.nanmin(mean)) if measured else nan,
                distance_max=float(np.nanmax(mean)) if measured else nan,
                erf_distance=receptive.mean_distance if receptive else nan,
                erf_radius_50=receptive.radius_50 if receptive else nan,
                redundancy=redundancy.redundancy if redundancy else nan,
                **_centre(distance.get(name)),
                erf_low=_or_nan(receptive.mean_distance_low if receptive else None),
                erf_high=_or_nan(receptive.mean_distance_high if receptive else None),
                theoretical_rf=_or_nan(receptive.theoretical_rf if receptive else None),
                redundancy_low=_get(redundancy, "redundancy_low"),
                redundancy_high=_get(redundancy, "redundancy_high"),
                correlation_redundancy=channel.redundancy if channel is not None else nan,
                correlation_low=_get(channel, "redundancy_low"),
                correlation_high=_get(channel, "redundancy_high"),
                rows=int(getattr(source, "rows", None) or 0),
                sample_limited=bool(getattr(source, "sample_limited", None) or False),
                erf_radius_90=receptive.radius_90 if receptive else nan,
                r50_low=_or_nan(receptive.radius_50_low if receptive else None),
                r50_high=_or_nan(receptive.radius_50_high if receptive else None),
                r90_low=_or_nan(receptive.radius_90_low if receptive else None),
                r90_high=_or_nan(receptive.radius_90_high if receptive else None),
            )
        )
    return rows


def _get(stats: Any, key: str) -> float:
    found = None if stats is None else getattr(stats, key, None)
    return math.nan if found is None else float(found)


def images_text(n: int, what: str = "") -> str:
    """``1 image``, ``4 held-out images``."""
    return f"{n} {what}image{'' if n == 1 else 's'}"
