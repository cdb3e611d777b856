"""The only bridge from a run file to the report view model (``reports`` renders it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import reports

from .._errors import InspectorError, RunFileError
from .._files import regular_file_problem
from .._images import builtin_images_dir, decode_image
from .._version import __version__
from ..analyzers import (
    GLOBAL,
    LOCAL,
    EquivarianceResult,
    ErfLayer,
    InputDependenceResult,
    uniform_erf_distance,
)
from ..store import Run
from ._dynamics import dynamics_rows
from ._explorer import explorer_view
from ._report_tables import dynamics_table, head_table, layer_table, number
from ._rows import (
    RunResults,
    _optional,
    agreement_text,
    failed_analyses,
    in_model_order,
    layer_rows,
    pass_counts,
)
from ._verdict import compare_verdict, verdict

__all__ = ["compare_view", "run_view", "write_compare_report", "write_run_report"]


_KIND = {"heads": "head", "channels": "channel"}

_NOTES = (
    "Mean attention distance (docs/metrics.md §1): rows renormalised over spatial keys "
    "(prefix tokens excluded), mean over spatial queries, self pair included, pixel "
    "distances between token centres on the model's own grid (never sqrt(N)); mean over "
    "images. The raw variant and the prefix mass are stored in the run file.",
    "Effective receptive field (§3): mean over images of |∂s/∂x| summed over colour "
    "channels, s = Σ_c y[c, centre]; transformer blocks after the residual, attention "
    "branches before it; 95 % percentile-bootstrap interval over images of its mean "
    "distance. The ERF is cumulative (the input's influence through every layer below), "
    "attention distance is one layer's own reach: ERF mean distance is compared with the "
    "centre-query distance MAD_centre (both measured from the centre unit), never with "
    "MAD, which averages over every query, corners included. The theoretical receptive "
    "field (TRF) is the side of the input region that can reach the centre unit at all, "
    "from the traced kernel, stride, dilation and padding arithmetic ('all' after global "
    "attention or pooling). RepLKNet area ratios follow their protocol (ReLU'd centre "
    "activations and gradients, log10(M + 1) / max, squares centred on the unit's pixel); "
    "they depend on the input size (published at 1024 px) and the map's scale.",
    "Redundancy (§4): heads compared by debiased linear CKA of their outputs (unbiased "
    "HSIC), channels by Pearson correlation (|r|) and, like for like, by debiased CKA on "
    "groups of head width. Redundancy = 1 − effective units / units, with the effective "
    "number the participation ratio of the similarity matrix's eigenvalues (for |r|, with "
    "the first-order small-sample correction). Rows are token positions drawn at random, "
    "stratified over the grid, per image (--positions); a layer with fewer rows than 5 × "
    "its width is flagged. The CKA redundancy's 95 % interval is a batch-means interval "
    "over up to 20 contiguous image groups (t with groups − 1 degrees of freedom); the |r| "
    "summaries' the same way, from each group's own correlation matrix.",
    "Importance and pruning (§5): |∂L/∂ξ| of a gate on each unit, L the cross-entropy of "
    "the model's own top-1 (the label where given), estimated on the first images; units "
    "are removed in increasing importance (the order is stated with the curve) and the "
    "curve is measured on the held-out rest; agreement is top-1 agreement with the full "
    "model with a 95 % Wilson interval, and a fraction counts as removable only when the "
    "interval's lower bound clears the threshold.",
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


def _image(run: Run, sample_id: str) -> np.ndarray | None:

    source = str(run.meta.get("images_source", ""))
    root = builtin_images_dir() if source == "builtin" else Path(source)
    path = root / sample_id if root.is_dir() else root
    if regular_file_problem(path) is not None:  # gone, or a pipe or device: no picture
        return None
    height, width = run.meta.get("input_size", [3, 224, 224])[-2:]
    try:
        image = decode_image(path)
    except Exception:  # changed or damaged since the run: the gallery leaves it out
        return None
    return np.asarray(image.resize((width, height)))


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
    grouped = {n: v.grouped for n, v in channels.items() if v.grouped is not None}
    importance = in_model_order(run, dict(results.importance.layers) if results.importance else {})
    pruning = results.pruning.summary if results.pruning else {}
    threshold = results.pruning.threshold if results.pruning else math.nan
    series = {"block": "block output", "attention": "attention branch", "conv": "convolution"}
    out: dict[str, Any] = {
        "attention_distance": tuple(
            reports.AttentionDistance(
                name,
                depth[name],
                v.mean,
                number(v.uniform),
                v.std,
                v.windowed,
                centre_distance=v.centre_mean,
                centre_uniform=number(v.centre_uniform),
                head_interval=_pair(v.mean_low, v.mean_high),
                centre_interval=_pair(v.centre_low, v.centre_high),
            )
            for name, v in distance.items()
        ),
        "erf": tuple(
            reports.ErfLayer(
                name,
                depth[name],
                float(v.mean_distance),
                number(v.radius_50),
                number(v.radius_90),
                series.get(v.branch, "ERF"),
                v.map,
                v.centre,
                low=number(v.mean_distance_low),
                high=number(v.mean_distance_high),
                theoretical_rf=None if v.theoretical_rf is None else float(v.theoretical_rf),
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
                number(v.mean_max_similarity),
                measure,
                number(v.redundancy_low),
                number(v.redundancy_high),
                int(v.rows or 0),
                bool(v.sample_limited),
            )
            for kind, measure, source in (
                ("head", "debiased CKA", heads),
                ("channel", "debiased CKA, channel groups", grouped),
                ("channel", "|Pearson r|, secondary", channels),
            )
            for name, v in source.items()
            if number(v.effective_units) is not None
        ),
        "similarity": tuple(
            reports.SimilarityMatrix(name, "head", np.nan_to_num(v.cka), "debiased CKA")
            for name, v in heads.items()
        )
        + tuple(
            reports.SimilarityMatrix(
                name, "channel", np.nan_to_num(v.grouped_cka), "debiased CKA, channel groups"
            )
            for name, v in channels.items()
            if v.grouped_cka is not None
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
                number(v.prunable_fraction),
                threshold=threshold,
                low=v.agreement_low,
                high=v.agreement_high,
                images=int(v.images or 0),
                importance_images=int(v.importance_images or 0),
                accuracy=v.accuracy,
                accuracy_low=v.accuracy_low,
                accuracy_high=v.accuracy_high,
                labelled=int(v.labelled or 0),
            )
            for kind, v in pruning.items()
        ),
    }
    height, width = (run.meta.get("input_size") or [3, 224, 224])[-2:]
    model = results.erf.summary.get("model") if results.erf else None
    out["erf_uniform"] = uniform_erf_distance(int(height), int(width)) if erf else None
    out["erf_warning"] = model.reason if model is not None and model.degenerate else ""
    out["pass_images"] = tuple(pass_counts(results))
    out["dynamics"] = _dynamics(run, depth)
    return out


def _dynamics(run: Run, depth: Mapping[str, float]) -> tuple[reports.DynamicsLayer, ...]:
    """Input dependence and equivariance per layer (one view record per row)."""
    series = {"block": "block output", "attention": "attention branch", "conv": "convolution"}
    items = []
    for row in dynamics_rows(
        _optional(run, InputDependenceResult), _optional(run, EquivarianceResult)
    ):
        heads = row.heads_normalised if row.heads.size else None
        base = {
            "depth": depth.get(row.layer, 0.0),
            "dependence": number(row.erf_normalised),
            "dependence_nats": number(row.erf),
            "dependence_low": number(row.erf_low),
            "dependence_high": number(row.erf_high),
            "equivariance": number(row.equivariance),
            "equivariance_low": number(row.low),
            "equivariance_high": number(row.high),
            "sub_equivariance": number(row.sub),
            "unaligned": number(row.unaligned),
        }
        if heads is not None:  # the heads of an attention module: their own record
            items.append(
                reports.DynamicsLayer(
                    row.layer, depth.get(row.layer, 0.0), "attention heads", heads
                )
            )
        if any(v is not None for k, v in base.items() if k != "depth"):
            items.append(
                reports.DynamicsLayer(
                    row.layer, series=series.get(row.branch, "block output"), **base
                )
            )
    return tuple(items)


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
    if sections.get("erf_warning"):
        found.append(f"ERF not interpreted: {sections['erf_warning']}")
    elif len(erf) > 1:
        found.append(_erf_change(erf[0], erf[-1], len(run.sample_ids)))
    for kind, what in (("head", "heads"), ("channel", "channel groups")):
        # like for like only: |r| over single channels is a different, secondary measure
        layers = [
            r for r in sections["redundancy"] if r.kind == kind and "secondary" not in r.measure
        ]
        if layers:
            top = max(layers, key=lambda r: 1 - r.effective_units / r.units)
            found.append(
                f"{what} are most redundant in {top.name} ({top.measure}): "
                f"{top.effective_units:.1f} effective of {top.units}"
                + interval_suffix(top.redundancy_low, top.redundancy_high)
            )
    if run.meta.get("weights_source") == "random":
        found.append("weights are RANDOM: these numbers describe an untrained network")
    return tuple(found)


def _pair(low: np.ndarray | None, high: np.ndarray | None) -> np.ndarray | None:
    """``[2, n]`` interval ends, or None when either is missing."""
    if low is None or high is None:
        return None
    return np.vstack([np.asarray(low, dtype=float), np.asarray(high, dtype=float)])


def interval_suffix(low: float | None, high: float | None) -> str:
    """`` (redundancy 95 % [low, high])`` when an interval exists, else nothing."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    return f" (redundancy 95 % [{low:.2f}, {high:.2f}])"


