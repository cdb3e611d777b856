"""Fixed vs dynamic interaction and translation equivariance, in words and rows.

:func:`verdict_lines` writes the verdict's sentences ("interaction is fixed /
input-dependent", "equivariant up to block N") from the two analyzers' typed results;
:func:`dynamics_rows` gives one row per layer for the terminal and the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._text import terminal_safe
from ..analyzers import AnalysisResult, EquivarianceResult, InputDependenceResult

__all__ = [
    "EQUIVARIANT_FROM",
    "FIXED_BELOW",
    "DynamicsRow",
    "dynamics_rows",
    "terminal_lines",
    "verdict_lines",
]

FIXED_BELOW = 0.02
"""Normalised input dependence below which a unit's interaction is called fixed (a linear
convolution stack measures 0; one image's map against another's disjoint map, 1)."""

EQUIVARIANT_FROM = 0.99
"""Lower interval bound of E (stride-multiple shift) from which a layer is called
translation equivariant (a circular convolution stack measures 1)."""


@dataclass(frozen=True)
class DynamicsRow:
    """One layer: input dependence (heads and ERF map) and equivariance, NaN where not
    measured."""

    layer: str
    branch: str
    heads: np.ndarray
    heads_normalised: np.ndarray
    head_images: int
    erf: float
    erf_low: float
    erf_high: float
    erf_normalised: float
    erf_images: int
    equivariance: float
    low: float
    high: float
    sub: float
    unaligned: float
    stride: float
    images: int


def _f(value: float | None) -> float:
    return math.nan if value is None else float(value)


def dynamics_rows(
    dependence: InputDependenceResult | None, equivariance: EquivarianceResult | None
) -> list[DynamicsRow]:
    """Rows in model order (input dependence's order, then layers only equivariance has)."""
    d_layers = dict(dependence.layers) if dependence else {}
    e_layers = dict(equivariance.layers) if equivariance else {}
    names = [*d_layers, *(n for n in e_layers if n not in d_layers)]
    empty = np.zeros(0)
    rows = []
    for name in names:
        d, e = d_layers.get(name), e_layers.get(name)
        rows.append(
            DynamicsRow(
                layer=name,
                branch=(d.branch if d else "")
                or ("attention" if d and d.heads is not None else ""),
                heads=d.heads if d is not None and d.heads is not None else empty,
                heads_normalised=d.heads_normalised
                if d is not None and d.heads_normalised is not None
                else empty,
                head_images=int(d.head_images or 0) if d else 0,
                erf=_f(d.erf) if d else math.nan,
                erf_low=_f(d.erf_low) if d else math.nan,
                erf_high=_f(d.erf_high) if d else math.nan,
                erf_normalised=_f(d.erf_normalised) if d else math.nan,
                erf_images=int(d.erf_images or 0) if d else 0,
                equivariance=e.equivariance if e else math.nan,
                low=e.low if e else math.nan,
                high=e.high if e else math.nan,
                sub=e.sub if e else math.nan,
                unaligned=e.unaligned if e else math.nan,
                stride=e.stride if e else math.nan,
                images=e.images if e else 0,
            )
        )
    return rows


def _interaction_sentence(rows: list[DynamicsRow]) -> str | None:
    heads = [r for r in rows if r.heads.size and r.heads.shape == r.heads_normalised.shape]
    maps = [r for r in rows if not math.isnan(r.erf) and r.branch in ("block", "conv")]
    parts = []
    verdicts = []
    values = np.concatenate([r.heads for r in heads]) if heads else np.zeros(0)
    normal = np.concatenate([r.heads_normalised for r in heads]) if heads else np.zeros(0)
    keep = np.isfinite(values) & np.isfinite(normal)  # heads without a number left out
    values, normal = values[keep], normal[keep]
    if values.size:
        n = heads[0].head_images
        fixed = bool(np.nanmedian(normal) < FIXED_BELOW)
        verdicts.append(fixed)
        parts.append(
            f"{'fixed' if fixed else 'input-dependent'} in the attention heads "
            f"(D median {np.nanmedian(values):.2f} nats, range {np.nanmin(values):.2f}-"
            f"{np.nanmax(values):.2f}, normalised {np.nanmedian(normal):.2f}; "
            f"{values.size} heads, {n} images)"
        )
    if maps:
        values = np.array([r.erf for r in maps])
        normal = np.array([r.erf_normalised for r in maps])
        fixed = bool(np.nanmedian(normal) < FIXED_BELOW)
        verdicts.append(fixed)
        kind = "blocks" if maps[0].branch == "block" else "convolutions"
        parts.append(
            f"{'fixed' if fixed else 'input-dependent'} in the {kind}' ERF maps "
            f"(D median {np.nanmedian(values):.2f} nats, normalised {np.nanmedian(normal):.2f}; "
            f"{len(maps)} layers, {maps[0].erf_images} images)"
        )
    if not parts:
        return None
    if all(verdicts):
        lead = "Interaction is fixed"
    elif not any(verdicts):
        lead = "Interaction is input-dependent"
    else:
        lead = "Interaction is"
        return f"{lead} " + "; ".join(parts) + "."
    return f"{lead}: " + "; ".join(p.split(" ", 1)[1] for p in parts) + "."


def _equivariance_sentence(rows: list[DynamicsRow]) -> str | None:
    measured = [r for r in rows if not math.isnan(r.equivariance) and r.branch != "attention"]
    if not measured:
        return None
    first_bad = next((i for i, r in enumerate(measured) if not r.low >= EQUIVARIANT_FROM), None)
    images = measured[0].images
    subs = [r for r in measured if not math.isnan(r.sub)]
    tail = ""
    if subs:
        worst = min(subs, key=lambda r: r.sub)
        tail = f"; a sub-stride shift gives E down to {worst.sub:.2f} ({worst.layer})"
    if first_bad is None:
        return (
            f"Translation equivariant at every measured layer (E ≥ {EQUIVARIANT_FROM} at a "
            f"stride-multiple shift, {len(measured)} layers, {images} images){tail}."
        )
    bad = measured[first_bad]
    head = (
        f"Equivariant up to {measured[first_bad - 1].layer} ({first_bad} of {len(measured)} layers)"
        if first_bad
        else "Not translation equivariant from the first measured layer"
    )
    return (
        f"{head}: {bad.layer} has E = {bad.equivariance:.3f} [{bad.low:.3f}, {bad.high:.3f}] "
        f"at a {bad.stride:g}-px shift (unaligned reference {bad.unaligned:.2f}; "
        f"{images} images){tail}."
    )


def verdict_lines(results: Mapping[str, AnalysisResult]) -> list[str]:
    """The verdict's sentences on the seed's second and third claims.

    Args:
        results: Typed results by analyzer name (``input_dependence``,
            ``translation_equivariance``; either may be missing).
    """
    dependence = results.get("input_dependence")
    equivariance = results.get("translation_equivariance")
    rows = dynamics_rows(
        dependence if isinstance(dependence, InputDependenceResult) else None,
        equivariance if isinstance(equivariance, EquivarianceResult) else None,
    )
    return [s for s in (_interaction_sentence(rows), _equivariance_sentence(rows)) if s]


def _range(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    if not values.size:
        return "-"
    return f"{np.nanmin(values):.2f}-{np.nanmax(values):.2f}"


def _ci(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f} [{low:.2f},{high:.2f}]"


def terminal_lines(
    dependence: InputDependenceResult | None, equivariance: EquivarianceResult | None
) -> list[str]:
    """The terminal's fixed-vs-dynamic table (its verdict sentences are printed with the
    run's verdict, :func:`inspector.present._verdict.verdict`)."""
    rows = dynamics_rows(dependence, equivariance)
    if not rows:
        return []
    header = (
        f"{'layer':<28} {'D heads nats':>12} {'D ERF nats [95%]':>18} "
        f"{'E t=s [95%]':>18} {'E t=s/2':>7} {'unalig':>6}"
    )
    lines = ["", "fixed vs dynamic interaction (D) and translation equivariance (E)", header]
    lines.append("-" * len(header))
    for r in rows:
        layer = terminal_safe(r.layer)[:28]
        lines.append(
            f"{layer:<28} {_range(r.heads):>12} {_ci(r.erf, r.erf_low, r.erf_high):>18} "
            f"{_ci(r.equivariance, r.low, r.high):>18} "
            f"{'-' if math.isnan(r.sub) else f'{r.sub:.2f}':>7} "
            f"{'-' if math.isnan(r.unaligned) else f'{r.unaligned:.2f}':>6}"
        )
    return lines
