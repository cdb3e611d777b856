"""Terminal text: the per-layer summary of a run, ``inspector info`` and ``inspector models``."""

from __future__ import annotations

import difflib
import fnmatch
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from .._errors import ModelNotFoundError, RunFileError
from ..store import Run, read_run
from ._rows import RunResults, agreement_text, layer_rows

__all__ = ["describe", "describe_models", "print_summary"]


def _num(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


LEGEND = """\
MAD px     mean attention distance: how far a head looks, in input pixels, mean over
           the layer's heads (min-max: its most local and most global head); docs/metrics.md §1
ERF px     effective receptive field: mass-weighted mean distance of the input gradient
           from the unit's centre, pixels (§3). On a 'block' row it is the whole block's
           output (after the residual); on an 'attention' row the attention branch alone
           (before the residual); on a 'channel' row of a CNN the convolution's output
r50 px     radius of the disc about the centre holding 50 % of the ERF mass
redund     redundancy 1 - effective units / units (0: every unit distinct; near 1: the
           units are alike), heads by debiased CKA, channels by |correlation| (§4)
units      heads of an attention layer, channels of a channel layer; '-': not measured"""
"""The terminal table's legend (names, units, where they are defined)."""


def print_summary(run: Run) -> None:
    """The per-layer table and the pruning lines of a run, on stdout."""
    results = RunResults.of(run)
    header = (
        f"{'layer':<28} {'kind':<9} {'units':>5} {'MAD px (min-max)':>20} "
        f"{'ERF px':>7} {'r50 px':>6} {'redund':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in layer_rows(run, results):
        if all(math.isnan(v) for v in (row.distance, row.erf_distance, row.redundancy)):
            continue
        low, high = _num(row.distance_min, 0), _num(row.distance_max, 0)
        spread = "-" if math.isnan(row.distance) else f"{_num(row.distance)} ({low}-{high})"
        print(
            f"{row.layer[:28]:<28} {row.kind:<9} {row.units:>5} {spread:>20} "
            f"{_num(row.erf_distance):>7} {_num(row.erf_radius_50):>6} "
            f"{_num(row.redundancy, 2):>6}"
        )
    print("-" * len(header))
    print(LEGEND)
    if results.pruning is None:
        return
    threshold = agreement_text(results.pruning.threshold)
    checks = results.importance.summary if results.importance else {}
    for kind, curve in results.pruning.summary.items():
        line = (
            f"{kind}: {curve.prunable_fraction:.0%} removable at >= {threshold} top-1 "
            f"agreement ({curve.units} units)"
        )
        check = checks.get(kind)
        if check is not None and not math.isnan(check.spearman_vs_ablation):
            line += (
                f"; gate gradient vs true ablation: Spearman {check.spearman_vs_ablation:.2f} "
                f"over {check.ablation_units} units"
            )
        print(line)


def _unreadable(run: Run) -> list[str]:
    """Why each analysis this inspector cannot read (a newer analyzer version, ...) is so."""
    problems = []
    for name in run.analysis:
        try:
            run.result(name)
        except RunFileError as exc:
            problems.append(str(exc).removeprefix(f"{run.path}: "))
    return problems


def describe(path: str | Path) -> str:
    """What a run file holds (also for incomplete runs)."""
    run = read_run(path, allow_incomplete=True)
    meta = run.meta
    attention = run.attention_layers()
    channels = run.channel_layers()
    requested = f"requested {meta.get('model_requested')!r}, {meta.get('resolution')}"
    source = f"{len(run.sample_ids)} from {meta.get('images_source')}"
    kinds = Counter(
        str((layer.attrs.get("geometry") or {}).get("kind", "unknown")) for layer in attention
    )
    geometry = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    lines = [
        f"run file:  {run.path}",
        f"complete:  {'yes' if run.complete else 'NO (resume with --resume)'}",
        f"model:     {meta.get('model')} ({requested})",
        f"weights:   {meta.get('weights_source')} - {meta.get('weights_reason')}",
        f"images:    {source}, input {meta.get('input_size')}",
        f"layers:    {len(attention)} attention (geometry: {geometry or 'none'}), "
        f"{len(channels)} channel",
        f"analyses:  {', '.join(run.analysis) or 'none'}",
        *(f"           {problem}" for problem in _unreadable(run)),
        f"created:   {meta.get('created')} with inspector {meta.get('tool_version')}, "
        f"timm {meta.get('timm_version')}, torch {meta.get('torch_version')}",
    ]
    timings = meta.get("timings")
    if isinstance(timings, dict):
        lines.append("timings:   " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return "\n".join(lines)


def _measurable(name: str) -> str:
    """What a capture finds in timm model ``name``, built without weights (meta device)."""
    import timm
    import torch

    import hooks

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
        attention = hooks.find_attention(model)
        sites = hooks.find_channels(model)
        geometries = [hooks.infer_geometry(model, n, m) for n, m in attention.items()]
    except Exception as exc:  # an architecture that cannot be built here: say so, go on
        return f"(not inspected: {type(exc).__name__})"
    channels = sum(1 for site in sites.values() if site.kind in ("conv", "mlp"))
    parts = [f"{channels} channel layers"]
    analyses = ["receptive_field", "importance", "pruning_curve"]
    if channels:
        analyses.append("channel_redundancy")
    if attention:
        heads = sum(int(getattr(m, "num_heads", 0)) for m in attention.values())
        known = sum(1 for g in geometries if g.known)
        kinds = sorted({str(g.kind) for g in geometries if g.known})
        parts.append(
            f"{len(attention)} attention layers ({heads} heads), geometry known "
            f"for {known}/{len(attention)}{f' ({chr(44).join(kinds)})' if kinds else ''}"
        )
        analyses.append("head_redundancy")
        if known:
            analyses += ["attention_distance", "attention_entropy"]
        elif attention:
            analyses.append("attention_entropy")
    else:
        parts.append("no attention")
    return ", ".join(parts) + "; measures: " + ", ".join(analyses)


def describe_models(pattern: str, *, inspect_up_to: int = 40) -> str:
    """Registered timm architectures matching ``pattern`` and what inspector measures.

    Args:
        pattern: A glob over timm names (``deit_*``).
        inspect_up_to: When at most this many names match, each architecture is built
            on the meta device (no weights, no memory) to count its channel layers,
            attention layers and heads, and the layers whose token geometry is known.
    """
    import timm

    from .._models import resolve_model_name

    names = [n for n in timm.list_models() if fnmatch.fnmatchcase(n, pattern)]
    header = f"{len(names)} timm architecture(s) match {pattern!r}:"
    if not names and not any(c in pattern for c in "*?["):
        # not a glob: an alias (``deit_small``) or a misspelling (ModelNotFoundError)
        names = [resolve_model_name(pattern).name]
        header = f"{pattern!r} resolves to:"
    if not names:
        stem = pattern.replace("*", "").replace("?", "").strip("_[]")
        close = difflib.get_close_matches(stem, timm.list_models(), n=5, cutoff=0.5)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise ModelNotFoundError(f"no timm architecture matches {pattern!r}{hint}")
    lines = [header]
    if len(names) <= inspect_up_to:
        width = max(len(n) for n in names)
        lines += [f"  {name:<{width}}  {_measurable(name)}" for name in names]
        return "\n".join(lines)
    lines += [f"  {name}" for name in names[:200]]
    if len(names) > 200:
        lines.append(f"  ... and {len(names) - 200} more (narrow the glob)")
    lines.append(
        f"(narrow the glob to {inspect_up_to} names or fewer to see what can be measured on each)"
    )
    return "\n".join(lines)