def _erf_change(first: reports.ErfLayer, last: reports.ErfLayer, images: int) -> str:
    """The finding on the ERF from the first to the last layer, worded from the intervals:
    'grows' or 'shrinks' only when they do not overlap."""
    a, b = first.mean_distance, last.mean_distance
    both = f"{a:.0f} px ({first.name}) to {b:.0f} px ({last.name})"
    if None in (first.low, first.high, last.low, last.high):
        verb = "grows" if b > a else "shrinks" if b < a else "stays"
        return f"ERF mean distance {verb} from {both} (no interval)"
    if first.high < last.low:  # type: ignore[operator]
        return f"ERF mean distance grows from {both}"
    if first.low > last.high:  # type: ignore[operator]
        return f"ERF mean distance shrinks from {both}"
    return f"ERF mean distance from {both}: the change is not resolved at {images} images"


def _grouped(notes: Mapping[str, str], shown: int = 4) -> list[str]:
    """One line per distinct note, naming the layers it is about."""
    by_note: dict[str, list[str]] = {}
    for name, note in notes.items():
        by_note.setdefault(note, []).append(name)
    lines = []
    for note, names in by_note.items():
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        lines.append(f"{', '.join(names[:shown])}{more}: {note}")
    return lines


def run_view(run: Run) -> reports.RunReport:
    """The run report's view model, from the run file alone (images re-read for overlays)."""
    results = RunResults.of(run)
    sections = _sections(run, results)
    meta = run.meta
    warnings = []
    if not run.complete:
        warnings.append("this run is incomplete")
    if sections["erf_warning"]:
        warnings.append(sections["erf_warning"])
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
    warnings += [f"analysis {name} failed: {why}" for name, why in failed_analyses(run).items()]
    warnings += _grouped(notes)
    limited = [r.layer for r in layer_rows(run, results) if r.sample_limited]
    if limited:
        warnings.append(
            f"{len(limited)} layer(s) sample-limited (rows < 5 x width): "
            f"{', '.join(limited[:6])}{' ...' if len(limited) > 6 else ''}; raise --positions"
        )
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
    answer = verdict(results, len(run.sample_ids))
    return reports.RunReport(
        header=header,
        findings=_findings(run, sections),
        verdict=tuple(
            t for t in (answer.overall, answer.heads, *answer.blocks, *answer.dynamics) if t
        ),
        attention_maps=_gallery(run, {}),
        explorer=explorer_view(run, lambda sample_id: _image(run, sample_id)),
        notes=_NOTES,
        tables=tuple(
            t
            for t in (head_table(run), layer_table(run, results), dynamics_table(run))
            if t is not None
        ),
        **sections,
    )


