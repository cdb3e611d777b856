"""Line and summary figures of a run report: distance, redundancy, importance, pruning.

Each function takes records of the view model and returns a
:class:`~reports._plot.RenderedFigure` (or ``None`` when there is nothing to
draw). Image-like figures (attention maps, ERF maps, similarity matrices) live in
:mod:`reports._figures_maps`; the comparison figures in
:mod:`reports._figures_compare`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes

from ._plot import (
    KIND_COLOURS,
    KIND_LABELS,
    KIND_MARKERS,
    OKABE_ITO,
    RenderedFigure,
    depth_line,
    hover,
    new_figure,
    short,
    styled,
    to_png,
    to_svg,
)
from ._view import AttentionDistance, ErfLayer, ImportanceLayer, PruningCurve, RedundancyLayer

__all__ = [
    "distance_figure",
    "importance_figures",
    "pruning_figure",
    "redundancy_figure",
]

DEPTH_LABEL = "depth (fraction of network)"
_HEAD_COLOUR = OKABE_ITO[0]
_ERF_COLOURS = (OKABE_ITO[1], OKABE_ITO[2], OKABE_ITO[3], OKABE_ITO[4])


def _depth_axis(ax: Axes) -> None:
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel(DEPTH_LABEL)


def erf_series(erf: Sequence[ErfLayer]) -> dict[str, list[ErfLayer]]:
    """ERF layers grouped by their ``series`` label, in first-seen order."""
    groups: dict[str, list[ErfLayer]] = {}
    for layer in erf:
        groups.setdefault(layer.series, []).append(layer)
    return groups


def head_means(attention: Sequence[AttentionDistance]) -> np.ndarray:
    """Per-layer mean of the heads' distances (NaN heads ignored)."""
    out = np.full(len(attention), np.nan)
    for i, layer in enumerate(attention):
        finite = layer.head_distance[np.isfinite(layer.head_distance)]
        if finite.size:
            out[i] = finite.mean()
    return out


MAX_INDEXED_HEADS = 16
"""Layers with at most this many heads get each point labelled with its head index."""


def _head_indices(
    ax: Axes, attention: Sequence[AttentionDistance], values: dict[int, np.ndarray]
) -> None:
    """Each head's index beside its point (``h0``, ``h1``, ...; ``values`` by ``id`` of
    the layer: the plotted distances), so a point can be found in the per-head table;
    layers with more than :data:`MAX_INDEXED_HEADS` heads are left unlabelled (the labels
    would cover each other)."""
    for layer in attention:
        if layer.head_distance.size > MAX_INDEXED_HEADS:
            continue
        for head, value in enumerate(np.asarray(values[id(layer)], dtype=float).tolist()):
            if np.isfinite(value):
                ax.annotate(
                    f"h{head}",
                    (layer.depth, value),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize=5.5,
                    color="#444444",
                    va="center",
                    zorder=5,
                )


def _centre_values(layer: AttentionDistance) -> np.ndarray:
    if layer.centre_distance is None:
        return np.full(layer.head_distance.shape, np.nan)
    return np.asarray(layer.centre_distance, dtype=float)


