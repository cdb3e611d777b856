"""Terminal text: the per-layer summary of a run, ``inspector info`` and ``inspector models``."""

from __future__ import annotations

import difflib
import fnmatch
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import ModelNotFoundError, RunFileError
from .._text import terminal_safe
from ..store import Run, read_run
from ._dynamics import terminal_lines
from ._rows import (
    RunResults,
    agreement_text,
    failed_analyses,
    images_text,
    interval_text,
    layer_rows,
    pass_counts,
)
from ._verdict import verdict

__all__ = ["describe", "describe_models", "print_summary"]


def _num(value: Any, digits: int = 1) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


LEGEND = """\
units      heads of an attention layer, channels of a channel layer; '-': not measured
CKA redund redundancy 1 - effective units / units (0: every unit distinct; near 1: the
           units are alike): heads by debiased CKA of their outputs, channels by debiased
           CKA of groups of head width (like for like); [95 % batch-means interval]; §4
|r| red    the same from single channels' |correlation| (secondary: depends on the
           channel count); §4
rows       rows of the similarity statistics: sampled positions x images (! fewer than
           5 x width: sample-limited, raise --positions)
MAD px     mean attention distance: how far a head looks, in input pixels, mean over
           the layer's heads (min-max: its most local and most global head); §1
MADc px    the same for the centre query only, the one comparable with the ERF; §1
ERF px     effective receptive field: mass-weighted mean distance of the input gradient
           from the unit's centre, pixels, cumulative from the input; §3. On a 'block'
           row it is the whole block's output (after the residual); on an 'attention'
           row the attention branch alone (before the residual); on a 'channel' row of
           a CNN the convolution's output; [95 % bootstrap interval over images]
TRF        theoretical receptive field side (px; 'all': unbounded); §3
§N         sections of docs/metrics.md"""
"""The terminal table's legend (names, units, where they are defined)."""


def _interval(point: float, low: float, high: float, digits: int = 0) -> str:
    if math.isnan(point):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return _num(point, digits)
    return f"{_num(point, digits)} [{_num(low, digits)}-{_num(high, digits)}]"


def _field(side: float) -> str:
    if math.isnan(side):
        return "-"
    return "all" if math.isinf(side) else f"{side:.0f}"


def print_summary(run: Run) -> None:
    """The per-layer table, the image counts of the passes, the degenerate-ERF warning
    and the pruning lines of a run, on stdout."""
    results = RunResults.of(run)
    images = len(run.sample_ids)
    header = (
        f"{'layer':<26} {'kind':<9} {'units':>5} {'CKA redund [95%]':>18} {'|r| red [95%]':>18} "
        f"{'rows':>6} {'MAD px (min-max)':>17} {'MADc px [95%]':>14} {'ERF px [95%]':>14} "
        f"{'TRF':>4}"
    )
    print(
        "CKA redund: debiased CKA between heads, or between channel groups of head width "
        "(like for like); |r| red: single channels, secondary (depends on the channel "
        f"count); {images} images; ! = rows < 5 x width (sample-limited)"
    )
    for name, why in failed_analyses(run).items():
        print(f"failed analysis {name}: {why}")
    print(header)
    print("-" * len(header))
    flagged = 0
    for row in layer_rows(run, results):
        shown = (row.distance, row.erf_distance, row.redundancy, row.correlation_redundancy)
        if all(math.isnan(v) for v in shown):
            continue
        low, high = _num(row.distance_min, 0), _num(row.distance_max, 0)
        spread = "-" if math.isnan(row.distance) else f"{_num(row.distance, 0)} ({low}-{high})"
        layer, kind = terminal_safe(row.layer), terminal_safe(row.kind)
        rows = f"{row.rows}{'!' if row.sample_limited else ''}" if row.rows else "-"
        flagged += row.sample_limited
        cka = interval_text(row.redundancy, row.redundancy_low, row.redundancy_high)
        correlation = interval_text(
            row.correlation_redundancy, row.correlation_low, row.correlation_high
        )
        print(
            f"{layer[:26]:<26} {kind:<9} {row.units:>5} {cka:>18} "
            f"{correlation:>18} {rows:>6} {spread:>17} "
            f"{_interval(row.centre, row.centre_low, row.centre_high):>14} "
            f"{_interval(row.erf_distance, row.erf_low, row.erf_high):>14} "
            f"{_field(row.theoretical_rf):>4}"
        )
    print("-" * len(header))
    print(LEGEND)
    if flagged:
        print(f"{flagged} layer(s) sample-limited (rows < 5 x width): raise --positions")
    for line in pass_counts(results):
        print(line)
    model = results.erf.summary.get("model") if results.erf else None
    if model is not None and model.degenerate:
        print(f"WARNING: {model.reason}")
    for line in terminal_lines(results.dependence, results.equivariance):
        print(line)
    answer = verdict(results, images)
    print(f"Verdict: {answer.overall}")
    for line in answer.dynamics:
        print(f"Verdict: {line}")
    if results.pruning is None:
        return
    threshold = agreement_text(results.pruning.threshold)
    checks = results.importance.summary if results.importance else {}
    for kind, curve in results.pruning.summary.items():
        line = (
            f"{kind}: {curve.prunable_fraction:.0%} removable at >= {threshold} top-1 "
            f"agreement ({curve.units} units"
        )
        if curve.agreement_low is not None:
            line += ", the 95 % interval's lower bound"
        if curve.images:
            line += f", {images_text(curve.images, 'held-out ')}"
        line += ")"
        if curve.agreement_low is not None and curve.agreement_high is not None:
            step = 1 if curve.fractions.size > 1 else 0
            line += (
                f"; at {curve.fractions[step]:.0%} removed agreement "
                f"{curve.agreement[step]:.2f} [{curve.agreement_low[step]:.2f}-"
                f"{curve.agreement_high[step]:.2f}]"
            )
        print(line)
        if curve.accuracy is not None and curve.labelled:
            print(f"  {_accuracy(curve)}")
        check = checks.get(kind)
        if check is not None and not math.isnan(check.spearman_vs_ablation):
            rho = f"{check.spearman_vs_ablation:.2f}"
            if check.spearman_low is not None and check.spearman_high is not None:
                rho += f" [95 %: {check.spearman_low:.2f}, {check.spearman_high:.2f}]"
            print(
                f"  gate gradient vs true ablation: Spearman {rho} "
                f"over {check.ablation_units} units"
                + (f" on {check.ablation_images} images" if check.ablation_images else "")
            )


