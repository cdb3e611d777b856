"""The shapes and types a run file's content must have, checked before anyone uses it.

A run file that opens and passes its checksums can still be inconsistent (a file edited
with its manifest rewritten, or written by something else): 7 summary rows for 3
images, ``heads = 10**15``, a string where a number belongs. Each would surface later
as a confusing error deep in an analysis or the report, or as a plot of nonsense; here
it is one reason naming the element.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_run"]

Run = Layer = Any
"""``_reader.Run`` and ``_reader.Layer`` (not imported: the reader imports this module)."""

MAX_UNITS = 1 << 20
"""Most heads or channels a layer may declare (more is corruption)."""


def _count(value: Any, lowest: int = 0, highest: int = MAX_UNITS) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= highest


def _numeric(array: Any) -> bool:
    """An array or numpy scalar of numbers or booleans."""
    return isinstance(array, (np.ndarray, np.generic)) and array.dtype.kind in "biuf"


def _meta_problem(run: Run) -> str | None:
    meta = run.meta
    for key in ("model", "images_source", "weights_source"):
        if key in meta and not isinstance(meta[key], str):
            return f"root attribute {key!r} is {type(meta[key]).__name__}, not text"
    size = meta.get("input_size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 3 and all(_count(v, 1, 1 << 16) for v in size)
    ):
        return f"root attribute 'input_size' is {size!r}, not [channels, height, width]"
    done = meta.get("images_done")
    if done is not None and not _count(done, 0, 1 << 40):
        return f"root attribute 'images_done' is {done!r}, not a count"
    if run.complete and done is not None and done != len(run.sample_ids):
        return f"it claims {done} images done but lists {len(run.sample_ids)} image ids"
    for key in ("timings", "options", "data_config"):
        if key in meta and not isinstance(meta[key], dict):
            return f"root attribute {key!r} is not a mapping"
    failed = meta.get("failed_analyses")
    if failed is not None and not isinstance(failed, dict):
        return "root attribute 'failed_analyses' is not a mapping"
    return None


def _samples_problem(run: Run) -> str | None:
    if not all(isinstance(i, str) for i in run.sample_ids):
        return "samples/ids holds something other than text"
    labels = run.labels
    if not _numeric(labels) or labels.ndim != 1 or labels.dtype.kind not in "iu":
        return f"samples/labels is not a list of integers ({getattr(labels, 'shape', '?')})"
    if len(labels) != len(run.sample_ids):
        return f"samples/labels has {len(labels)} entries for {len(run.sample_ids)} image ids"
    return None


def _attention_problem(layer: Layer, images: int) -> str | None:
    heads = layer.attrs.get("heads")
    if not _count(heads, 1):
        return f"layer {layer.name!r} declares {heads!r} heads"
    geometry = layer.attrs.get("geometry", {})
    if not isinstance(geometry, dict):
        return f"layer {layer.name!r} has a geometry that is not a mapping"
    for key, array in layer.summaries.items():
        if not _numeric(array) or array.ndim < 1:
            return f"summary {key!r} of layer {layer.name!r} is not an array of numbers"
        if array.shape[0] != images:
            return (
                f"summary {key!r} of layer {layer.name!r} has {array.shape[0]} rows for "
                f"{images} images"
            )
        if array.ndim >= 2 and array.shape[1] != heads:
            return (
                f"summary {key!r} of layer {layer.name!r} has {array.shape[1]} heads, the "
                f"layer {heads}"
            )
    maps = layer.maps
    if maps is not None:
        if not _numeric(maps) or maps.ndim not in (4, 5):
            return f"the maps of layer {layer.name!r} are not 4-d or 5-d numbers"
        if maps.shape[0] > images or maps.shape[-3] != heads or 0 in maps.shape:
            return (
                f"the maps of layer {layer.name!r} have shape {maps.shape} for {images} "
                f"images of {heads} heads"
            )
    return None


def _state_problem(layer: Layer) -> str | None:
    moments = layer.moments
    if moments is not None:
        mean, comoment, count = (moments.get(k) for k in ("mean", "comoment", "count"))
        if not (_numeric(mean) and _numeric(comoment) and _numeric(count)):
            return f"the moments of layer {layer.name!r} lack mean, comoment or count"
        width = mean.shape[0] if mean.ndim == 1 else -1
        if width < 1 or count.ndim != 0 or comoment.shape not in ((width,), (width, width)):
            return (
                f"the moments of layer {layer.name!r} do not fit together (mean "
                f"{mean.shape}, comoment {comoment.shape}, count {count.shape})"
            )
    for key, array in (layer.groups or {}).items():
        if not _numeric(array):
            return f"groups/{key} of layer {layer.name!r} is not numbers"
    return _image_groups_problem(layer)


_PIECE_TAILS = {
    "count": 0, "frob": 2, "trace": 1, "quad": 2, "sum_sq": 1, "sum_weighted": 2, "norms": 2,
}  # fmt: skip
_OPEN_TAILS = {"open_images": 0, "open_count": 0, "open_sum": 1, "open_shift": 1,
               "open_cross": 2, "open_weighted": 2, "open_norms": 2}  # fmt: skip


def _image_groups_problem(layer: Layer) -> str | None:
    """The image groups of the CKA intervals fit their declared layout (indices in
    range, one entry per group, the layout's column groups)."""
    state = layer.image_groups
    if state is None:
        return None
    where = f"image_groups of layer {layer.name!r}"
    layout = state.get("layout")
    if not _numeric(layout) or layout.shape != (4,) or (np.asarray(layout) < 1).any():
        return f"{where}: layout is not four positive counts"
    count, _, groups, size = (int(v) for v in layout)
    summary, closed = state.get("summary"), state.get("closed")
    if summary is not None and (
        not _numeric(summary)
        or summary.ndim != 2
        or closed is None
        or summary.shape[0] != np.asarray(closed).size
    ):
        return f"{where}: summary does not hold one row per closed group"
    for index_key, tails in (("closed", _PIECE_TAILS), ("open", _OPEN_TAILS)):
        index = state.get(index_key)
        if index is None:
            continue
        index = np.asarray(index)
        if (
            not _numeric(index)
            or index.ndim != 1
            or ((index < 0) | (index >= count)).any()
            or len(set(index.tolist())) != index.size
        ):
            return f"{where}: {index_key} is not distinct group indices below {count}"
        for key, tail in tails.items():
            array = state.get(key)
            if not _numeric(array) or array.ndim != 1 + tail or array.shape[0] != index.size:
                return f"{where}: {key} does not hold one entry per {index_key} group"
            width = groups * size if key in ("open_sum", "open_shift", "open_cross") else groups
            if tail and array.shape[1] != width:
                return f"{where}: {key} has shape {array.shape}, the layout {groups} x {size}"
    return None


def _layer_problem(layer: Layer, images: int) -> str | None:
    if layer.kind not in ("attention", "channel"):
        return f"layer {layer.name!r} is of kind {layer.kind!r}"
    if layer.kind == "attention":
        problem = _attention_problem(layer, images)
        if problem is not None:
            return problem
    else:
        channels = layer.attrs.get("channels")
        if channels is not None and not _count(channels, 1):
            return f"layer {layer.name!r} declares {channels!r} channels"
        site = layer.attrs.get("site")
        if site is not None and not isinstance(site, dict):
            return f"layer {layer.name!r} has a site that is not a mapping"
    return _state_problem(layer)


def check_run(run: Run) -> str | None:
    """What is inconsistent in ``run`` (one phrase naming the element), or ``None``."""
    problem = _meta_problem(run) or _samples_problem(run)
    if problem is not None:
        return problem
    images = len(run.sample_ids)
    for layer in run.layers.values():
        problem = _layer_problem(layer, images)
        if problem is not None:
            return problem
    for name, tree in run.analysis.items():
        if not isinstance(tree.get("params"), dict):
            return f"the parameters of analysis {name!r} are not a mapping"
    return None
