"""The only bridge from a run file to the report view model (``reports`` renders it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import reports

from .._images import builtin_images_dir
from .._version import __version__
from ..analyzers import GLOBAL, LOCAL, ErfLayer
from ..store import Run, table_rows
from ._rows import RunResults, agreement_text, in_model_order, layer_rows

__all__ = ["compare_view", "run_view", "write_compare_report", "write_run_report"]


_KIND = {"heads": "head", "channels": "channel"}

_NOTES = (
    "Mean attention distance (docs/metrics.md §1): rows renormalised over spatial keys "
    "(prefix tokens excluded), mean over spatial queries, self pair included, pixel "
    "distances between token centres on the model's own grid (never sqrt(N)); mean over "
    "images. The raw variant and the prefix mass are stored in the run file.",
    "Effective receptive field (§3): mean over images of |∂s/∂x| summed over colour "
    "channels, s = Σ_c y[c, centre]; transformer blocks after the residual, attention "
    "branches before it. ERF mean distance is directly comparable with attention distance.",
    "Redundancy (§4): heads compared by debiased linear CKA of their outputs (unbiased "
    "HSIC), channels by Pearson correlation (|r|) and, like for like, by debiased CKA on "
    "groups of head width. Redundancy = 1 − effective units / units, with the effective "
    "number the participation ratio of the similarity matrix's eigenvalues.",
    "Importance and pruning (§5): |∂L/∂ξ| of a gate on each unit, L the cross-entropy of "
    "the model's own top-1; per-layer L2 then model-wide min–max normalisation. Units are "
    "removed in increasing importance; agreement is top-1 agreement with the full model.",
    f"Findings call a head local below {LOCAL:.0%} and global above {GLOBAL:.0%} of the "
    "distance uniform attention would have on the same grid.",
)


def _depths(run: Run, erf: Mapping[str, ErfLayer], names: Sequence[str]) -> dict[str, float]:
    """Depth as a fraction of the network: blocks passed so far / all blocks."""
    order = {n: i for i, n in enumerate(run.meta.get("module_order", []))}
    anchors = sorted(order.get(n, 0) for n, v in erf.items() if v.branch in ("block", "conv"))
    total = max(len(order), 1)
    out = {}
    for name in names:
        position = order.get(name, 0)
        if anchors:
            passed = sum(1 for a in anchors if a <= position)
            out[name] = passed / len(anchors)
        else:
            out[name] = (position + 1) / total
    return out


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _image(run: Run, sample_id: str) -> np.ndarray | None:
    from PIL import Image

    source = str(run.meta.get("images_source", ""))
    root = builtin_images_dir() if source == "builtin" else Path(source)
    path = root / sample_id if root.is_dir() else root
    if not path.is_file():
        return None
    height, width = run.meta.get("input_size", [3, 224, 224])[-2:]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((width, height)))


def _gallery(run: Run, depth: dict[str, float]) -> tuple[reports.AttentionSample, ...]:
    layers = [
        layer
        for layer in run.attention_layers()
        if layer.maps is not None
        and layer.maps.ndim == 4
        and layer.attrs.get("geometry", {}).get("kind") == "global"
    ]
    if not layers:
        return ()
    picks = [layers[i] for i in sorted({round(x) for x in np.linspace(0, len(layers) - 1, 4)})]
    samples = []
    for index, sample_id in enumerate(run.sample_ids[:3]):
        image = _image(run, sample_id)
        if image is None:
            continue
        panels = []
        for layer in picks:
            if index >= len(layer.maps):
                continue
            geometry = layer.attrs["geometry"]
            prefix, (rows, cols) = geometry["prefix"], geometry["grid"]
            maps = layer.maps[index].astype(np.float64)  # [head, query, key]
            if prefix:
                grid, query = maps[:, 0, prefix:], "first prefix token (class)"
            else:
                grid, query = maps[:, :, :].mean(1), "mean over queries"
            panels.append(
                reports.AttentionMaps(layer.name, grid.reshape(-1, rows, cols), query=query)
            )
        if panels:
            samples.append(reports.AttentionSample(sample_id, image, tuple(panels)))
    return tuple(samples)


def _weights(run: Run) -> reports.WeightsInfo:
    source = str(run.meta.get("weights_source", ""))
    shown = source if source in ("pretrained", "random", "file") else "file"
    detail = str(run.meta.get("weights_path", "")) if shown == "file" else ""
    reason = str(run.meta.get("weights_reason", ""))
    if detail and detail in reason:  # the reason names the file already: say it once
        detail = ""
    return reports.WeightsInfo(shown, reason, detail)


def _sections(run: Run, results: RunResults) -> dict[str, Any]:
    erf_layers = results.erf.layers if results.erf else {}
    depth = _depths(run, erf_layers, [*run.layers, *erf_layers])
    distance = in_model_order(run, dict(results.distance.layers) if results.distance else {})
    erf = in_model_order(run, dict(erf_layers))
    heads = in_model_order(run, dict(results.heads.layers) if results.heads else {})
    channels = in_model_order(run, dict(results.channels.layers) if results.channels else {})
    importance = in_model_order(run, dict(results.importance.layers) if results.importance else {})
    pruning = results.pruning.summary if results.pruning else {}
    threshold = results.pruning.threshold if results.pruning else math.nan
    series = {"block": "block output", "attention": "attention branch", "conv": "convolution"}
    out: dict[str, Any] = {
        "attention_distance": tuple(
            reports.AttentionDistance(
                name, depth[name], v.mean, _float(v.uniform), v.std, v.windowed
            )
            for name, v in distance.items()
        ),
        "erf": tuple(
            reports.ErfLayer(
                name,
                depth[name],
                float(v.mean_distance),
                _float(v.radius_50),
                _float(v.radius_90),
                series.get(v.branch, "ERF"),
                v.map,
                v.centre,
            )
            for name, v in erf.items()
        ),
        "redundancy": tuple(
            reports.RedundancyLayer(
                name,
                depth[name],
                kind,
                int(v.units),
                float(v.effective_units),
                float(v.mean_similarity),
                _float(v.mean_max_similarity),
                measure,
            )
            for kind, measure, source in (
                ("head", "debiased CKA", heads),
                ("channel", "|Pearson r|", channels),
            )
            for name, v in source.items()
            if _float(v.effective_units) is not None
        ),
        "similarity": tuple(
            reports.SimilarityMatrix(name, "head", np.nan_to_num(v.cka), "debiased CKA")
            for name, v in heads.items()
        ),
        "importance": tuple(
            reports.ImportanceLayer(name, depth.get(name, 0.0), _KIND[v.kind], v.normalised)
            for name, v in importance.items()
        ),
        "pruning": tuple(
            reports.PruningCurve(
                _KIND[kind],
                v.fractions,
                v.agreement,
                v.kl,
                _float(v.prunable_fraction),
                threshold=threshold,
            )
            for kind, v in pruning.items()
        ),
    }
    return out


def _findings(run: Run, sections: dict[str, Any]) -> tuple[str, ...]:
    found = []
    distances = sections["attention_distance"]
    for item in [distances[0], distances[-1]] if distances else []:
        if item.uniform_distance is None:
            continue
        local = int(np.sum(item.head_distance < LOCAL * item.uniform_distance))
        wide = int(np.sum(item.head_distance > GLOBAL * item.uniform_distance))
        found.append(
            f"{item.name}: {local} of {item.head_distance.size} heads are local "
            f"(< {LOCAL * item.uniform_distance:.0f} px), {wide} global "
            f"(> {GLOBAL * item.uniform_distance:.0f} px)"
        )
    curves = sections["pruning"]
    if curves:
        parts = [
            f"{c.max_removable:.0%} of {c.kind}s" for c in curves if c.max_removable is not None
        ]
        found.append(
            f"{' vs '.join(parts)} can be removed at {agreement_text(curves[0].threshold)} "
            "top-1 agreement"
        )
    erf = [e for e in sections["erf"] if e.series != "attention branch"]
    if len(erf) > 1:
        found.append(
            f"ERF mean distance grows from {erf[0].mean_distance:.0f} px ({erf[0].name}) "
            f"to {erf[-1].mean_distance:.0f} px ({erf[-1].name})"
        )
    for kind in ("head", "channel"):
        layers = [r for r in sections["redundancy"] if r.kind == kind]
        if layers:
            top = max(layers, key=lambda r: 1 - r.effective_units / r.units)
            found.append(
                f"{kind}s are most redundant in {top.name}: "
                f"{top.effective_units:.1f} effective of {top.units}"
            )
    if run.meta.get("weights_source") == "random":
        found.append("weights are RANDOM: these numbers describe an untrained network")
    return tuple(found)


def _table(run: Run, results: RunResults) -> reports.Table:
    rows = layer_rows(run, results)
    columns = (
        "layer",
        "kind",
        "units",
        "MAD px",
        "MAD min",
        "MAD max",
        "ERF px",
        "r50 px",
        "redundancy",
    )
    cells = tuple(
        (
            r.layer,
            r.kind,
            r.units,
            _float(r.distance),
            _float(r.distance_min),
            _float(r.distance_max),
            _float(r.erf_distance),
            _float(r.erf_radius_50),
            _float(r.redundancy),
        )
        for r in rows
    )
    return reports.Table("per-layer numbers", columns, cells, "one row per captured or ERF layer")


def _head_table(run: Run) -> reports.Table | None:
    """One row per head: every per-head field of the run's results (the columns of
    ``Run.to_dataframe("heads")``, built from the declarations, so interval fields appear
    as they are added), and the head's locality."""
    rows = table_rows(run, "heads")
    if not rows:
        return None
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    names = tuple(columns)
    cells = tuple(tuple(_cell(row.get(c)) for c in names) for row in rows)
    return reports.Table(
        "per-head numbers",
        names,
        cells,
        "one row per attention head: distance (px), entropy (nats), prefix mass, importance, "
        f"locality (local below {LOCAL:.0%}, global above {GLOBAL:.0%} of the uniform "
        "distance); docs/metrics.md §1, §2, §5",
    )


