"""The coverage page: per-model summaries, family totals and the markdown of
``benchmarks/coverage_sweep.py`` (kept apart so the page can be rebuilt from saved
results without running a model)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TOLERANCE = 1e-4
"""Largest allowed difference between captured and reference probabilities."""


def _layer_status(info: dict[str, Any]) -> str:
    if not info.get("captured"):
        return "not captured"
    kind = info.get("kind")
    if kind in ("global", "windowed", "dilated"):
        return "known"
    if kind in ("class-attention", "channel-attention"):
        return "n/a"
    return "unknown"


def _valid(info: dict[str, Any]) -> tuple[str, str]:
    """``(category, note)`` of one layer's probabilities; categories: ``ok`` (rows sum to 1,
    equal to the unfused computation), ``no-ref`` (nothing to compare with, or the model
    applies no probability map to compare), ``off`` (a check failed), ``not-captured``.
    A float32 difference is not held against the capture when the same comparison in
    float64 agrees (float32 rounding at large logits, e.g. random weights that blow up)."""
    if not info.get("captured"):
        return "not-captured", ""
    if info.get("negative") or (info.get("rows_err") or 0) > TOLERANCE:
        return "off", f"rows off by {info.get('rows_err'):.1e}"
    errors = [info.get(k) for k in ("capture_err", "fused_err") if k in info]
    numbers = [e for e in errors if isinstance(e, float)]
    texts = [e for e in errors if isinstance(e, str)]
    if any(e > TOLERANCE for e in numbers):
        exact = [info.get(k) for k in ("capture64_err", "fused64_err")]
        if all(isinstance(e, float) and e <= TOLERANCE for e in exact):
            return "ok", (
                f"float32 paths differ by up to {max(numbers):.1e} (large logits); in float64 "
                f"the capture equals the unfused computation within {max(exact):.1e}"  # type: ignore[type-var]
            )
        return "off", f"differs from unfused by {max(numbers):.1e}"
    failures = [t for t in texts if not t.startswith(UNCOMPARABLE)]
    if failures:
        return "off", failures[0]
    if numbers:
        return "ok", ""
    return "no-ref", texts[0] if texts else ""


UNCOMPARABLE = "model applies a non-stochastic map"


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """Per-model counts, the attention status and the notes for the table."""
    layers = result.get("layers", {})
    statuses = [_layer_status(i) for i in layers.values()]
    validity = [_valid(i) for i in layers.values()]
    mads = [i["mad"] for i in layers.values() if i.get("mad") is not None]
    notes: list[str] = []

    def note(text: str | None) -> None:
        if text:
            text = re.sub(r"\(\d+(?:, \d+)*\)", "(…)", text)  # one note per kind of problem
            for part in text.split("; "):
                if part not in notes:
                    notes.append(part)

    for info, status, (_, text) in zip(layers.values(), statuses, validity, strict=True):
        note(info.get("reason") if status == "unknown" else None)
        note(info.get("problem"))
        note(info.get("mad_error"))
        note(text)
    sources = sorted({i.get("source") for i in layers.values() if i.get("source")})
    if any(s not in ("sdpa", "softmax", "attn_drop") for s in sources):
        note("probabilities read as: " + ", ".join(sources))
    if result.get("not_read"):
        note("modules named like attention not read as attention: " + ", ".join(result["not_read"]))
    if not result.get("outputs_unchanged", True):
        note(f"outputs changed by up to {result.get('outputs_max_diff'):.1e}")
    if not layers:
        attention = "none"
    elif "not captured" in statuses:
        attention = "not captured"
    elif "unknown" in statuses:
        attention = "unknown"
    else:
        attention = "known" if "known" in statuses else "n/a"
    return {
        "known": statuses.count("known"),
        "na": statuses.count("n/a"),
        "unknown": statuses.count("unknown"),
        "not_captured": statuses.count("not captured"),
        "valid": sum(c == "ok" for c, _ in validity),
        "no_reference": sum(c == "no-ref" for c, _ in validity),
        "off": sum(c == "off" for c, _ in validity),
        "kinds": sorted({i.get("kind", "?") for i in layers.values() if i.get("captured")}),
        "attention": attention,
        "mad": (min(mads), max(mads)) if mads else None,
        "notes": notes,
    }


def _row(family: str, result: dict[str, Any]) -> str:
    status = result.get("status")
    params = f"{result['params'] / 1e6:.1f}" if result.get("params") else "?"
    if status != "ok":
        error = str(result.get("error", "")).strip().replace("|", "/")[-300:]
        blank = " | " * 8
        return (
            f"| {family} | {result.get('model', '?')} | {params} |{blank}| **{status}**: {error} |"
        )
    s = summarise(result)
    count = len(result["layers"])
    mad = f"{s['mad'][0]:.0f}–{s['mad'][1]:.0f}" if s["mad"] else ""
    geometry = (
        f"{s['known']} / {s['na']} / {s['unknown']} ({', '.join(s['kinds'])})" if count else "—"
    )
    probs = f"{s['valid']} ok, {s['no_reference']} no ref, {s['off']} off" if count else "—"
    notes = "; ".join(s["notes"]).replace("|", "/")
    return (
        f"| {family} | {result['model']} | {params} | "
        f"{result['input_size'][0]}×{result['input_size'][1]} | "
        f"{result['channels_captured']}/{result.get('channels_auto', '?')} "
        f"({result['channels_found']}) | "
        f"{count - s['not_captured']}/{count} | {probs} | {geometry} | {mad} | "
        f"{'yes' if result['outputs_unchanged'] else '**NO**'} | "
        f"{result['seconds']} s, {result['peak_mb']} MB | {notes[:600]} |"
    )


def totals(results: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Family-level totals: channels from the smallest model, attention from the model
    with attention (the smallest, or the smallest with attention)."""
    t = dict.fromkeys(
        ("families", "run", "skipped", "failed", "channels", "attention", "known", "na",
         "unknown", "not_captured", "off", "changed"), 0,
    )  # fmt: skip
    for runs in results.values():
        t["families"] += 1
        first = runs[0]
        if first.get("status") != "ok":
            t["skipped" if first.get("status") == "skipped" else "failed"] += 1
            continue
        t["run"] += 1
        t["channels"] += first["channels_captured"] > 0
        ran = [r for r in runs if r.get("status") == "ok"]
        t["changed"] += any(not r["outputs_unchanged"] for r in ran)
        attn = next((r for r in reversed(ran) if r["attention_found"]), None)
        if attn is None:
            continue
        s = summarise(attn)
        t["attention"] += 1
        t[
            {"known": "known", "n/a": "na", "unknown": "unknown"}.get(
                s["attention"], "not_captured"
            )
        ] += 1
        t["off"] += s["off"] > 0
    return t