@styled
def distance_figure(
    attention: Sequence[AttentionDistance],
    erf: Sequence[ErfLayer],
    *,
    centre: bool = False,
    erf_uniform: float | None = None,
) -> RenderedFigure | None:
    """Distance vs depth: head points, ERF lines, uniform references.

    Like Fig. 7 of the ViT paper, every head is one point at its layer's depth; the ERF
    mean distance of every measured layer is a line on the same axes. With ``centre``
    the heads are their ``MAD_centre`` (the central query's distance, the one comparable
    with the ERF) and both uniform references are drawn (``MAD_centre`` of uniform
    attention per layer, a uniform ERF at the input size); without it, the heads are
    their MAD (mean over every query) and ERF lines are left out unless no head has a
    distance.
    """
    if not attention and not erf:
        return None
    fig = new_figure(7.6, 4.1)
    ax = fig.add_subplot()
    values = {id(layer): (_centre_values(layer) if centre else layer.head_distance)
              for layer in attention}  # fmt: skip
    if attention:
        depth = np.array([layer.depth for layer in attention])
        for windowed in (False, True):
            xs, ys = [], []
            for layer in attention:
                if layer.windowed is windowed:
                    xs.extend([layer.depth] * layer.head_distance.size)
                    ys.extend(values[id(layer)].tolist())
            if xs:
                ax.scatter(
                    xs,
                    ys,
                    s=20 if windowed else 16,
                    marker="s" if windowed else "o",
                    facecolors="none" if windowed else _HEAD_COLOUR,
                    edgecolors=_HEAD_COLOUR,
                    alpha=0.9 if windowed else 0.55,
                    linewidths=0.9,
                    label=("head MAD_centre" if centre else "head MAD")
                    + (" (windowed attention)" if windowed else ""),
                    zorder=3,
                )
        for layer in attention:  # hover: layer, head, value and its interval
            bounds = layer.centre_interval if centre else layer.head_interval
            hover(
                ax,
                [layer.depth] * layer.head_distance.size,
                values[id(layer)],
                [
                    f"{layer.name} · head {h}: {v:.1f} px" + _interval(bounds, h)
                    for h, v in enumerate(values[id(layer)])
                ],
            )
        _head_indices(ax, attention, values)
        for layer in attention:  # each head's 95 % interval over images, where stored
            bounds = layer.centre_interval if centre else layer.head_interval
            if bounds is not None and np.isfinite(bounds).any():
                ax.vlines(
                    np.full(bounds.shape[1], layer.depth), bounds[0], bounds[1],
                    color=_HEAD_COLOUR, alpha=0.35, lw=1.0, zorder=2,
                )  # fmt: skip
        means = np.array(
            [np.nanmean(v) if np.isfinite(v).any() else np.nan for v in values.values()]
        )
        ax.plot(depth, means, color=_HEAD_COLOUR, lw=1.1, label="mean over heads")
        uniform = np.array(
            [
                np.nan
                if (a.centre_uniform if centre else a.uniform_distance) is None
                else (a.centre_uniform if centre else a.uniform_distance)
                for a in attention
            ]
        )
        if np.isfinite(uniform).any():
            label = "uniform attention (centre query)" if centre else "uniform attention"
            ax.plot(depth, uniform, "--", color="#333333", lw=1.1, label=label)
    if centre or not attention:
        for colour, (series, layers) in zip(
            _ERF_COLOURS * 4, erf_series(erf).items(), strict=False
        ):
            low = np.array([np.nan if e.low is None else e.low for e in layers], dtype=float)
            high = np.array([np.nan if e.high is None else e.high for e in layers], dtype=float)
            if np.isfinite(low).any():  # the ERF mean distance's 95 % interval as a band
                ax.fill_between(
                    [e.depth for e in layers], low, high, color=colour, alpha=0.18, lw=0
                )
            hover(
                ax,
                [e.depth for e in layers],
                [e.mean_distance for e in layers],
                [
                    f"{e.name} ({series}): ERF {e.mean_distance:.1f} px"
                    + ("" if e.low is None else f" [95 %: {e.low:.1f}, {e.high:.1f}]")
                    for e in layers
                ],
            )
            depth_line(
                ax,
                [layer.depth for layer in layers],
                [layer.mean_distance for layer in layers],
                "-D",
                color=colour,
                ms=3.2,
                lw=1.8,
                label="ERF mean distance" + ("" if series == "ERF" else f" ({series})"),
                zorder=4,
            )
        if erf and erf_uniform is not None:
            ax.axhline(erf_uniform, ls=":", color=_ERF_COLOURS[0], lw=1.1, label="uniform ERF")
    _depth_axis(ax)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("mean distance (input pixels)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)))
    what = "MAD_centre per head" if centre else "Mean attention distance per head"
    return to_svg(
        fig,
        f"{what} and ERF mean distance against depth; vertical bars and bands: 95 % "
        "intervals over images.",
    )


def _interval(bounds: np.ndarray | None, index: int) -> str:
    """`` [95 %: lo, hi]`` of column ``index`` of a ``[2, n]`` interval, or ``""``."""
    if bounds is None or not np.isfinite(bounds[:, index]).all():
        return ""
    return f" [95 %: {bounds[0, index]:.1f}, {bounds[1, index]:.1f}]"


@styled
def redundancy_figure(layers: Sequence[RedundancyLayer]) -> RenderedFigure | None:
    """Redundancy (1 − effective/units) and mean similarity vs depth, heads and channels."""
    if not layers:
        return None
    fig = new_figure(7.6, 3.2)
    left, right = fig.subplots(1, 2, sharex=True)
    series = sorted(
        {(r.kind, r.measure) for r in layers}, key=lambda km: ("secondary" in km[1], *km)
    )
    for kind, measure in series:
        rows = [r for r in layers if r.kind == kind and r.measure == measure]
        secondary = "secondary" in measure
        label = KIND_LABELS[kind] + (f" ({measure})" if measure else "")
        style = {
            "color": KIND_COLOURS[kind],
            "marker": KIND_MARKERS[kind],
            "label": label,
            "linestyle": "--" if secondary else "-",
            "alpha": 0.5 if secondary else 1.0,
        }
        depth = np.array([r.depth for r in rows])
        value = np.array([1.0 - r.effective_units / r.units for r in rows])
        depth_line(left, depth, value, **style)
        low = np.array([np.nan if r.redundancy_low is None else r.redundancy_low for r in rows])
        high = np.array([np.nan if r.redundancy_high is None else r.redundancy_high for r in rows])
        hover(
            left,
            depth,
            value,
            [
                f"{r.name} · {label}: redundancy {v:.2f}"
                + (f" [95 %: {lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else "")
                for r, v, lo, hi in zip(rows, value, low, high, strict=True)
            ],
        )
        hover(
            right,
            depth,
            [r.mean_similarity for r in rows],
            [f"{r.name} · {label}: mean similarity {r.mean_similarity:.2f}" for r in rows],
        )
        if np.isfinite(low).any():
            left.errorbar(
                depth,
                value,
                yerr=np.abs(np.vstack([value - low, high - value])),
                fmt="none",
                ecolor=KIND_COLOURS[kind],
                capsize=2,
                lw=1,
            )
        depth_line(right, depth, [r.mean_similarity for r in rows], **style)
    left.set_ylabel("redundancy = 1 − effective units / units")
    left.set_ylim(0, 1.02)
    right.set_ylabel("mean off-diagonal similarity")
    low, high = right.get_ylim()
    right.set_ylim(min(0.0, low), max(1.02, high))
    for ax in (left, right):
        _depth_axis(ax)
    left.legend(loc="best")
    right.legend(loc="best")
    return to_svg(
        fig,
        "Redundancy (with 95 % intervals where measured) and mean similarity of heads and "
        "channels against depth; dashed: |Pearson r| between single channels (secondary).",
    )


@styled
def importance_figures(layers: Sequence[ImportanceLayer]) -> list[RenderedFigure]:
    """Head importance as a layer × head heatmap; channel importance as quantile bands."""
    figures: list[RenderedFigure] = []
    heads = [r for r in layers if r.kind == "head"]
    channels = [r for r in layers if r.kind == "channel"]
    if heads:
        width = max(r.scores.size for r in heads)
        grid = np.full((len(heads), width), np.nan)
        for i, r in enumerate(heads):
            grid[i, : r.scores.size] = r.scores
        fig = new_figure(min(max(4.0, 2.4 + 0.32 * width), 7.6), 1.0 + 0.22 * len(heads))
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="cividis", vmin=0, vmax=1, aspect="auto")
        ax.set_yticks(range(len(heads)), [short(r.name, 22) for r in heads], fontsize=7)
        step = 1 if width <= 16 else 4
        ax.set_xticks(range(0, width, step))
        ax.set_xlabel("head")
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="importance", shrink=0.9)
        figures.append(to_png(fig, "Importance of every head, layer by layer.", dpi=110))
    if channels:
        fig = new_figure(7.6, 3.0)
        ax = fig.add_subplot()
        depth = [r.depth for r in channels]
        q = np.array([np.nanquantile(r.scores, [0.1, 0.25, 0.5, 0.75, 0.9]) for r in channels])
        colour = KIND_COLOURS["channel"]
        ax.fill_between(depth, q[:, 0], q[:, 4], color=colour, alpha=0.15, lw=0, label="10–90 %")
        ax.fill_between(depth, q[:, 1], q[:, 3], color=colour, alpha=0.3, lw=0, label="25–75 %")
        ax.plot(depth, q[:, 2], "-s", color=colour, label="median channel")
        ax.plot(depth, [np.nanmax(r.scores) for r in channels], ":", color=colour, label="max")
        _depth_axis(ax)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("importance (normalised)")
        fig.legend(loc="outside lower center", ncols=4)
        figures.append(to_svg(fig, "Distribution of channel importance per layer against depth."))
    return figures