def _cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return _float(value)
    return value


def run_view(run: Run) -> reports.RunReport:
    """The run report's view model, from the run file alone (images re-read for overlays)."""
    results = RunResults.of(run)
    sections = _sections(run, results)
    meta = run.meta
    warnings = []
    if not run.complete:
        warnings.append("this run is incomplete")
    broken = [n for n, layer in run.layers.items() if layer.attrs.get("nonfinite_batches")]
    if broken:
        more = f" and {len(broken) - 8} more" if len(broken) > 8 else ""
        warnings.append(
            f"NaN or inf activations in {len(broken)} layer(s): {', '.join(broken[:8])}{more}; "
            "their metrics are not reported"
        )
    notes = {
        name: note for analysis in run.analysis for name, note in run.result(analysis).notes.items()
    }
    warnings += [f"{name}: {note}" for name, note in list(notes.items())[:6]]
    timings = meta.get("timings") if isinstance(meta.get("timings"), dict) else {}
    header = reports.RunHeader(
        model=str(meta.get("model", "")),
        requested=str(meta.get("model_requested", "")),
        weights=_weights(run),
        image_ids=tuple(run.sample_ids),
        input_size=tuple(meta.get("input_size", [3, 0, 0])[-2:]),
        timings=tuple((k, float(v)) for k, v in timings.items()),
        tool_version=str(meta.get("tool_version", "")),
        created=str(meta.get("created", "")),
        warnings=tuple(warnings),
        extra=(
            ("timm", str(meta.get("timm_version", ""))),
            ("torch", str(meta.get("torch_version", ""))),
            ("device", str(meta.get("device", ""))),
        ),
    )
    return reports.RunReport(
        header=header,
        findings=_findings(run, sections),
        attention_maps=_gallery(run, {}),
        notes=_NOTES,
        tables=tuple(t for t in (_head_table(run), _table(run, results)) if t is not None),
        **sections,
    )


