"""The attention gallery: per-head attention maps overlaid on a sample image.

The gallery is composed as one pixel mosaic in numpy — maps upsampled
bilinearly from the token grid to the thumbnail, coloured, alpha-blended over
the image in grey — and placed 1:1 on a figure with
:meth:`~matplotlib.figure.Figure.figimage`; matplotlib only adds the labels.
That is an order of magnitude faster than one axes per head, and the pixels are
exactly the ones computed here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps

from ._plot import RenderedFigure, new_figure, short, styled, to_jpeg
from ._view import AttentionMaps, AttentionSample

__all__ = ["MAX_HEADS", "attention_figure", "resample", "resample_matrix"]

#: Most heads drawn per layer.
MAX_HEADS = 16
_TILE_MIN, _TILE_MAX = 96, 160  # pixels of a tile's longer side; fill ~860 px if possible
_GAP = 4  # pixels between tiles
_LEFT, _TOP = 22, 18  # pixels for row and column labels
_ALPHA = 0.62
_DPI = 100.0


def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``[n_out, n_in]`` weights resampling a 1-D signal: linear up, area-averaged down.

    Pixel centres are aligned (``(i + 0.5) · n_in / n_out − 0.5``); rows sum to 1.
    """
    weights = np.zeros((n_out, n_in))
    if n_out >= n_in:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = pos - lo
        rows = np.arange(n_out)
        np.add.at(weights, (rows, lo), 1 - frac)
        np.add.at(weights, (rows, hi), frac)
        return weights
    edges = np.arange(n_out + 1) * n_in / n_out
    for i in range(n_out):
        start, stop = edges[i], edges[i + 1]
        for j in range(int(np.floor(start)), int(np.ceil(stop))):
            weights[i, j] = min(stop, j + 1) - max(start, j)
    return weights / weights.sum(axis=1, keepdims=True)


def resample(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``array`` (``[row, col]`` or ``[row, col, channel]``) resampled to ``shape``."""
    rows = resample_matrix(array.shape[0], shape[0])
    cols = resample_matrix(array.shape[1], shape[1])
    out = np.tensordot(rows, array.astype(np.float64), axes=(1, 0))  # [row', col, ...]
    return np.swapaxes(np.tensordot(cols, out, axes=(1, 1)), 0, 1)  # [row', col', ...]


def _tile_shape(image: np.ndarray, columns: int) -> tuple[int, int]:
    tile = min(_TILE_MAX, max(_TILE_MIN, 860 // columns))
    rows, cols = image.shape[:2]
    scale = tile / max(rows, cols)
    return max(1, round(rows * scale)), max(1, round(cols * scale))


@styled
def attention_figure(sample: AttentionSample, layers: Sequence[AttentionMaps]) -> RenderedFigure:
    """One image's per-head attention maps, one row per layer, overlaid on the image.

    The first column is the image; each further tile is one head's map (upsampled
    bilinearly to the image, scaled to the head's own maximum, ``inferno``) over
    the image in grey.
    """
    n_heads = min(MAX_HEADS, max(m.maps.shape[0] for m in layers))
    th, tw = _tile_shape(sample.image, n_heads + 1)
    thumb = resample(sample.image, (th, tw)) / 255.0
    grey = (thumb @ np.array([0.299, 0.587, 0.114]))[..., None]
    cmap = colormaps["inferno"]
    width = _LEFT + (n_heads + 1) * (tw + _GAP)
    height = _TOP + len(layers) * (th + _GAP)
    mosaic = np.ones((height, width, 3))
    for r, maps in enumerate(layers):
        y = _TOP + r * (th + _GAP)
        mosaic[y : y + th, _LEFT : _LEFT + tw] = thumb
        for h in range(min(n_heads, maps.maps.shape[0])):
            m = resample(np.nan_to_num(np.clip(maps.maps[h], 0, None)), (th, tw))
            top = m.max()
            colour = cmap(m / top if top > 0 else m)[..., :3]
            x = _LEFT + (h + 1) * (tw + _GAP)
            mosaic[y : y + th, x : x + tw] = (1 - _ALPHA) * grey + _ALPHA * colour
    fig = new_figure(width / _DPI, height / _DPI, layout=None)
    fig.set_dpi(_DPI)
    fig.figimage(np.clip(mosaic, 0, 1), xo=0, yo=0, origin="upper")

    def label(x: float, y: float, text: str, **kw: object) -> None:
        fig.text(x / width, 1 - y / height, text, fontsize=7.5, color="#222222", **kw)

    for c in range(n_heads + 1):
        x = _LEFT + c * (tw + _GAP) + tw / 2
        label(x, _TOP / 2, "image" if c == 0 else f"head {c - 1}", ha="center", va="center")
    for r, maps in enumerate(layers):
        y = _TOP + r * (th + _GAP) + th / 2
        name = short(maps.layer, 18)
        label(_LEFT / 2, y, name, ha="center", va="center", rotation=90)
    alt = f"Attention of each head over image {sample.image_id}, for {len(layers)} layer(s)."
    return to_jpeg(fig, alt, dpi=_DPI)
