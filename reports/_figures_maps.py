"""Heatmap figures of a run report: ERF maps and similarity matrices (PNG).

Panels are capped by the caller (a dozen maps at most) and rendered at a modest
resolution so that a report stays small. The attention gallery lives in
:mod:`reports._gallery`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.patches import Circle

from ._plot import RenderedFigure, new_figure, styled, to_png, wrapped
from ._view import ErfLayer, SimilarityMatrix

__all__ = ["erf_maps_figure", "similarity_figure"]


def _bare(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


@styled
def erf_maps_figure(layers: Sequence[ErfLayer]) -> RenderedFigure | None:
    """ERF maps in input pixels, one panel per layer, with the 50 % and 90 % radii."""
    layers = [layer for layer in layers if layer.map is not None]
    if not layers:
        return None
    ncols = min(6, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig = new_figure(min(7.6, 1.0 + 1.3 * ncols), 0.35 + 1.45 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for ax, layer in zip(axes.flat, layers, strict=False):
        erf = np.nan_to_num(np.abs(np.asarray(layer.map)), nan=0.0)
        top = erf.max()
        im = ax.imshow(
            erf / top if top > 0 else erf,
            cmap="magma",
            norm=PowerNorm(0.5, vmin=0, vmax=1),
            interpolation="antialiased",
        )
        _bare(ax)
        centre = layer.centre or ((erf.shape[0] - 1) / 2, (erf.shape[1] - 1) / 2)
        for radius, style in ((layer.radius_50, "--"), (layer.radius_90, ":")):
            if radius is not None and radius > 0:
                ax.add_patch(
                    Circle((centre[1], centre[0]), radius, fill=False, ec="#56B4E9", ls=style, lw=1)
                )
        ax.set_title(f"{wrapped(layer.name)}\n{layer.mean_distance:.0f} px", fontsize=7, pad=2)
    for ax in axes.flat[len(layers) :]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="|∂s/∂x| / max")
    return to_png(fig, "Effective receptive field maps per layer.", dpi=100)


@styled
def similarity_figure(matrices: Sequence[SimilarityMatrix]) -> RenderedFigure | None:
    """Unit × unit similarity matrices of one kind and measure, one panel per layer.

    Non-negative measures (CKA) use viridis on [0, 1]; signed ones (correlation) a
    diverging colour-blind-safe map on [−1, 1].
    """
    if not matrices:
        return None
    lows = [float(np.nanmin(m.matrix)) for m in matrices]
    signed = min(lows) < -0.05
    cmap, vmin = ("PuOr_r", -1.0) if signed else ("viridis", 0.0)
    ncols = min(6, len(matrices))
    nrows = math.ceil(len(matrices) / ncols)
    fig = new_figure(min(7.6, 1.0 + 1.3 * ncols), 0.4 + 1.45 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for ax, sim in zip(axes.flat, matrices, strict=False):
        im = ax.imshow(sim.matrix, cmap=cmap, vmin=vmin, vmax=1.0, interpolation="antialiased")
        _bare(ax)
        ax.set_title(f"{wrapped(sim.layer)} ({sim.matrix.shape[0]})", fontsize=7, pad=2)
    for ax in axes.flat[len(matrices) :]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label=matrices[0].measure)
    kind = "head" if matrices[0].kind == "head" else "channel"
    alt = f"{kind.capitalize()} × {kind} similarity ({matrices[0].measure}) per layer."
    return to_png(fig, alt, dpi=100)