def write_run_report(run: Run, path: str | Path) -> Path:
    """Render and atomically write the run report."""
    return reports.write_report(reports.render_run_report(run_view(run)), Path(path))


def compare_view(runs: Sequence[Run]) -> reports.CompareReport:
    """One report comparing runs on shared axes (depth as a fraction of the network)."""
    items = []
    labels: set[str] = set()
    for run in runs:
        label = run.model
        if label in labels:
            label = f"{label} ({run.meta.get('weights_source')}, {run.path.name})"
        labels.add(label)
        sections = _sections(run, RunResults.of(run))
        items.append(
            reports.CompareRun(
                label,
                run.model,
                _weights(run),
                sections["attention_distance"],
                sections["erf"],
                sections["redundancy"],
                sections["pruning"],
            )
        )
    return reports.CompareReport(
        tuple(items),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tool_version=__version__,
        findings=_compare_findings(items),
        notes=_NOTES,
    )


def _compare_findings(items: Sequence[reports.CompareRun]) -> tuple[str, ...]:
    found = []
    for item in items:
        parts = []
        if item.attention_distance:
            first, last = item.attention_distance[0], item.attention_distance[-1]
            parts.append(
                f"mean head distance {float(np.nanmean(first.head_distance)):.0f} px "
                f"({first.name}) to {float(np.nanmean(last.head_distance)):.0f} px ({last.name})"
            )
        blocks = [e for e in item.erf if e.series != "attention branch"]
        if blocks:
            parts.append(
                f"ERF mean distance {blocks[0].mean_distance:.0f} to "
                f"{blocks[-1].mean_distance:.0f} px"
            )
        removable = [
            f"{c.max_removable:.0%} of {c.kind}s"
            for c in item.pruning
            if c.max_removable is not None
        ]
        if removable:
            threshold = agreement_text(item.pruning[0].threshold)
            parts.append(" and ".join(removable) + f" removable at {threshold} agreement")
        if parts:
            found.append(f"{item.label}: " + "; ".join(parts))
    return tuple(found)


def write_compare_report(runs: Sequence[Run], path: str | Path) -> Path:
    return reports.write_report(reports.render_compare_report(compare_view(runs)), Path(path))
