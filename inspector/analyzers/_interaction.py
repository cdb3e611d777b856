"""Analyzers of the seed's other two claims: fixed vs dynamic interaction (input
dependence, METRICS.md §8) and translation equivariance (METRICS.md §9)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from ._dynamics import (
    equivariance_cosine,
    input_dependence,
    map_entropy,
    normalised_input_dependence,
)
from ._intervals import LEVEL, IntervalSpec, bootstrap_mean
from ._record import AnalysisResult, Record, array, value
from ._registry import REGISTRY, AnalysisInputs, EquivarianceInput, MeanMapInput

__all__ = [
    "EquivarianceLayer",
    "EquivarianceResult",
    "InputDependence",
    "InputDependenceLayer",
    "InputDependenceResult",
    "TranslationEquivariance",
]


@dataclass(frozen=True, kw_only=True, eq=False)
class InputDependenceLayer(Record):
    """Input dependence of one layer (METRICS.md §8): per head from its attention maps,
    and of the layer's output from its per-image ERF maps (one query: the centre unit)."""

    heads: np.ndarray | None = array(
        "head", doc="D per head in nats (attention maps over spatial keys)", optional=True
    )
    heads_low: np.ndarray | None = array(
        "head", doc="95 % interval, low end (jackknife over contiguous image groups)", optional=True
    )
    heads_high: np.ndarray | None = array("head", doc="95 % interval, high end", optional=True)
    heads_normalised: np.ndarray | None = array(
        "head", doc="D / ln(min(images, spatial keys)), in [0, 1]", optional=True
    )
    head_images: int | None = value("images of the attention maps", optional=True)
    head_keys: int | None = value("spatial keys of one attention row", optional=True)
    head_groups: int | None = value("image groups resampled for the interval", optional=True)
    erf: float | None = value("D of the per-image ERF maps in nats", optional=True)
    erf_low: float | None = value("95 % interval, low end (jackknife over images)", optional=True)
    erf_high: float | None = value("95 % interval, high end", optional=True)
    erf_normalised: float | None = value("D / ln(min(images, pixels)), in [0, 1]", optional=True)
    erf_images: int | None = value("images of the ERF maps", optional=True)
    branch: str = value("ERF branch (block, attention, conv) or empty")


@dataclass(frozen=True, kw_only=True, eq=False)
class InputDependenceResult(AnalysisResult):
    """Per layer, how much its interaction pattern changes with the input."""

    analyzer: ClassVar[str] = "input_dependence"
    layers: Mapping[str, InputDependenceLayer] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, eq=False)
class EquivarianceLayer(Record):
    """Translation equivariance of one layer's output (METRICS.md §9)."""

    equivariance: float = value("E: mean over images of cos(y(roll_t x), roll_{t/s} y(x)), t = s")
    low: float = value("95 % interval, low end (bootstrap over images)")
    high: float = value("95 % interval, high end")
    sub: float = value("E for the sub-stride shift t = s/2 (NaN for stride 1)")
    sub_low: float = value("its 95 % interval, low end")
    sub_high: float = value("its 95 % interval, high end")
    unaligned: float = value(
        "reference: cos(y(roll_t x), y(x)) without rolling the output back (t = s)"
    )
    stride: float = value("input pixels per output cell")
    shift: int = value("pixels rolled for E (a multiple of the stride)")
    sub_shift: int = value("pixels rolled for the sub-stride E (0: not measured)")
    margin: int = value("cells left out along each border")
    margin_source: str = value("how the margin was found")
    cells: int = value("cells compared per image")
    images: int = value("images averaged")


@dataclass(frozen=True, kw_only=True, eq=False)
class EquivarianceResult(AnalysisResult):
    """Per layer with a spatial output, its translation equivariance."""

    analyzer: ClassVar[str] = "translation_equivariance"
    layers: Mapping[str, EquivarianceLayer] = field(default_factory=dict)


