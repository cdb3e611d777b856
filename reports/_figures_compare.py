"""Figures of a comparison report: several runs on shared axes (depth as a fraction)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._figures import DEPTH_LABEL, erf_series
from ._plot import (
    KIND_COLOURS,
    KIND_LABELS,
    OKABE_ITO,
    RenderedFigure,
    depth_line,
    hover,
    new_figure,
    styled,
    to_svg,
)
from ._view_compare import CompareRun

__all__ = ["compare_distance_figure", "compare_pruning_figure", "compare_redundancy_figure"]

_ERF_STYLES = ("--", ":", "-.")


def _colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


@styled
def compare_distance_figure(runs: Sequence[CompareRun]) -> RenderedFigure | None:
    """Mean head distance (solid) and ERF mean distance (dashed) per run against depth."""
    if not any(run.attention_distance or run.erf for run in runs):
        return None
    fig = new_figure(7.6, 4.2 + 0.12 * len(runs))
    ax = fig.add_subplot()
    for i, run in enumerate(runs):
        colour = _colour(i)
        if run.attention_distance:
            centre = all(a.centre_distance is not None for a in run.attention_distance)
            values = [
                np.nanmean(a.centre_distance) if centre else np.nanmean(a.head_distance)
                for a in run.attention_distance
            ]
            hover(
                ax,
                [a.depth for a in run.attention_distance],
                values,
                [f"{run.label} · {a.name}: mean head {v:.1f} px" for a, v in
                 zip(run.attention_distance, values, strict=True)],
            )  # fmt: skip
            ax.plot(
                [a.depth for a in run.attention_distance],
                values,
                "-o",
                color=colour,
                label=f"{run.label}: mean head "
                + ("MAD_centre" if centre else "distance (MAD, every query)"),
            )
        for style, (series, layers) in zip(
            _ERF_STYLES * 4, erf_series(run.erf).items(), strict=False
        ):
            suffix = "" if series == "ERF" else f" ({series})"
            hover(
                ax,
                [e.depth for e in layers],
                [e.mean_distance for e in layers],
                [f"{run.label} · {e.name}{suffix}: ERF {e.mean_distance:.1f} px" for e in layers],
            )
            depth_line(
                ax,
                [e.depth for e in layers],
                [e.mean_distance for e in layers],
                style,
                color=colour,
                marker="D",
                ms=3,
                label=f"{run.label}: ERF mean distance{suffix}",
            )
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(DEPTH_LABEL)
    ax.set_ylabel("mean distance (input pixels)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2)
    return to_svg(fig, "Interaction distance against depth for every run.")


@styled
def compare_redundancy_figure(runs: Sequence[CompareRun]) -> RenderedFigure | None:
    """Redundancy (1 − effective/units) against depth: heads left, channels right."""
    if not any(run.redundancy for run in runs):
        return None
    fig = new_figure(7.6, 3.3)
    panels = dict(zip(("head", "channel"), fig.subplots(1, 2, sharey=True), strict=True))
    for i, run in enumerate(runs):
        for kind, ax in panels.items():
            # one line per measure: like for like (CKA) solid with its 95 % intervals,
            # |r| between single channels dashed (a different, secondary measure)
            for secondary in (False, True):
                rows = [
                    r for r in run.redundancy
                    if r.kind == kind and ("secondary" in r.measure) is secondary
                ]  # fmt: skip
                if not rows:
                    continue
                depth = np.array([r.depth for r in rows])
                value = np.array([1.0 - r.effective_units / r.units for r in rows])
                texts = [f"{run.label} · {r.name}: redundancy {v:.2f}"
                         for r, v in zip(rows, value, strict=True)]  # fmt: skip
                hover(ax, depth, value, texts)
                depth_line(
                    ax, depth, value, "--" if secondary else "-o", ms=3.5, color=_colour(i),
                    alpha=0.5 if secondary else 1.0,
                    label=f"{run.label}" + (" (|r|, secondary)" if secondary else ""),
                )  # fmt: skip
                low = np.array([np.nan if r.redundancy_low is None else r.redundancy_low
                                for r in rows])  # fmt: skip
                high = np.array([np.nan if r.redundancy_high is None else r.redundancy_high
                                 for r in rows])  # fmt: skip
                if np.isfinite(low).any():
                    ax.vlines(depth, low, high, color=_colour(i), lw=1, alpha=0.6)
    for kind, ax in panels.items():
        ax.set_title(KIND_LABELS[kind])
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(DEPTH_LABEL)
        if not ax.lines:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", color="#777777")
    panels["head"].set_ylabel("redundancy = 1 − effective units / units")
    legend: dict[str, object] = {}
    for ax in panels.values():
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        legend.values(), legend.keys(), loc="outside lower center", ncols=min(4, len(legend))
    )
    return to_svg(
        fig,
        "Redundancy of heads and channel groups (debiased CKA, like for like, with 95 % "
        "intervals) against depth for every run; dashed: |Pearson r| between single "
        "channels (secondary).",
    )


@styled
def compare_pruning_figure(runs: Sequence[CompareRun]) -> RenderedFigure | None:
    """Largest fraction of heads and channels removable at the agreement threshold."""
    if not any(c.max_removable is not None for run in runs for c in run.pruning):
        return None
    fig = new_figure(7.6, 0.9 + 0.45 * len(runs) * 2)
    ax = fig.add_subplot()
    y = np.arange(len(runs))[::-1].astype(float)
    bar = 0.38
    for j, kind in enumerate(("head", "channel")):
        for i, run in enumerate(runs):
            curve = next((c for c in run.pruning if c.kind == kind), None)
            pos = y[i] + (0.5 - j) * bar
            if curve is None or curve.max_removable is None:
                ax.text(0.005, pos, f"{KIND_LABELS[kind]}: not measured", va="center", fontsize=7)
                continue
            ax.barh(
                pos,
                curve.max_removable,
                height=bar * 0.92,
                color=KIND_COLOURS[kind],
                label=KIND_LABELS[kind],
            )
            ax.text(
                curve.max_removable + 0.01,
                pos,
                f"{curve.max_removable:.0%} at ≥{curve.threshold:.0%}",
                va="center",
                fontsize=7.5,
            )
    ax.set_yticks(y, [run.label for run in runs])
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("largest fraction of units removable (top-1 agreement ≥ threshold)")
    ax.grid(axis="y", visible=False)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="lower right")
    return to_svg(fig, "Largest prunable fraction of heads and channels for every run.")