@styled
def pruning_figure(curves: Sequence[PruningCurve]) -> RenderedFigure | None:
    """Top-1 agreement and KL against the fraction of units removed, heads and channels."""
    if not curves:
        return None
    fig = new_figure(7.6, 3.5)
    agree_ax, kl_ax = fig.subplots(1, 2, sharex=True)
    thresholds = sorted({c.threshold for c in curves})
    for t in thresholds:
        agree_ax.axhline(t, ls="--", color="#333333", lw=1.0, label=f"{t:.0%} agreement")
    for curve in curves:
        colour = KIND_COLOURS[curve.kind]
        style = {"color": colour, "marker": KIND_MARKERS[curve.kind]}
        agree_ax.plot(curve.fraction, curve.agreement, label=KIND_LABELS[curve.kind], **style)
        hover(
            agree_ax,
            curve.fraction,
            curve.agreement,
            [
                f"{KIND_LABELS[curve.kind]}: {f:.0%} removed, agreement {a:.3f}"
                + ("" if curve.low is None else f" [95 %: {curve.low[i]:.3f}, {curve.high[i]:.3f}]")
                for i, (f, a) in enumerate(zip(curve.fraction, curve.agreement, strict=True))
            ],
        )
        if curve.low is not None and curve.high is not None:
            agree_ax.fill_between(curve.fraction, curve.low, curve.high, color=colour, alpha=0.15)
        if curve.accuracy is not None:
            agree_ax.plot(
                curve.fraction,
                curve.accuracy,
                color=colour,
                ls="--",
                lw=1.2,
                label=f"{KIND_LABELS[curve.kind]}: top-1 accuracy",
            )
            if curve.accuracy_low is not None and curve.accuracy_high is not None:
                agree_ax.fill_between(
                    curve.fraction,
                    curve.accuracy_low,
                    curve.accuracy_high,
                    color=colour,
                    alpha=0.08,
                    hatch="//",
                )
        kl_ax.plot(curve.fraction, curve.kl, label=KIND_LABELS[curve.kind], **style)
        if curve.max_removable is not None:
            for ax in (agree_ax, kl_ax):
                ax.axvline(curve.max_removable, ls=":", color=colour, lw=1.2)
            agree_ax.annotate(
                f"{KIND_LABELS[curve.kind]}: {curve.max_removable:.0%}",
                xy=(curve.max_removable, 0.02),
                xycoords=("data", "axes fraction"),
                xytext=(3, 0),
                textcoords="offset points",
                color=colour,
                fontsize=7.5,
                rotation=90,
                va="bottom",
            )
    for ax in (agree_ax, kl_ax):
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("fraction of units removed")
    agree_ax.set_ylim(-0.02, 1.02)
    agree_ax.set_ylabel(
        "top-1 agreement with full model"
        + (" (dashed: accuracy)" if any(c.accuracy is not None for c in curves) else "")
    )
    kl_ax.set_ylim(bottom=0)
    kl_ax.set_ylabel("mean KL(full ‖ pruned) (nats)")
    handles, labels = agree_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    return to_svg(fig, "Top-1 agreement and KL divergence as heads and channels are removed.")
