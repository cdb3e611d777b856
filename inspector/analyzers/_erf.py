"""Summaries of an effective receptive field map (METRICS.md §3).

An ERF map ``M`` is ``[height, width]`` of non-negative weights over input pixels; the
centre is the input position of the selected output unit, as ``(y, x)`` pixel indices
(fractional for even sizes if the caller prefers). Pixel ``(i, j)`` sits at ``(i, j)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._intervals import IntervalSpec, bootstrap_indices

__all__ = [
    "REPLKNET_THRESHOLDS",
    "degenerate_erf",
    "erf_axis_std",
    "erf_mean_distance",
    "erf_radius",
    "radius_intervals",
    "replknet_area_ratios",
    "uniform_erf_distance",
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


def radius_intervals(
    profile: np.ndarray,
    radii: np.ndarray,
    fractions: tuple[float, ...] = (0.5, 0.9),
    spec: IntervalSpec | None = None,
) -> list[tuple[float, float]]:
    """Bootstrap over images (or disjoint image groups) of the radii of the mean map
    (:func:`erf_radius`).

    Args:
        profile: ``[sample, radius]`` each image's (or image group's) mass at each
            distance of ``radii``: ``Σ`` of the map over the pixels at that distance.
        radii: ``[radius]`` the distinct distances from the centre, ascending.
        fractions: The shares of the mass whose radii are wanted.
        spec: Level, resamples and seed (default :class:`IntervalSpec`).

    Returns:
        ``(low, high)`` per fraction. A resample's radius is the first distance at which
        the cumulative mass of its summed profile reaches the fraction of its total, as
        :func:`erf_radius` reads the mean map.
    """
    spec = spec or IntervalSpec()
    profile = np.asarray(profile, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    n = profile.shape[0]
    index = bootstrap_indices(n, spec.resamples, spec.seed)
    counts = np.zeros((spec.resamples, n))
    np.add.at(counts, (np.arange(spec.resamples)[:, None], index), 1.0)
    draws = np.empty((spec.resamples, len(fractions)))
    chunk = max(1, (1 << 22) // max(radii.size, 1))  # about 32 MiB of cumulative profiles
    for start in range(0, spec.resamples, chunk):
        cumulative = np.cumsum(counts[start : start + chunk] @ profile, axis=1)
        for j, fraction in enumerate(fractions):
            target = fraction * cumulative[:, -1:]
            first = np.minimum((cumulative < target).sum(1), radii.size - 1)
            draws[start : start + chunk, j] = radii[first]
    tail = (1 - spec.level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    return [(float(a), float(b)) for a, b in zip(low, high, strict=True)]


def replknet_area_ratios(
    erf: np.ndarray,
    thresholds: Sequence[float] = REPLKNET_THRESHOLDS,
    centre: Sequence[float] | None = None,
) -> dict[float, tuple[int, float, bool] | None]:
    """High-contribution area ratios as RepLKNet's ``erf/analyze_erf.py`` computes them.

    The map is rescaled to ``A = log10(M + 1) / max``; for each threshold ``t`` the
    smallest square of odd side ``2i + 1`` (``i = 1 … H // 2 − 1``) about the centre pixel
    whose sum exceeds ``t`` of the total (strictly) is found, and its area ratio
    ``side² / (H W)`` reported. RepLKNet centres the squares on ``(H // 2, W // 2)``;
    here they are centred on ``centre`` (rounded to a pixel) where given — the pixel the
    selected output unit sits on, which for strided networks is not the map's middle
    (MobileOne-S0's 7×7 stage sits at (96, 96) of a 224-px input). Quirks kept for
    comparability: the 1×1 square is never tested, the square never reaches the full
    map, the result depends on the input resolution and on the map's absolute scale
    (``log10(M + 1)`` is not scale-free: RepLKNet's ``M`` is the mean over images of the
    ReLU'd input gradient of the ImageNet-normalised image, summed over colour channels).
    Squares are clipped at the map's border instead of wrapping around through negative
    indices.

    Args:
        erf: ``[height, width]`` ERF map (RepLKNet: summed ReLU'd gradients).
        thresholds: Fractions of the total to enclose.
        centre: ``(y, x)`` to centre the squares on; ``None`` for RepLKNet's middle.

    Returns:
        ``{t: (side, ratio, saturated)}``, ``saturated`` when the square is the largest
        the search tests (the ratio is then a floor, not a measurement); ``None`` for a
        threshold no tested square exceeds (saturated too).
    """
    erf = _checked(erf)
    scaled = np.log10(erf + 1.0)
    peak = scaled.max()
    if peak <= 0:
        raise ValueError("log10(M + 1) underflows to 0 everywhere: rescale the ERF map")
    scaled = scaled / peak
    h, w = scaled.shape
    cy, cx = (h // 2, w // 2) if centre is None else (round(centre[0]), round(centre[1]))
    # Integral image: every candidate square's sum in O(1), all sides at once.
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = scaled.cumsum(0).cumsum(1)
    half = np.arange(1, h // 2)
    top = np.clip(cy - half, 0, h)
    bottom = np.clip(cy + 1 + half, 0, h)
    left = np.clip(cx - half, 0, w)
    right = np.clip(cx + 1 + half, 0, w)
    inside = integral[bottom, right] - integral[top, right] - integral[bottom, left]
    inside = inside + integral[top, left]
    shares = inside / integral[h, w]
    sides = 2 * half + 1
    out: dict[float, tuple[int, float, bool] | None] = {}
    for t in thresholds:
        hits = np.flatnonzero(shares > t)
        if hits.size == 0:
            out[t] = None
            continue
        side = int(sides[hits[0]])
        out[t] = (side, side / h * side / w, bool(hits[0] == sides.size - 1))
    return out


def degenerate_erf(
    mean_distance: Sequence[float], theoretical_rf: Sequence[float], *, growth: float = 1.5
) -> str | None:
    """Why an ERF series is degenerate (METRICS.md §3), or ``None`` when it is not.

    A series (block outputs or convolutions, in depth order) is degenerate when the
    theoretical receptive field grows across depth but the ERF does not follow: the ERF
    mean distance of the deepest layer is less than ``growth`` times that of the first,
    while the theoretical RF grows by more than ``growth`` times as much (unbounded
    counts as growing). A randomly initialised timm CNN, whose residual branches end in
    a zero-initialised norm, gives exactly that.

    Args:
        mean_distance: ERF mean distance per layer (px), in depth order.
        theoretical_rf: Theoretical RF side per layer (px; ``inf`` unbounded, NaN unknown).
        growth: The least growth of the ERF, from the first to the last layer, that counts
            as growing.
    """
    erf = np.asarray(mean_distance, dtype=np.float64)
    rf = np.asarray(theoretical_rf, dtype=np.float64)
    if erf.shape != rf.shape:
        raise ValueError(f"one theoretical RF per ERF layer needed, got {rf.shape} vs {erf.shape}")
    known = ~np.isnan(rf) & np.isfinite(erf)
    if known.sum() < 3:
        return None
    erf, rf = erf[known], rf[known]
    first_rf, last_rf = rf[0], rf.max()
    if not (np.isinf(last_rf) or last_rf > growth * growth * first_rf) or np.isinf(first_rf):
        return None
    first, last = max(erf[0], 1e-9), erf[-1]
    if last >= growth * first:
        return None
    grows = "becomes unbounded" if np.isinf(last_rf) else f"grows to {last_rf:.0f} px"
    return (
        f"degenerate ERF: the mean distance stays at {erf[0]:.1f}-{last:.1f} px across depth "
        f"while the theoretical receptive field {grows} (from {first_rf:.0f} px); typical of "
        "randomly initialised weights (zero-initialised residual branches): not a finding"
    )


def uniform_erf_distance(height: int, width: int) -> float:
    """ERF mean distance of a uniform ERF over a ``height × width`` input, measured from
    the input's centre ``(height / 2, width / 2)`` with pixel centres at ``i + 0.5``
    (METRICS.md §3: 85.701266 px at 224², ``224/6 · (√2 + ln(1 + √2))`` in the limit)."""
    if height < 1 or width < 1:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    dy = np.arange(height, dtype=np.float64)[:, None] + 0.5 - height / 2
    dx = np.arange(width, dtype=np.float64)[None, :] + 0.5 - width / 2
    return float(np.hypot(dy, dx).mean())