def _accuracy(curve: Any) -> str:
    """Top-1 accuracy of the pruned model on the labelled held-out images, with its
    Wilson interval: unpruned, at the first step and at the removable fraction."""
    steps = sorted({0, min(1, curve.fractions.size - 1)})
    removable = np.flatnonzero(np.isclose(curve.fractions, curve.prunable_fraction))
    steps += [int(i) for i in removable[:1] if int(i) not in steps]
    parts = []
    for i in steps:
        text = f"{curve.accuracy[i]:.2f}"
        if curve.accuracy_low is not None and curve.accuracy_high is not None:
            text += f" [{curve.accuracy_low[i]:.2f}-{curve.accuracy_high[i]:.2f}]"
        parts.append(f"{text} at {curve.fractions[i]:.0%} removed")
    return f"top-1 accuracy on {curve.labelled} labelled held-out images: " + ", ".join(parts)


def _unreadable(run: Run) -> list[str]:
    """Why each analysis this inspector cannot read (a newer analyzer version, ...) is so."""
    problems = []
    for name in run.analysis:
        try:
            run.result(name)
        except RunFileError as exc:
            problems.append(str(exc).removeprefix(f"{run.path}: "))
    return problems


def _ids(ids: list[str], shown: int = 10) -> str:
    """The first ``shown`` image ids (which images a ``--limit``/``--seed`` run used)."""
    more = f" ... and {len(ids) - shown} more" if len(ids) > shown else ""
    return (", ".join(ids[:shown]) or "none") + more


def describe(path: str | Path, *, verify: bool = True) -> str:
    """What a run file holds (also for incomplete runs); names from the file escaped."""
    run = read_run(path, allow_incomplete=True, verify=verify)
    meta = {key: _safe(value) for key, value in run.meta.items()}
    attention = run.attention_layers()
    channels = run.channel_layers()
    requested = f"requested {meta.get('model_requested')!r}, {meta.get('resolution')}"
    source = f"{len(run.sample_ids)} from {meta.get('images_source')}"
    kinds = Counter(
        terminal_safe((layer.attrs.get("geometry") or {}).get("kind", "unknown"))
        for layer in attention
    )
    geometry = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    lines = [
        f"run file:  {terminal_safe(run.path)}",
        f"complete:  {'yes' if run.complete else _incomplete(run)}",
        f"model:     {meta.get('model')} ({requested})",
        f"weights:   {meta.get('weights_source')} - {meta.get('weights_reason')}",
        f"images:    {source}, input {meta.get('input_size')}",
        f"image ids: {terminal_safe(_ids(run.sample_ids))}",
        f"layers:    {len(attention)} attention (geometry: {geometry or 'none'}), "
        f"{len(channels)} channel",
        f"analyses:  {terminal_safe(', '.join(run.analysis)) or 'none'}",
        *(f"           {terminal_safe(problem)}" for problem in _unreadable(run)),
        *(
            f"failed:    {terminal_safe(name)}: {terminal_safe(why)}"
            for name, why in failed_analyses(run).items()
        ),
        f"created:   {meta.get('created')} with inspector {meta.get('tool_version')}, "
        f"timm {meta.get('timm_version')}, torch {meta.get('torch_version')}",
    ]
    timings = meta.get("timings")
    if isinstance(timings, dict):
        lines.append("timings:   " + ", ".join(f"{k} {_num(v)}s" for k, v in timings.items()))
    return "\n".join(lines)


def _safe(value: Any) -> Any:
    """Strings from a run file escaped for the terminal, inside lists and dicts too."""
    if isinstance(value, str):
        return terminal_safe(value)
    if isinstance(value, list):
        return [_safe(item) for item in value]
    if isinstance(value, dict):
        return {terminal_safe(key): _safe(item) for key, item in value.items()}
    return value


def _incomplete(run: Run) -> str:
    """The ``complete:`` line of an unfinished run: ``--resume`` advice only when the
    ``.partial`` file holds work."""
    if run.sample_ids:
        return f"NO ({len(run.sample_ids)} images done; finish with --resume)"
    return "NO (stopped before its first checkpoint: no image to resume; run it again)"


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
    analyses = ["receptive_field", "input_dependence", "translation_equivariance"]
    analyses += ["importance", "pruning_curve"]
    if channels:
        analyses.append("channel_redundancy")
    if attention:
        heads = sum(hooks.head_count(m) for m in attention.values())
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