_INCONSISTENT = (
    reports.ReportError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    ArithmeticError,
)
"""What building or rendering a view raises on numbers that do not fit together (a
``ViewError`` from a record's checks, a ``KeyError`` for a missing field): the run file
is inconsistent, even when its checksums match (it was edited and re-sealed, or written
by something else)."""


def _render(runs: Sequence[Run], render: Any) -> str:
    """``render()``, its failures on inconsistent data turned into one clean line."""
    try:
        return str(render())
    except _INCONSISTENT as exc:
        files = ", ".join(str(run.path) for run in runs)
        detail = " ".join(str(exc).split())[:300]
        raise RunFileError(
            f"{files} holds data its report cannot show ({type(exc).__name__}: {detail}); "
            "the file is inconsistent (edited, or not written by inspector): run the "
            "analysis again"
        ) from exc


def _write(html: str, path: str | Path) -> Path:
    try:
        return reports.write_report(html, Path(path))
    except reports.ReportError as exc:  # a folder that is missing, read-only or full
        raise InspectorError(str(exc)) from exc


def write_run_report(run: Run, path: str | Path) -> Path:
    """Render and atomically write the run report.

    Raises:
        RunFileError: The run's content cannot be shown (inconsistent numbers).
        InspectorError: The report cannot be written (folder missing, read-only, full).
    """
    return _write(_render([run], lambda: reports.render_run_report(run_view(run))), path)