def rule_lines() -> list[str]:
    """One line per geometry rule of ``hooks.geometry.RULES`` (its families, kind of
    attention and docstring), in the order of their first family."""
    from hooks.geometry import RULES

    lines = []
    for rule in sorted(RULES, key=lambda r: sorted(r.families)[0]):
        families = "`, `".join(sorted(rule.families))
        lines.append(f"- `{families}` ({rule.attention}) — {rule.summary}")
    return lines


def _not_swept(analyses: list[str], results: dict[str, Any]) -> list[str]:
    """Analyses of today's default job that the stored sweep did not run everywhere."""
    from inspector.analyzers import REGISTRY

    runs = [r for r in results.values() if r.get("status") == "ok"]
    lines = []
    newer = [a for a in REGISTRY if a not in analyses]
    if newer:
        lines.append(
            f"- not in this sweep (joined the default job after it ran; `--main "
            f"--add-analyses` adds them): {', '.join(newer)}"
        )
    for a in analyses:
        swept = sum(a in r["analyses"] for r in runs)
        if swept < len(runs):
            lines.append(
                f"- {a}: run on {swept} of {len(runs)} runs so far (joined the default job "
                "after the sweep; `--main --add-analyses` goes on; '—': not run yet)"
            )
    return lines


def _timeouts(results: dict[str, Any]) -> list[str]:
    """The documented limitation behind runs that ran past the sweep's time limit."""
    slow = [
        k for k, r in results.items()
        if r.get("status") == "failed" and str(r.get("error", "")).startswith("timeout")
    ]  # fmt: skip
    if not slow:
        return []
    return [
        "",
        f"Limitation, not an error: {', '.join(slow)} ran past the sweep's time limit on",
        "2 CPU cores. Their capture works (see the capture sweep below). The default job's",
        "receptive-field pass takes one backward pass per measured layer, and these 331-px",
        "NASNet cells have hundreds of convolutions (488 and 373): in a timed run,",
        "nasnetalarge's pass had done 162 of 488 layers after two minutes, each layer slower",
        "than the last. Restrict the layers with `--layers`, or run fewer analyses with",
        "`--analyses` (input_dependence and translation_equivariance need that pass too).",
    ]


