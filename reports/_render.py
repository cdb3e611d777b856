"""Render a view model to one self-contained HTML page, and write it atomically.

One Jinja2 environment, autoescaping every expression, loads the templates
shipped in ``reports/templates``. The renderer's only work is choosing what to
show (galleries are capped to keep a report small, and the page says so) and
drawing the figures; every string in the page goes through the template.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from ._errors import ReportError
from ._figures import distance_figure, importance_figures, pruning_figure, redundancy_figure
from ._figures_compare import (
    compare_distance_figure,
    compare_pruning_figure,
    compare_redundancy_figure,
)
from ._figures_maps import erf_maps_figure, similarity_figure
from ._gallery import MAX_HEADS, attention_figure
from ._plot import KIND_LABELS, RenderedFigure, spread
from ._tables import format_cell, tables_context
from ._view import RunReport, SimilarityMatrix, Table
from ._view_compare import CompareReport, CompareRun

__all__ = ["render_compare_report", "render_run_report", "write_report"]

#: Most sample images, and layers per image, in the attention gallery.
MAX_GALLERY_IMAGES = 3
MAX_GALLERY_LAYERS = 4
#: Most ERF maps, and similarity matrices per kind and measure, drawn.
MAX_ERF_MAPS = 12
MAX_SIMILARITY_PANELS = 12


@functools.cache
def environment() -> jinja2.Environment:
    """The one Jinja2 environment of :mod:`reports` (autoescaping, strict undefined)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = format_cell
    env.filters["pct"] = lambda x: "—" if x is None else f"{x:.0%}"
    return env


@dataclass(frozen=True)
class Gallery:
    """One sample image's attention figure and what was left out."""

    image_id: str
    figure: RenderedFigure
    layers: tuple[str, ...]
    query: str


@dataclass(frozen=True)
class Section:
    """A table-of-contents entry; ``measured`` is False for a 'not measured' section."""

    id: str
    title: str
    measured: bool


def _galleries(view: RunReport) -> tuple[list[Gallery], str]:
    samples = [view.attention_maps[i] for i in spread(len(view.attention_maps), MAX_GALLERY_IMAGES)]
    galleries = []
    most_layers = most_heads = 0
    for sample in samples:
        if not sample.layers:
            continue
        layers = [sample.layers[i] for i in spread(len(sample.layers), MAX_GALLERY_LAYERS)]
        most_layers = max(most_layers, len(sample.layers))
        most_heads = max(most_heads, *(m.maps.shape[0] for m in sample.layers))
        queries = sorted({m.query for m in layers})
        galleries.append(
            Gallery(
                sample.image_id,
                attention_figure(sample, layers),
                tuple(m.layer for m in layers),
                ", ".join(queries),
            )
        )
    shown = []
    if len(view.attention_maps) > MAX_GALLERY_IMAGES:
        shown.append(f"{len(samples)} of {len(view.attention_maps)} images")
    if most_layers > MAX_GALLERY_LAYERS:
        shown.append(f"{MAX_GALLERY_LAYERS} of {most_layers} layers (evenly spaced)")
    if most_heads > MAX_HEADS:
        shown.append(f"the first {MAX_HEADS} of {most_heads} heads")
    return galleries, ("Showing " + ", ".join(shown) + ".") if shown else ""


def _similarity(matrices: Sequence[SimilarityMatrix]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[SimilarityMatrix]] = {}
    for m in matrices:
        groups.setdefault((m.kind, m.measure), []).append(m)
    out = []
    for (kind, measure), group in groups.items():
        picked = [group[i] for i in spread(len(group), MAX_SIMILARITY_PANELS)]
        out.append(
            {
                "kind": KIND_LABELS[kind],
                "measure": measure,
                "figure": similarity_figure(picked),
                "note": f"Showing {len(picked)} of {len(group)} layers (evenly spaced)."
                if len(picked) < len(group)
                else "",
            }
        )
    return out


