"""Summaries of an effective receptive field map (METRICS.md §3).

An ERF map ``M`` is ``[height, width]`` of non-negative weights over input pixels; the
centre is the input position of the selected output unit, as ``(y, x)`` pixel indices
(fractional for even sizes if the caller prefers). Pixel ``(i, j)`` sits at ``(i, j)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "REPLKNET_THRESHOLDS",
    "erf_axis_std",
    "erf_mean_distance",
    "erf_radius",
    "replknet_area_ratios",
]

REPLKNET_THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.5, 0.99)


def _checked(erf: np.ndarray) -> np.ndarray:
    erf = np.asarray(erf, dtype=np.float64)
    if erf.ndim != 2 or erf.size == 0:
        raise ValueError(f"an ERF map must be a non-empty [height, width] array, got {erf.shape}")
    if not np.isfinite(erf).all() or (erf < 0).any():
        raise ValueError("an ERF map must be finite and non-negative (take |gradient| first)")
    if erf.sum() <= 0:
        raise ValueError("an ERF map with zero mass has no receptive field to measure")
    return erf


def _offsets(shape: tuple[int, ...], centre: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    if len(centre) != 2:
        raise ValueError(f"centre must be (y, x), got {centre!r}")
    dy = np.arange(shape[0], dtype=np.float64)[:, None] - float(centre[0])
    dx = np.arange(shape[1], dtype=np.float64)[None, :] - float(centre[1])
    return np.broadcast_to(dy, shape), np.broadcast_to(dx, shape)


def erf_mean_distance(erf: np.ndarray, centre: Sequence[float]) -> float:
    """Mass-weighted mean distance from the centre, in pixels (comparable with MAD).

    Args:
        erf: ``[height, width]`` ERF map.
        centre: ``(y, x)`` of the output unit in input pixels.

    Returns:
        ``Σ_p w_p ‖p − centre‖ / Σ_p w_p``.
    """
    erf = _checked(erf)
    dy, dx = _offsets(erf.shape, centre)
    return float((erf * np.hypot(dy, dx)).sum() / erf.sum())


def erf_axis_std(erf: np.ndarray, centre: Sequence[float]) -> tuple[float, float]:
    """Mass-weighted standard deviation of the offsets from the centre, per axis.

    Measured about ``centre`` (not the map's own mean), so an off-centre ERF reads wider.
    For ``n`` stacked uniform ``k × k`` convolutions this is ``sqrt(n (k² − 1) / 12)``.

    Args:
        erf: ``[height, width]`` ERF map.
        centre: ``(y, x)`` of the output unit in input pixels.

    Returns:
        ``(std_y, std_x)`` in pixels.
    """
    erf = _checked(erf)
    dy, dx = _offsets(erf.shape, centre)
    total = erf.sum()
    return (
        float(np.sqrt((erf * dy**2).sum() / total)),
        float(np.sqrt((erf * dx**2).sum() / total)),
    )


def erf_radius(erf: np.ndarray, centre: Sequence[float], fraction: float) -> float:
    """Smallest radius whose disc about the centre holds ``fraction`` of the ERF mass.

    Discrete definition: pixels are sorted by distance to the centre; the radius is the
    distance of the first pixel at which the cumulative mass reaches ``fraction`` of the
    total. A disc of radius ``r`` holds every pixel at distance ``≤ r``, so pixels tied at
    one distance enter together; the radius is always some pixel's distance (0 for an ERF
    on the centre pixel alone).

    Args:
        erf: ``[height, width]`` ERF map.
        centre: ``(y, x)`` of the output unit in input pixels.
        fraction: Share of the mass the disc must hold, in ``(0, 1]``.

    Returns:
        The radius in pixels.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    erf = _checked(erf)
    dy, dx = _offsets(erf.shape, centre)
    radii = np.hypot(dy, dx).ravel()
    order = np.argsort(radii, kind="stable")
    cumulative = np.cumsum(erf.ravel()[order])
    # Compare with the cumulative total, not a separate sum, so fraction = 1 always lands.
    index = int(np.searchsorted(cumulative, fraction * cumulative[-1], side="left"))
    return float(radii[order[min(index, radii.size - 1)]])


def replknet_area_ratios(
    erf: np.ndarray, thresholds: Sequence[float] = REPLKNET_THRESHOLDS
) -> dict[float, tuple[int, float] | None]:
    """High-contribution area ratios as RepLKNet's ``erf/analyze_erf.py`` computes them.

    The map is rescaled to ``A = log10(M + 1) / max``; for each threshold ``t`` the
    smallest centred square of odd side ``2i + 1`` (``i = 1 … H // 2 − 1``, centred on
    ``(H // 2, W // 2)``, the lower-right of the four central pixels for even sizes)
    whose sum exceeds ``t`` of the total (strictly) is found, and its area ratio
    ``side² / (H W)`` reported. Quirks kept for comparability: the 1×1 square is never
    tested, the square never reaches the full map, and the result depends on the input
    resolution (store it). Unlike the original, squares wider than a non-square map are
    clipped at its border instead of wrapping around through negative indices.

    Args:
        erf: ``[height, width]`` ERF map (RepLKNet: summed ReLU'd gradients).
        thresholds: Fractions of the total to enclose.

    Returns:
        ``{t: (side, ratio)}``; ``None`` for a threshold no tested square exceeds.
    """
    erf = _checked(erf)
    scaled = np.log10(erf + 1.0)
    peak = scaled.max()
    if peak <= 0:
        raise ValueError("log10(M + 1) underflows to 0 everywhere: rescale the ERF map")
    scaled = scaled / peak
    h, w = scaled.shape
    # Integral image: every candidate square's sum in O(1), all sides at once.
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = scaled.cumsum(0).cumsum(1)
    half = np.arange(1, h // 2)
    top = np.clip(h // 2 - half, 0, h)
    bottom = np.clip(h // 2 + 1 + half, 0, h)
    left = np.clip(w // 2 - half, 0, w)
    right = np.clip(w // 2 + 1 + half, 0, w)
    inside = integral[bottom, right] - integral[top, right] - integral[bottom, left]
    inside = inside + integral[top, left]
    shares = inside / integral[h, w]
    sides = 2 * half + 1
    out: dict[float, tuple[int, float] | None] = {}
    for t in thresholds:
        hits = np.flatnonzero(shares > t)
        if hits.size == 0:
            out[t] = None
            continue
        side = int(sides[hits[0]])
        out[t] = (side, side / h * side / w)
    return out