def compare_view(runs: Sequence[Run]) -> reports.CompareReport:
    """One report comparing runs on shared axes (depth as a fraction of the network)."""
    items = []
    degenerate: dict[str, str] = {}
    labels: set[str] = set()
    answers: list[tuple[str, RunResults, int]] = []
    for run in runs:
        label = run.model
        if label in labels:
            label = f"{label} ({run.meta.get('weights_source')}, {run.path.name})"
        labels.add(label)
        results = RunResults.of(run)
        answers.append((label, results, len(run.sample_ids)))
        sections = _sections(run, results)
        if sections["erf_warning"]:
            degenerate[label] = sections["erf_warning"]
        items.append(
            reports.CompareRun(
                label,
                run.model,
                _weights(run),
                sections["attention_distance"],
                sections["erf"],
                sections["redundancy"],
                sections["pruning"],
                sections["dynamics"],
                images=len(run.sample_ids),
                pass_images=tuple(sections.get("pass_images", ())),
            )
        )
    return reports.CompareReport(
        tuple(items),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        tool_version=__version__,
        findings=_compare_findings(items, degenerate),
        notes=_NOTES,
        verdict=compare_verdict(answers),
    )


def _compare_findings(
    items: Sequence[reports.CompareRun], degenerate: Mapping[str, str]
) -> tuple[str, ...]:
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
        if item.label in degenerate:
            parts.append(f"ERF not interpreted ({degenerate[item.label]})")
        elif blocks:
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
    """Render and atomically write one report comparing ``runs`` (errors as for
    :func:`write_run_report`)."""
    html = _render(runs, lambda: reports.render_compare_report(compare_view(runs)))
    return _write(html, path)