def jackknife(
    point: np.ndarray, leave_out: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Delete-a-group jackknife interval (METRICS.md §7): ``point ± z · se`` (low end at
    least 0) with
    ``se² = (G − 1) / G · Σ_g (θ_(−g) − mean θ_(−·))²``.

    Args:
        point: The estimate on every group.
        leave_out: ``[group, ...]`` the estimate without each group.
    """
    g = leave_out.shape[0]
    if g < 2:
        return point * np.nan, point * np.nan
    spread = leave_out - leave_out.mean(0)
    se = np.sqrt((g - 1) / g * (spread**2).sum(0))
    z = float(NormalDist().inv_cdf(0.5 + level / 2))
    # D is a divergence (never negative): the normal interval is cut at 0.
    return np.maximum(point - z * se, 0.0), point + z * se


def _group_dependence(sums: MeanMapInput, level: float) -> dict[str, Any]:
    """Per-head D from group sums, with a delete-a-group jackknife interval."""
    used = sums.counts > 0
    maps, entropy, counts = sums.maps[used], sums.entropy[used], sums.counts[used]
    n = int(counts.sum())
    # [group, window, head, query, key] -> [group, head, window * query, key]
    g, w, h, q, k = maps.shape
    maps = maps.transpose(0, 2, 1, 3, 4).reshape(g, h, w * q, k)
    total_map, total_entropy = maps.sum(0), entropy.sum(0)

    def heads(map_sum: np.ndarray, entropy_sum: np.ndarray, images: float) -> np.ndarray:
        # Mean over the queries with a map (padded window slots have none).
        alive = map_sum.sum(-1) > 0
        mean_map = np.where(alive, map_entropy(map_sum / images), 0.0).sum(-1)
        return mean_map / np.maximum(alive.sum(-1), 1) - entropy_sum / images

    point = heads(total_map, total_entropy, n)
    leave_out = (
        np.stack(
            [
                heads(total_map - maps[i], total_entropy - entropy[i], n - counts[i])
                for i in range(g)
            ]
        )
        if g > 1
        else np.zeros((0, h))
    )
    low, high = jackknife(point, leave_out, level)
    return {
        "heads": point,
        "heads_low": low,
        "heads_high": high,
        "heads_normalised": normalised_input_dependence(point, n, k),
        "head_images": n,
        "head_keys": int(k),
        "head_groups": int(g),
    }


def _erf_dependence(per_image: np.ndarray, level: float) -> dict[str, Any]:
    flat = np.asarray(per_image, dtype=np.float64).reshape(len(per_image), -1)
    n = len(flat)
    point = input_dependence(flat)  # checks the maps
    flat = flat[:, flat.sum(0) > 0]  # pixels outside every map add nothing
    rows = flat / flat.sum(1, keepdims=True)
    entropy = map_entropy(rows)
    total, total_entropy = rows.sum(0), entropy.sum()
    leave_out = (
        np.array(
            [
                map_entropy((total - rows[i]) / (n - 1)) - (total_entropy - entropy[i]) / (n - 1)
                for i in range(n)
            ]
        )
        if n > 1
        else np.zeros(0)
    )
    low, high = jackknife(np.asarray(point), leave_out, level)
    return {
        "erf": point,
        "erf_low": float(low),
        "erf_high": float(high),
        "erf_normalised": float(normalised_input_dependence(point, n, per_image[0].size)),
        "erf_images": n,
    }


@REGISTRY.register
class InputDependence:
    """Per head and per conv/block output, input dependence ``D`` in nats (METRICS.md §8):
    the generalised Jensen–Shannon divergence among the images' interaction maps.

    Heads: streamed from the running sums of their spatial attention maps and per-image
    entropies, in the capture's contiguous image groups (interval: delete-a-group
    jackknife over the groups). Layers with an ERF map: from the per-image ERF maps of
    the centre unit (interval: delete-one jackknife over images). ``D`` grows with the
    image count (plug-in): compare units at equal ``n``.
    """

    name: ClassVar[str] = "input_dependence"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"mean_maps", "erf"})
    result: ClassVar[type[InputDependenceResult]] = InputDependenceResult

    def __init__(self, level: float = LEVEL) -> None:
        if not 0 < level < 1:
            raise ValueError(f"interval level must be in (0, 1), got {level}")
        self.level = level

    def params(self) -> dict[str, Any]:
        return {
            "log": "natural",
            "keys": "spatial, renormalised",
            "erf_query": "centre unit",
            "interval": {
                "level": self.level,
                "method": "delete-a-group jackknife, normal: over contiguous image groups "
                "(heads), over images (ERF maps)",
            },
        }

    def compute(self, inputs: AnalysisInputs) -> InputDependenceResult:
        found: dict[str, dict[str, Any]] = {}
        notes: dict[str, str] = {}
        for name, sums in inputs.mean_maps.items():
            if sums.reason or not (sums.counts > 0).any():
                notes[name] = f"heads not measured: {sums.reason or 'no images'}"
                continue
            found.setdefault(name, {}).update(_group_dependence(sums, self.level))
        for name, erf in inputs.erf.items():
            if erf.per_image is None or len(erf.per_image) == 0:
                if erf.reason and name not in found:
                    notes.setdefault(name, f"ERF not measured: {erf.reason}")
                continue
            if not (np.asarray(erf.per_image).reshape(len(erf.per_image), -1).sum(1) > 0).all():
                notes[name] = "ERF not measured: an image's ERF map has no mass"
                continue
            found.setdefault(name, {}).update(_erf_dependence(erf.per_image, self.level))
            found[name]["branch"] = erf.branch
        order = [*inputs.layers, *inputs.erf]
        rank = {n: i for i, n in reversed(list(enumerate(order)))}
        layers = {
            name: InputDependenceLayer(**{"branch": "", **found[name]})
            for name in sorted(found, key=lambda n: rank.get(n, len(rank)))
        }
        return InputDependenceResult(
            version=self.version, params=self.params(), layers=layers, notes=notes
        )


def _interval(values: np.ndarray, spec: IntervalSpec) -> tuple[float, float, float]:
    if values.size == 0 or np.isnan(values).all():
        return math.nan, math.nan, math.nan
    low, high = bootstrap_mean(values, spec)
    return float(np.nanmean(values)), float(low), float(high)


@REGISTRY.register
class TranslationEquivariance:
    """Per layer with a spatial output, ``E`` for a stride-multiple shift and a sub-stride
    shift (METRICS.md §9): the cosine between the output on rolled images and the rolled
    output, over cells away from the border, mean over images with a bootstrap interval.
    """

    name: ClassVar[str] = "translation_equivariance"
    version: ClassVar[str] = "1"
    needs: ClassVar[frozenset[str]] = frozenset({"erf", "equivariance"})
    result: ClassVar[type[EquivarianceResult]] = EquivarianceResult

    def __init__(self, interval: IntervalSpec | None = None) -> None:
        self.interval = interval or IntervalSpec()

    def params(self) -> dict[str, Any]:
        return {
            "shift": "t = stride along both axes (circular roll of the input)",
            "sub_shift": "t = stride // 2, output resampled by linear interpolation",
            "cosine": "flattened interior features per image",
            "prefix_tokens": "excluded",
            "interval": {
                "level": self.interval.level,
                "resamples": self.interval.resamples,
                "seed": self.interval.seed,
                "method": self.interval.method,
            },
        }

    def compute(self, inputs: AnalysisInputs) -> EquivarianceResult:
        layers: dict[str, EquivarianceLayer] = {}
        notes: dict[str, str] = {}
        for name, item in inputs.equivariance.items():
            if item.base is None:
                notes[name] = item.reason or "no spatial output"
                continue
            layers[name] = self._layer(item)
        return EquivarianceResult(
            version=self.version, params=self.params(), layers=layers, notes=notes
        )

    def _layer(self, item: EquivarianceInput) -> EquivarianceLayer:
        assert item.base is not None
        sy, sx = item.stride
        values: dict[str, tuple[float, float, float]] = {}
        unaligned = math.nan
        if "stride" in item.shifted:
            ref = equivariance_cosine(item.shifted["stride"], item.base, (0, 0), item.margin)
            unaligned = float(np.nanmean(ref)) if not np.isnan(ref).all() else math.nan
        for key in ("stride", "sub"):
            if key not in item.shifted:
                values[key] = (math.nan, math.nan, math.nan)
                continue
            t = item.shifts[key]
            cosines = equivariance_cosine(
                item.shifted[key], item.base, (t / sy, t / sx), item.margin
            )
            values[key] = _interval(cosines, self.interval)
        rows, cols = item.base.shape[1:3]
        m = max(0, min(item.margin, (rows - 1) // 2, (cols - 1) // 2))
        return EquivarianceLayer(
            equivariance=values["stride"][0],
            low=values["stride"][1],
            high=values["stride"][2],
            sub=values["sub"][0],
            sub_low=values["sub"][1],
            sub_high=values["sub"][2],
            unaligned=unaligned,
            stride=float(sy),
            shift=int(item.shifts.get("stride", 0)),
            sub_shift=int(item.shifts.get("sub", 0)),
            margin=m,
            margin_source=item.margin_source,
            cells=int((rows - 2 * m) * (cols - 2 * m)),
            images=len(item.base),
        )
