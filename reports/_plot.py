"""Shared plotting machinery: house style, palettes, and encoding figures as data URIs.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never
through pyplot, so nothing global is created or left behind. The house style is
applied with :func:`matplotlib.rc_context` around each figure function (it is
restored on exit). Line plots are encoded as SVG (text as paths, no fonts
needed), heatmaps as PNG and photographs with overlays as JPEG, all base64
``data:`` URIs that the template puts into ``<img src>`` — an SVG inside an
``<img>`` runs no script and cannot inject markup.
"""

from __future__ import annotations

import base64
import functools
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import numpy as np
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "KIND_COLOURS",
    "KIND_LABELS",
    "KIND_MARKERS",
    "OKABE_ITO",
    "RenderedFigure",
    "depth_line",
    "hover",
    "new_figure",
    "short",
    "spread",
    "styled",
    "to_jpeg",
    "to_png",
    "to_svg",
    "wrapped",
]

#: Okabe & Ito (2008) colour-blind-safe qualitative palette (black last).
OKABE_ITO = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
KIND_COLOURS = {"head": "#0072B2", "channel": "#D55E00"}
KIND_MARKERS = {"head": "o", "channel": "s"}
KIND_LABELS = {"head": "heads", "channel": "channels"}

#: CSS pixels per inch, for the natural display size of a figure.
_CSS_DPI = 96

_STYLE: dict[str, object] = {
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9.0,
    "axes.edgecolor": "#555555",
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.6,
    "xtick.labelsize": 8.0,
    "ytick.labelsize": 8.0,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.5,
    "image.interpolation": "nearest",
    "savefig.facecolor": "white",
    "text.parse_math": False,  # labels are user text: never interpret '$...$'
    "svg.fonttype": "path",
    "svg.hashsalt": "inspector-report",  # deterministic ids: same view, same bytes
}

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class RenderedFigure:
    """An encoded figure, ready for ``<img src=... width=... alt=...>``.

    Attributes:
        src: ``data:`` URI of the image.
        alt: Text alternative (the template escapes it).
        width: Natural display width in CSS pixels.
        height: Natural display height in CSS pixels.
    """

    src: str
    alt: str
    width: int
    height: int
    points: tuple[tuple[float, float, str], ...] = ()

    @property
    def nbytes(self) -> int:
        """Size of the URI in the page, in bytes."""
        return len(self.src)

    @property
    def points_json(self) -> str:
        """The hover points as JSON ``[[x, y, label], ...]``, x and y as fractions of the
        image's width and height from its top-left corner (the page's script reads it)."""
        return json.dumps([[round(x, 4), round(y, 4), text] for x, y, text in self.points])