def write_markdown(
    results: dict[str, list[dict[str, Any]]], path: Path, main: dict[str, Any] | None = None
) -> None:
    """``docs/coverage.md``: the default main job per analysis (``main``, from
    ``coverage_sweep.py --main``) and the capture sweep per family (``results``)."""
    t = totals(results)
    rows = []
    for family, runs in sorted(results.items()):
        for index, result in enumerate(runs):
            rows.append(_row(family if index == 0 else f"{family} (attention)", result))
    lines = [
        "# Coverage of timm families",
        "",
        "Generated by `benchmarks/coverage_sweep.py` (timm "
        f"{results and next(iter(results.values()))[0].get('timm', '?')}; random weights,"
        " CPU): the default main job per analysis (`--main`), then the capture sweep per",
        "family.",
        "",
        *(main_lines(main) if main else []),
        "## Capture sweep",
        "",
        "One random image. For every timm module (family) its smallest model is captured with",
        "`hooks.capture`; when that model has no attention, the family's smallest model with",
        "attention is run too (row *family (attention)*). Attention status per family:",
        "**known** — every attention layer captured, each with a known token geometry or",
        "a kind to which distance does not apply; **n/a** — only class or channel attention",
        "(no spatial query, no distance); **unknown** — some layer has no geometry (reason",
        "in the notes; no distance is reported for it); **not captured** — some layer gave",
        "no probabilities (reason in the notes).",
        "",
        "### Totals",
        "",
        f"- families: {t['families']} — run {t['run']}, skipped {t['skipped']}, "
        f"failed {t['failed']}",
        f"- channels captured: {t['channels']} of {t['run']} families run",
        f"- families with attention: {t['attention']} — captured with known geometry "
        f"{t['known']}, not applicable {t['na']}, unknown {t['unknown']}, "
        f"not captured {t['not_captured']}",
        f"- families with a layer whose probabilities are off (rows ≠ 1 or ≠ the unfused "
        f"computation): {t['off']}",
        f"- families whose outputs changed under capture: {t['changed']}",
        "",
        "### Per model",
        "",
        'Columns: channel layers captured / selected by `channels="auto"` (convolutions and',
        "MLP hidden layers; in brackets all sites incl. normalisation layers); attention",
        "layers captured / found;",
        "probabilities per layer — *ok*: rows sum to 1 and equal the model's unfused",
        "computation (`fused_attn=False`, `attn_drop` input) within 1e-4 on the default and",
        "the fused path (in float64 when float32 rounding at large logits exceeds that);",
        "*no ref*: the module has no unfused `attn_drop` path to compare with, or applies no",
        "probability map to its values (talking heads; rows still checked); *off*: a check",
        "failed; geometry known / n/a / unknown per layer (kinds); MAD range",
        "over layers in px (mean over heads, renormalised over spatial keys, random",
        "weights); outputs bit-identical under capture; time and peak RSS of the subprocess.",
        "",
        "| family | model | M params | input | channels | attention | probabilities |"
        " geometry | MAD px | outputs | cost | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Geometry rules",
        "",
        "`hooks` infers token geometry with one rule per module that defines the model class",
        "(`type(model).__module__`: MobileViT and HaloNet models are built by `byobnet`, DeiT",
        "and hybrid ViTs by `vision_transformer`), registered in `hooks.geometry.RULES` and",
        "grouped by kind of attention (`hooks/geometry/_plain.py`, `_windowed.py`,",
        "`_pyramid.py`, `_hybrid.py`). Any family",
        "without a rule, and any layer a rule cannot read exactly, is `unknown`",
        "with the reason — never a guessed grid. Every geometry is checked at run time",
        "against the query, key and window counts seen. `<vit-like>` applies to non-timm",
        "models shaped like a timm ViT.",
        "",
        *rule_lines(),
        "",
    ]
    path.write_text("\n".join(lines))


# -- the default main job (``coverage_sweep.py --main``) ----------------------------------

_KNOWN = ("global", "windowed", "dilated")
_NOT_APPLICABLE = ("class-attention", "channel-attention")


