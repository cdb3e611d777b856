"""The sections of a run report, in display order, and their builders.

Each builder turns the :class:`~reports.RunReport` into the context of its
partial (``templates/section-<id>.html.j2``): the figures, drawn by the figure
functions, and a note on what was left out. Galleries are capped to keep a
report small, and the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._explorer import explorer_context
from ._figures import distance_figure, importance_figures, pruning_figure, redundancy_figure
from ._figures_dynamics import dynamics_figures
from ._figures_maps import erf_maps_figure, similarity_figure
from ._gallery import MAX_HEADS, attention_figure
from ._plot import KIND_LABELS, RenderedFigure, spread
from ._sections import Context, SectionList, SectionSpec
from ._tables import tables_context
from ._view import AttentionSample, ErfLayer, RunReport, SimilarityMatrix

__all__ = [
    "MAX_ERF_MAPS",
    "MAX_GALLERY_IMAGES",
    "MAX_GALLERY_LAYERS",
    "MAX_SIMILARITY_PANELS",
    "RUN_SECTIONS",
    "Gallery",
]

#: Most sample images, and layers per image, in the attention gallery.
MAX_GALLERY_IMAGES = 3
MAX_GALLERY_LAYERS = 4
#: Most ERF maps, and similarity matrices per kind and measure, drawn.
MAX_ERF_MAPS = 12
MAX_SIMILARITY_PANELS = 12


@dataclass(frozen=True)
class Gallery:
    """One sample image's attention figure and what was left out."""

    image_id: str
    figure: RenderedFigure
    layers: tuple[str, ...]
    query: str


def _distance(view: RunReport) -> Context:
    return {
        "figure": distance_figure(
            view.attention_distance, view.erf, centre=True, erf_uniform=view.erf_uniform
        ),
        "windowed": [a.name for a in view.attention_distance if a.windowed],
        "centre": any(a.centre_distance is not None for a in view.attention_distance),
    }


def _mad(view: RunReport) -> Context:
    return {"figure": distance_figure(view.attention_distance, ())}


def _gallery_samples(view: RunReport) -> list[AttentionSample]:
    picked = spread(len(view.attention_maps), MAX_GALLERY_IMAGES)
    return [view.attention_maps[i] for i in picked]


def _has_gallery(view: RunReport) -> bool:
    return any(sample.layers for sample in _gallery_samples(view))


def _galleries(view: RunReport) -> Context:
    samples = _gallery_samples(view)
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
    return {
        "galleries": galleries,
        "note": ("Showing " + ", ".join(shown) + ".") if shown else "",
    }


def _with_map(view: RunReport) -> list[ErfLayer]:
    return [e for e in view.erf if e.map is not None]


def _erf_maps(view: RunReport) -> Context:
    """One series only (block outputs where measured), so the gallery does not switch
    from block outputs to attention branches half way down."""
    with_map = _with_map(view)
    if not with_map:
        return {"figure": None, "note": ""}
    series = [e.series for e in with_map]
    main = "block output" if "block output" in series else max(set(series), key=series.count)
    shown = [e for e in with_map if e.series == main]
    picked = [shown[i] for i in spread(len(shown), MAX_ERF_MAPS)]
    notes = []
    if len(picked) < len(shown):
        notes.append(f"Showing {len(picked)} of {len(shown)} layers (evenly spaced).")
    others = sorted({s for s in series if s != main})
    if others:
        notes.append(
            f"Maps of the {main} series; the {', '.join(others)} ERFs are in the distance "
            "figure and the tables."
        )
    return {"figure": erf_maps_figure(picked), "note": " ".join(notes)}


def _similarity(view: RunReport) -> Context:
    groups: dict[tuple[str, str], list[SimilarityMatrix]] = {}
    for m in view.similarity:
        groups.setdefault((m.kind, m.measure), []).append(m)
    out: list[dict[str, Any]] = []
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
    return {"groups": out}


def _tables(view: RunReport) -> Context:
    return {"tables": tables_context(view.tables, prefix=view.header.model)}


Spec = SectionSpec[RunReport]

#: The sections of a run report, in display order.
RUN_SECTIONS = SectionList(
    RunReport,
    (
        Spec(
            "verdict",
            "Verdict: heads vs channels, like for like",
            reads="verdict",
            empty_note="No verdict: no head or channel-group redundancy was measured.",
        ),
        Spec(
            "findings",
            "Headline findings",
            reads="findings",
            empty_note="No headline findings were written for this run.",
            toc_tag="none",
        ),
        Spec(
            "distance",
            "Interaction distance vs depth",
            reads=("attention_distance", "erf", "erf_uniform", "erf_warning", "pass_images"),
            build=_distance,
            measured=lambda view: bool(view.attention_distance or view.erf),
        ),
        Spec(
            "mad",
            "Mean attention distance",
            reads="attention_distance",
            build=_mad,
        ),
        Spec(
            "attention-maps",
            "Attention maps",
            reads="attention_maps",
            build=_galleries,
            measured=_has_gallery,
            empty_note="Not measured as static maps: they are drawn for global attention "
            "only (class token, or the mean over queries). Kept maps of windowed layers are "
            "in the attention explorer below; a run with --keep-maps 0 keeps none.",
        ),
        Spec(
            "explorer",
            "Attention explorer",
            reads="explorer",
            build=lambda view: explorer_context(view.explorer) if view.explorer else {},
            measured=lambda view: view.explorer is not None,
        ),
        Spec(
            "erf-maps",
            "Effective receptive fields",
            reads=("erf", "pass_images"),
            build=_erf_maps,
            measured=lambda view: bool(_with_map(view)),
        ),
        Spec(
            "dynamics",
            "Fixed vs dynamic, equivariance",
            reads="dynamics",
            build=lambda view: dynamics_figures([("", view.dynamics)]),
        ),
        Spec("similarity", "Unit similarity", reads="similarity", build=_similarity),
        Spec(
            "redundancy",
            "Redundancy vs depth",
            reads="redundancy",
            build=lambda view: {"figure": redundancy_figure(view.redundancy)},
        ),
        Spec(
            "importance",
            "Importance",
            reads="importance",
            build=lambda view: {"figures": importance_figures(view.importance)},
        ),
        Spec(
            "pruning",
            "Pruning curves",
            reads="pruning",
            build=lambda view: {"figure": pruning_figure(view.pruning)},
        ),
        Spec(
            "numbers",
            "Numbers",
            reads="tables",
            build=_tables,
            empty_note="No tables were recorded for this run.",
            toc_tag="none",
        ),
        Spec(
            "methods",
            "Method notes",
            reads="notes",
            empty_note="No method notes were recorded for this run.",
            toc_tag="none",
        ),
    ),
)
