"""The sections of a comparison report, in display order, and their builders.

The findings and method-notes partials are shared with the run report; the
others are ``templates/section-runs.html.j2`` and
``templates/section-compare-<id>.html.j2``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._figures_compare import (
    compare_distance_figure,
    compare_pruning_figure,
    compare_redundancy_figure,
)
from ._figures_dynamics import dynamics_figures
from ._sections import Context, SectionList, SectionSpec
from ._tables import tables_context
from ._view import Table
from ._view_compare import CompareReport, CompareRun

__all__ = ["COMPARE_SECTIONS", "summary_table"]


def summary_table(runs: Sequence[CompareRun]) -> Table:
    """One row per run: model, weights, layer counts and prunable fractions."""
    rows = []
    for run in runs:
        prune = {c.kind: c.max_removable for c in run.pruning}
        rows.append(
            (
                run.label,
                run.model,
                run.weights.source,
                len(run.attention_distance),
                len(run.erf),
                prune.get("head"),
                prune.get("channel"),
            )
        )
    columns = (
        "run",
        "model",
        "weights",
        "attention layers",
        "ERF layers",
        "prunable heads",
        "prunable channels",
    )
    return Table("summary", columns, tuple(rows), "One row per run.")


def _tables(view: CompareReport) -> Context:
    tables = (summary_table(view.runs), *view.tables)
    return {"tables": tables_context(tables, prefix="compare")}


def _always(view: CompareReport) -> bool:
    return True


def _any_removable(view: CompareReport) -> bool:
    return any(c.max_removable is not None for run in view.runs for c in run.pruning)


Spec = SectionSpec[CompareReport]

#: The sections of a comparison report, in display order.
COMPARE_SECTIONS = SectionList(
    CompareReport,
    (
        Spec(
            "verdict",
            "Verdict: heads vs channels, like for like",
            reads="verdict",
            empty_note="No verdict: no head or channel-group redundancy was measured.",
        ),
        Spec("runs", "Runs", reads=("runs", "runs.images", "runs.pass_images"), measured=_always),
        Spec(
            "findings",
            "Headline findings",
            reads="findings",
            empty_note="No headline findings were written for this comparison.",
            toc_tag="none",
        ),
        Spec(
            "distance",
            "Interaction distance vs depth",
            reads=("runs.attention_distance", "runs.erf"),
            build=lambda view: {"figure": compare_distance_figure(view.runs)},
            template="section-compare-distance.html.j2",
        ),
        Spec(
            "dynamics",
            "Fixed vs dynamic, equivariance",
            reads="runs.dynamics",
            build=lambda view: dynamics_figures([(r.label, r.dynamics) for r in view.runs]),
            template="section-compare-dynamics.html.j2",
        ),
        Spec(
            "redundancy",
            "Redundancy vs depth",
            reads="runs.redundancy",
            build=lambda view: {"figure": compare_redundancy_figure(view.runs)},
            template="section-compare-redundancy.html.j2",
        ),
        Spec(
            "pruning",
            "Prunable fractions",
            reads="runs.pruning",
            build=lambda view: {"figure": compare_pruning_figure(view.runs)},
            measured=_any_removable,
            template="section-compare-pruning.html.j2",
        ),
        Spec(
            "numbers",
            "Numbers",
            reads=("tables", "runs"),
            build=_tables,
            measured=_always,
            template="section-compare-numbers.html.j2",
            toc_tag="none",
        ),
        Spec(
            "methods",
            "Method notes",
            reads="notes",
            empty_note="No method notes were recorded for this comparison.",
            toc_tag="none",
        ),
    ),
)