def depth_line(
    ax: Axes, x: Sequence[float], y: Sequence[float], fmt: str = "", **style: Any
) -> None:
    """``ax.plot`` of values against depth. Where several layers share a depth (the
    convolutions of one CNN block), the line runs through their mean at that depth and
    each layer stays a small marker, instead of a vertical saw-tooth."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    depths = np.unique(xs)
    args = (fmt,) if fmt else ()  # an empty format string would override linestyle=
    if len(depths) == len(xs):
        ax.plot(xs, ys, *args, **style)
        return
    means = []
    for d in depths:
        at = ys[xs == d]
        means.append(float(np.nanmean(at)) if np.isfinite(at).any() else np.nan)
    ax.plot(depths, means, *args, **style)
    dots = {k: v for k, v in style.items() if k in ("color", "alpha", "zorder")}
    ax.plot(xs, ys, linestyle="none", marker=".", ms=3, **dots)


def hover(ax: Axes, x: Sequence[float], y: Sequence[float], labels: Sequence[str]) -> None:
    """Give the points ``(x, y)`` of ``ax`` (data coordinates) a value shown on hover.

    The figure keeps them until it is encoded; non-finite points are left out."""
    fig = ax.get_figure()
    entries = getattr(fig, "_hover_points", [])
    entries.append((ax, np.asarray(x, dtype=float), np.asarray(y, dtype=float), list(labels)))
    fig._hover_points = entries  # type: ignore[union-attr]


def _points(fig: Figure) -> tuple[tuple[float, float, str], ...]:
    """Hover points as fractions of the encoded image, after the figure was drawn."""
    width, height = fig.bbox.width, fig.bbox.height
    out = []
    for ax, x, y, labels in getattr(fig, "_hover_points", []):
        finite = np.isfinite(x) & np.isfinite(y)
        pixels = ax.transData.transform(np.column_stack([x, y])[finite])
        for (px, py), text in zip(pixels, np.asarray(labels, dtype=object)[finite], strict=True):
            if 0 <= px <= width and 0 <= py <= height:
                out.append((float(px / width), float(1 - py / height), str(text)))
    return tuple(out)


def styled(func: Callable[P, R]) -> Callable[P, R]:
    """Run a figure function inside the house style (restored afterwards)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rc_context(_STYLE):
            return func(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """A figure of ``width`` × ``height`` inches with its own Agg canvas."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _size(fig: Figure) -> tuple[int, int]:
    w, h = fig.get_size_inches()
    return round(w * _CSS_DPI), round(h * _CSS_DPI)


def clipped_text(fig: Figure) -> list[str]:
    """Texts of ``fig`` (legend entries, titles, labels) that reach outside the figure, as
    drawn: what a reader would see cut off. Empty when nothing is clipped."""
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    width, height = fig.bbox.width, fig.bbox.height
    out = []
    texts = [t for legend in fig.legends for t in legend.texts]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        if ax.get_legend() is not None:
            texts += list(ax.get_legend().texts)
    texts += [t for t in fig.texts]
    for text in texts:
        if not text.get_visible() or not str(text.get_text()).strip():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < -0.5 or box.y0 < -0.5 or box.x1 > width + 0.5 or box.y1 > height + 0.5:
            out.append(str(text.get_text()))
    return out


def fit_legends(fig: Figure) -> None:
    """Redraw figure-level legends (the reports place them ``outside lower center``) with
    fewer columns until none reaches outside the figure: a legend of long labels in four
    columns was cut at both sides ("(attention branc")."""
    renderer = fig.canvas.get_renderer()
    for legend in list(fig.legends):
        handles, labels = legend.legend_handles, [t.get_text() for t in legend.texts]
        ncols = int(getattr(legend, "_ncols", 1))
        while ncols > 1:
            fig.draw_without_rendering()
            box = legend.get_window_extent(renderer)
            if box.x0 >= -0.5 and box.x1 <= fig.bbox.width + 0.5:
                break
            ncols -= 1
            legend.remove()
            legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols)
    fig.draw_without_rendering()


def to_svg(fig: Figure, alt: str) -> RenderedFigure:
    """Encode a line plot as SVG (text drawn as paths; no date stamp)."""
    fit_legends(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return RenderedFigure(_uri("image/svg+xml", buf.getvalue()), alt, *_size(fig), _points(fig))


def to_png(fig: Figure, alt: str, *, dpi: float = 100.0) -> RenderedFigure:
    """Encode a heatmap as PNG."""
    fit_legends(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return RenderedFigure(_uri("image/png", buf.getvalue()), alt, *_size(fig), _points(fig))


def to_jpeg(fig: Figure, alt: str, *, dpi: float = 100.0, quality: int = 82) -> RenderedFigure:
    """Encode a photograph with overlays as JPEG (a fraction of the PNG's size)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality, "optimize": True})
    return RenderedFigure(_uri("image/jpeg", buf.getvalue()), alt, *_size(fig))


def spread(n: int, k: int) -> list[int]:
    """At most ``k`` indices of ``range(n)``, evenly spread, first and last included."""
    if n <= k:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return sorted({int(i) for i in np.round(np.linspace(0, n - 1, k))})


def wrapped(name: str, width: int = 18, lines: int = 3) -> str:
    """``name`` broken after dots into lines of about ``width`` characters (a layer path
    stays whole in a narrow panel title); shortened at its start past ``lines`` lines."""
    parts = name.split(".")
    out: list[str] = []
    for i, part in enumerate(parts):
        piece = part + ("." if i < len(parts) - 1 else "")
        if out and len(out[-1]) + len(piece) <= width:
            out[-1] += piece
        else:
            out.append(piece)
    if len(out) > lines:
        out = ["…" + out[-lines][-(width - 1) :], *out[-lines + 1 :]]
    return "\n".join(out)


def short(name: str, width: int = 28) -> str:
    """``name`` shortened to ``width`` characters, keeping its end (the informative part)."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]