def render_run_report(view: RunReport) -> str:
    """The HTML page of one run.

    Args:
        view: What to show; sections left empty are marked 'not measured'.

    Returns:
        A complete, self-contained HTML document.
    """
    if not isinstance(view, RunReport):
        raise ReportError(f"render_run_report needs a RunReport, got {type(view).__name__}")
    galleries, gallery_note = _galleries(view)
    with_map = [e for e in view.erf if e.map is not None]
    erf_picked = [with_map[i] for i in spread(len(with_map), MAX_ERF_MAPS)]
    context = {
        "view": view,
        "header": view.header,
        "tool_version": view.header.tool_version,
        "created": view.header.created,
        "random_runs": [view.header.model] if view.header.weights.source == "random" else [],
        "distance": distance_figure(view.attention_distance, view.erf),
        "windowed": [a.name for a in view.attention_distance if a.windowed],
        "galleries": galleries,
        "gallery_note": gallery_note,
        "erf_maps": erf_maps_figure(erf_picked),
        "erf_note": f"Showing {len(erf_picked)} of {len(with_map)} layers (evenly spaced)."
        if len(erf_picked) < len(with_map)
        else "",
        "similarity": _similarity(view.similarity),
        "redundancy": redundancy_figure(view.redundancy),
        "importance": importance_figures(view.importance),
        "pruning": pruning_figure(view.pruning),
        "tables": tables_context(view.tables, prefix=view.header.model),
    }
    measured = {
        "findings": bool(view.findings),
        "distance": context["distance"] is not None,
        "attention-maps": bool(galleries),
        "erf-maps": context["erf_maps"] is not None,
        "similarity": bool(context["similarity"]),
        "redundancy": context["redundancy"] is not None,
        "importance": bool(context["importance"]),
        "pruning": context["pruning"] is not None,
        "numbers": bool(view.tables),
        "methods": bool(view.notes),
    }
    titles = {
        "findings": "Headline findings",
        "distance": "Interaction distance vs depth",
        "attention-maps": "Attention maps",
        "erf-maps": "Effective receptive fields",
        "similarity": "Unit similarity",
        "redundancy": "Redundancy vs depth",
        "importance": "Importance",
        "pruning": "Pruning curves",
        "numbers": "Numbers",
        "methods": "Method notes",
    }
    context["sections"] = [Section(k, titles[k], measured[k]) for k in titles]
    return environment().get_template("report.html.j2").render(context)


def _summary_table(runs: Sequence[CompareRun]) -> Table:
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


def render_compare_report(view: CompareReport) -> str:
    """The HTML page comparing several runs on shared axes.

    Args:
        view: The runs and their series; a summary table (one row per run) is added.

    Returns:
        A complete, self-contained HTML document.
    """
    if not isinstance(view, CompareReport):
        raise ReportError(f"render_compare_report needs a CompareReport, got {type(view).__name__}")
    context = {
        "view": view,
        "tool_version": view.tool_version,
        "created": view.created,
        "random_runs": [r.label for r in view.runs if r.weights.source == "random"],
        "distance": compare_distance_figure(view.runs),
        "redundancy": compare_redundancy_figure(view.runs),
        "pruning": compare_pruning_figure(view.runs),
        "tables": tables_context((_summary_table(view.runs), *view.tables), prefix="compare"),
    }
    titles = {
        "runs": ("Runs", True),
        "findings": ("Headline findings", bool(view.findings)),
        "distance": ("Interaction distance vs depth", context["distance"] is not None),
        "redundancy": ("Redundancy vs depth", context["redundancy"] is not None),
        "pruning": ("Prunable fractions", context["pruning"] is not None),
        "numbers": ("Numbers", True),
        "methods": ("Method notes", bool(view.notes)),
    }
    context["sections"] = [Section(k, t, m) for k, (t, m) in titles.items()]
    return environment().get_template("compare.html.j2").render(context)


def write_report(html: str, path: str | os.PathLike[str]) -> Path:
    """Write ``html`` to ``path`` atomically (a temporary file beside it, then a rename).

    Args:
        html: The rendered page.
        path: Destination file; its folder must exist.

    Returns:
        The destination path.

    Raises:
        ReportError: When the folder does not exist or the file cannot be written.
    """
    dest = Path(path)
    if not dest.parent.is_dir():
        raise ReportError(
            f"cannot write report {dest}: folder {dest.parent} does not exist (create it first)"
        )
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(html)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"cannot write report {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
