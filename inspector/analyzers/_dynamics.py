"""Fixed vs dynamic interaction and translation equivariance (METRICS.md §8-9), in numpy.

Input dependence ``D`` of a unit is the generalised Jensen–Shannon divergence among the
images' interaction maps (attention rows of a head per query, or ERF maps of a layer's
centre unit): the entropy of the mean map minus the mean entropy of the maps, in nats.
It streams: :func:`input_dependence_from_sums` needs only the sum of the images' maps and
the sum of their entropies.

Translation equivariance ``E`` compares a layer's output on a circularly rolled input with
its rolled output on the original input (:func:`shift_cells`, :func:`equivariance_cosine`).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "equivariance_cosine",
    "input_dependence",
    "input_dependence_from_sums",
    "map_entropy",
    "normalised_input_dependence",
    "shift_cells",
]


def map_entropy(maps: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each distribution along the last axis; ``0 log 0 = 0``.

    Args:
        maps: ``[..., key]`` non-negative rows, each summing to 1.
    """
    maps = np.asarray(maps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(maps > 0, np.log(np.where(maps > 0, maps, 1.0)), 0.0)
    return -(maps * logs).sum(-1)


def _rows(maps: np.ndarray) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim < 2 or maps.shape[0] < 1 or maps.shape[-1] < 1:
        raise ValueError(
            f"maps must be [sample, ..., key] with at least one image and one key, got {maps.shape}"
        )
    if not np.isfinite(maps).all() or (maps < 0).any():
        raise ValueError("maps must be finite and non-negative (attention rows or |gradient|)")
    mass = maps.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, maps / np.where(mass > 0, mass, 1.0), np.nan)


def input_dependence(maps: np.ndarray) -> float:
    """Input dependence ``D`` of one unit from every image's map (METRICS.md §8).

    ``D = mean_q [ H(mean_x Ā_x(q, ·)) − mean_x H(Ā_x(q, ·)) ]`` in nats: 0 when every
    image has the same map, ``ln n`` for ``n`` images one-hot on ``n`` distinct keys.

    Args:
        maps: ``[sample, query, key]`` (or ``[sample, key]`` for one query, e.g. an ERF
            map flattened) non-negative maps; each row is renormalised to sum 1 (rows
            with no mass are left out).

    Returns:
        ``D`` in nats.
    """
    rows = _rows(maps)
    if rows.ndim == 2:
        rows = rows[:, None, :]
    rows = rows.reshape(rows.shape[0], -1, rows.shape[-1])
    alive = ~np.isnan(rows).any(-1).any(0)  # queries with mass in every image
    if not alive.any():
        return math.nan
    rows = rows[:, alive]
    return input_dependence_from_sums(rows.sum(0), map_entropy(rows).mean(-1).sum(), len(rows))


def input_dependence_from_sums(map_sum: np.ndarray, entropy_sum: float, images: int) -> float:
    """``D`` from streamed sums: the sum over images of the (renormalised) maps and of
    each image's entropy averaged over queries.

    Args:
        map_sum: ``[..., query, key]`` sum over images of the maps (leading axes, e.g.
            windows, are more queries).
        entropy_sum: Sum over images of ``mean_q H(Ā_x(q, ·))``.
        images: Number of images summed.
    """
    if images < 1:
        raise ValueError(f"input dependence needs at least one image, got {images}")
    mean = np.asarray(map_sum, dtype=np.float64) / images
    return float(map_entropy(mean).mean() - entropy_sum / images)


def normalised_input_dependence(d: float | np.ndarray, images: int, keys: int) -> np.ndarray:
    """``D / ln(min(images, keys))`` in ``[0, 1]`` (NaN when that minimum is 1)."""
    top = min(int(images), int(keys))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(d, dtype=np.float64) / (math.log(top) if top > 1 else np.nan)


def shift_cells(y: np.ndarray, cells: tuple[float, float]) -> np.ndarray:
    """Roll a grid circularly by ``cells`` (``(dy, dx)``, fractional: linear interpolation).

    Args:
        y: ``[..., y, x, channel]`` features on a grid.
        cells: Shift along y and x in cells; ``roll(y, 1)`` moves row 0 to row 1 (as
            ``torch.roll`` / ``np.roll`` do for the input image).
    """
    out = np.asarray(y)
    if out.dtype.kind != "f":
        out = out.astype(np.float64)
    for axis, shift in ((-3, cells[0]), (-2, cells[1])):
        whole = math.floor(shift)
        frac = shift - whole
        rolled = np.roll(out, whole, axis=axis)
        out = rolled if frac == 0 else (1 - frac) * rolled + frac * np.roll(rolled, 1, axis=axis)
    return out


def equivariance_cosine(
    shifted: np.ndarray, base: np.ndarray, cells: tuple[float, float], margin: int
) -> np.ndarray:
    """Per image, the cosine between ``y(roll_t x)`` and ``roll_{t/s} y(x)`` (METRICS.md §9)
    over the cells at least ``margin`` cells from the border.

    Args:
        shifted: ``[sample, y, x, channel]`` the layer's output on the rolled images.
        base: ``[sample, y, x, channel]`` its output on the images.
        cells: The input's shift in cells of this layer (``t / s``), per axis.
        margin: Cells left out along each border (0: every cell).

    Returns:
        ``[sample]`` cosines of the flattened interior features.
    """
    shifted, base = np.asarray(shifted), np.asarray(base)
    if shifted.shape != base.shape or base.ndim != 4:
        raise ValueError(
            f"outputs must be two [sample, y, x, channel] arrays of one shape, got "
            f"{shifted.shape} and {base.shape}"
        )
    rows, cols = base.shape[1:3]
    m = max(0, min(int(margin), (rows - 1) // 2, (cols - 1) // 2))
    rolled = shift_cells(base, cells)
    a = shifted[:, m : rows - m, m : cols - m].reshape(len(base), -1).astype(np.float64)
    b = rolled[:, m : rows - m, m : cols - m].reshape(len(base), -1).astype(np.float64)
    dot = np.einsum("ij,ij->i", a, b)
    norms = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), np.nan)
