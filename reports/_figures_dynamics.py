"""Fixed vs dynamic interaction and translation equivariance against depth (METRICS §8-9),
for one run or several on shared axes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._figures import DEPTH_LABEL
from ._plot import OKABE_ITO, RenderedFigure, new_figure, styled, to_svg
from ._view import DynamicsLayer

__all__ = ["dependence_figure", "dynamics_figures", "equivariance_figure"]


def _value(v: float | None) -> float:
    return np.nan if v is None else float(v)


@styled
def dependence_figure(
    runs: Sequence[tuple[str, Sequence[DynamicsLayer]]],
) -> RenderedFigure | None:
    """Normalised input dependence vs depth: heads as points, ERF maps as lines; the
    references 0 (a linear convolution stack: one map for every image) and 1 (every
    image its own disjoint map)."""
    if not any(
        layer.head_dependence is not None or layer.dependence is not None
        for _, layers in runs
        for layer in layers
    ):
        return None
    fig = new_figure(7.6, 4.1)
    ax = fig.add_subplot()
    ax.axhline(0, color="#333333", lw=1.1, label="linear conv stack (fixed): 0")
    ax.axhline(1, color="#333333", lw=1.1, ls="--", label="disjoint map per image: 1")
    for i, (label, layers) in enumerate(runs):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        prefix = f"{label}: " if len(runs) > 1 else ""
        xs, ys = [], []
        for layer in layers:
            if layer.head_dependence is not None:
                xs.extend([layer.depth] * layer.head_dependence.size)
                ys.extend(layer.head_dependence.tolist())
        if xs:
            ax.scatter(xs, ys, s=16, color=colour, alpha=0.6, label=f"{prefix}head")
        for series, marker in (
            ("block output", "-D"),
            ("convolution", "-D"),
            ("attention branch", ":s"),
        ):
            chosen = [
                item for item in layers if item.series == series and item.dependence is not None
            ]
            if chosen:
                ax.plot(
                    [item.depth for item in chosen],
                    [_value(item.dependence) for item in chosen],
                    marker,
                    color=colour,
                    ms=3.2,
                    lw=1.6,
                    label=f"{prefix}ERF map ({series})",
                )
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel(DEPTH_LABEL)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("input dependence D / ln min(images, keys)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)))
    return to_svg(fig, "Normalised input dependence per head and per ERF map against depth.")


@styled
def equivariance_figure(
    runs: Sequence[tuple[str, Sequence[DynamicsLayer]]],
) -> RenderedFigure | None:
    """E vs depth at a stride-multiple shift (with its interval) and a sub-stride shift;
    the references 1 (a circular convolution stack) and the unaligned cosine."""
    if not any(layer.equivariance is not None for _, layers in runs for layer in layers):
        return None
    fig = new_figure(7.6, 4.1)
    ax = fig.add_subplot()
    ax.axhline(1, color="#333333", lw=1.1, label="circular conv stack: 1")
    for i, (label, layers) in enumerate(runs):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        prefix = f"{label}: " if len(runs) > 1 else ""
        chosen = [
            item
            for item in layers
            if item.equivariance is not None and item.series != "attention branch"
        ]
        if not chosen:
            continue
        depth = np.array([item.depth for item in chosen])
        e = np.array([_value(item.equivariance) for item in chosen])
        low = np.array([_value(item.equivariance_low) for item in chosen])
        high = np.array([_value(item.equivariance_high) for item in chosen])
        ax.fill_between(depth, low, high, color=colour, alpha=0.2, lw=0)
        ax.plot(depth, e, "-D", color=colour, ms=3.2, lw=1.6, label=f"{prefix}E, shift = stride")
        ax.plot(
            depth,
            [_value(item.sub_equivariance) for item in chosen],
            "--",
            color=colour,
            lw=1.2,
            label=f"{prefix}E, shift = stride / 2",
        )
        ax.plot(
            depth,
            [_value(item.unaligned) for item in chosen],
            ":",
            color=colour,
            lw=1.2,
            label=f"{prefix}unaligned reference",
        )
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel(DEPTH_LABEL)
    ax.set_ylabel("E: cos(y(shifted x), shifted y(x))")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)))
    return to_svg(fig, "Translation equivariance per layer against depth.")


def dynamics_figures(runs: Sequence[tuple[str, Sequence[DynamicsLayer]]]) -> dict[str, list]:
    """The section's context: ``figures``, the two plots that have data."""
    drawn = (dependence_figure(runs), equivariance_figure(runs))
    return {"figures": [f for f in drawn if f is not None]}