def main_totals(results: dict[str, Any]) -> dict[str, Any]:
    """Totals of the main-job sweep: families run with every analysis, analyses failed,
    families with attention, attention layers by geometry status."""
    runs = [r for r in results.values() if r.get("status") == "ok"]
    families = {r["family"] for r in runs}
    failed = [
        (key, name, why)
        for key, r in results.items()
        for name, why in (r.get("analyses") or {}).items()
        if why != "ok"
    ]
    broken = [key for key, r in results.items() if r.get("status") == "failed"]
    with_attention = {r["family"] for r in runs if r.get("attention")}
    layers = {"known": 0, "n/a": 0, "unknown": 0}
    for r in runs:
        if r.get("size"):  # the padded rerun: do not count its layers twice
            continue
        for kind, count in (r.get("attention") or {}).items():
            status = "known" if kind in _KNOWN else "n/a" if kind in _NOT_APPLICABLE else "unknown"
            layers[status] += count
    return {
        "families": len(families),
        "runs": len(runs),
        "failed_analyses": failed,
        "failed_runs": broken,
        "skipped": sorted(k for k, r in results.items() if r.get("status") == "skipped"),
        "with_attention": len(with_attention),
        "layers": layers,
        "padded_runs": sum(bool(r.get("padded_layers")) for r in runs),
    }


def main_lines(results: dict[str, Any]) -> list[str]:
    """The default main job per model and per analysis, with its totals (a section of
    ``docs/coverage.md``)."""
    totals = main_totals(results)
    analyses: list[str] = []
    for r in results.values():
        for name in r.get("analyses") or {}:
            if name not in analyses:
                analyses.append(name)
    failed = totals["failed_analyses"]
    import timm

    seen = {r.get("family") for r in results.values()}
    missing = [f for f in sorted(timm.list_modules()) if f not in seen]
    lines = [
        "## The default main job",
        "",
        "`benchmarks/coverage_sweep.py --main`: `inspector.analyze` with every analysis (the",
        "default job), random weights, 2 builtin images, on the smallest model of each timm",
        "family (and its smallest model with attention when the smallest has none). Windowed",
        "families whose windows pad also run at an input size whose maps are not a multiple",
        "of the window (row `model@size`; *padded* counts the layers whose border windows",
        "are zero-padded — their padded slots are not counted as tokens, docs/metrics.md §1).",
        "Each analysis is *ok* or the reason it failed.",
        "",
        "### Totals",
        "",
        f"- families run with the full main job: {totals['families']} ({totals['runs']} runs)",
        f"- families not run yet: {len(missing)}" + (f" ({', '.join(missing)})" if missing else ""),
        f"- analyses failed: {len(failed)}"
        + (": " + "; ".join(f"{k} {a}" for k, a, _ in failed) if failed else ""),
        f"- runs that failed as a whole: {len(totals['failed_runs'])}"
        + (f" ({', '.join(totals['failed_runs'])})" if totals["failed_runs"] else ""),
        f"- skipped: {len(totals['skipped'])} ({', '.join(totals['skipped'])})",
        f"- families with attention found: {totals['with_attention']}",
        f"- attention layers (runs at the default size): known geometry "
        f"{totals['layers']['known']}, not applicable {totals['layers']['n/a']}, unknown "
        f"{totals['layers']['unknown']}",
        f"- runs with padded windows: {totals['padded_runs']}",
        *_not_swept(analyses, results),
        *_timeouts(results),
        "",
        "### Per model",
        "",
        "| run | input | " + " | ".join(analyses) + " | attention layers (kind) | time |",
        "|---|---|" + "---|" * len(analyses) + "---|---|",
    ]
    for key, r in results.items():
        if r.get("status") != "ok":
            why = str(r.get("error", ""))[:200].replace("|", "\\|")
            lines.append(f"| {key} | | **{r.get('status')}**: {why} |")
            continue
        cells = [
            "—" if a not in r["analyses"]
            else "ok" if r["analyses"][a] == "ok"
            else f"**failed**: {r['analyses'][a]}"
            for a in analyses
        ]  # fmt: skip
        kinds = ", ".join(f"{k} {n}" for k, n in sorted((r.get("attention") or {}).items()))
        if r.get("padded_layers"):
            kinds += f" ({r['padded_layers']} padded)"
        cells = [c.replace("|", "\\|")[:200] for c in cells]
        lines.append(
            f"| {key} | {r.get('input')} | " + " | ".join(cells) + f" | {kinds or '—'} | "
            f"{r.get('seconds')} s |"
        )
    return [*lines, ""]
