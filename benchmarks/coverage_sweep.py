"""Coverage sweep: capture every timm family's smallest model and say what works.

For each timm module (family) the model with the fewest parameters (counted on the meta
device) is built with random weights and run on one random image under
``hooks.capture``; each model runs in its own subprocess with a timeout, so a crash or a
hang costs one row. Per family it records channel layers captured, attention layers
found and captured, whether the probabilities are valid (rows sum to 1; equal within
1e-4 to the model's own unfused computation — ``fused_attn=False``, ``attn_drop``
input — where one exists, for the fused path too, repeated in float64 when float32
differs), the geometry per layer (known / not applicable / unknown, with reasons), the
mean attention distance computed from the captured maps and the geometry, time and peak
memory. It writes ``docs/coverage.md``; the raw results (``benchmarks/coverage.json``) and
the parameter counts (``benchmarks/coverage_counts.json``) are kept for ``--reuse``.

Run on demand (not in CI); on a 2-core machine the whole sweep takes one to two hours::

    .venv/bin/python benchmarks/coverage_sweep.py            # all families
    .venv/bin/python benchmarks/coverage_sweep.py --families swin_transformer,levit
    .venv/bin/python benchmarks/coverage_sweep.py --reuse    # only what is missing
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_PARAMS = 100_000_000
TOLERANCE = 1e-4
LOW_PRIORITY = ("_enc", "_dist", "_distilled", "_clip", "_siglip")  # same arch, other head
ATTENTION_LIKE = re.compile(r"Attention|Attn|SHSA|MHSA")


# -- choosing the models ------------------------------------------------------------------


def describe(name: str) -> tuple[int | None, bool]:
    """``(parameters, has attention)`` of timm model ``name``, built on the meta device
    (no memory, no initialisation); ``(None, False)`` if it does not build there."""
    import timm
    import torch

    import hooks

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:
        return None, False
    return sum(p.numel() for p in model.parameters()), bool(hooks.find_attention(model))


def choose_models(families: list[str] | None, cache: Path) -> dict[str, list[str]]:
    """Per timm family: its smallest model, then — when that one has no attention but
    another does — the smallest model with attention. Counts are cached in ``cache``."""
    import timm

    counts: dict[str, Any] = {}
    if cache.exists():
        counts = json.loads(cache.read_text())
    if counts.get("timm") != timm.__version__:
        counts = {"timm": timm.__version__, "models": {}}
    known = counts["models"]
    chosen: dict[str, list[str]] = {}
    for family in families or timm.list_modules():
        names = timm.list_models(module=family)
        for name in names:
            if name not in known:
                known[name] = describe(name)
        cache.write_text(json.dumps(counts, indent=0))
        rated = [
            (known[n][0], any(t in n for t in LOW_PRIORITY), len(n), n)
            for n in names
            if known[n][0] is not None
        ]
        if not rated:
            chosen[family] = [min(names, key=len)] if names else []
            continue
        smallest = min(rated)[-1]
        chosen[family] = [smallest]
        with_attention = [r for r in rated if known[r[-1]][1]]
        if with_attention and not known[smallest][1]:
            chosen[family].append(min(with_attention)[-1])
        print(f"  {family}: {chosen[family]}", file=sys.stderr, flush=True)
    return chosen


# -- one model (runs in a subprocess) -----------------------------------------------------


def _sequences(probs: Any, module: Any) -> Any:
    """``[sequence, head, query, key]`` as the capture reports it."""
    from hooks._taps import _as_sequences

    out = _as_sequences(probs, int(module.num_heads), module)
    return probs if out is None else out


def _set_fused(model: Any, value: bool | None, saved: dict[str, bool]) -> None:
    for name, module in model.named_modules():
        if hasattr(module, "fused_attn"):
            if value is None:
                module.fused_attn = saved[name]
            else:
                saved.setdefault(name, module.fused_attn)
                module.fused_attn = value


def _unfused_reference(model: Any, x: Any, attention: dict[str, Any]) -> dict[str, Any]:
    """The model's own probabilities: ``fused_attn=False``, input of each ``attn_drop``."""
    import torch

    found: dict[str, Any] = {}
    handles = []
    for name, module in attention.items():
        drop = getattr(module, "attn_drop", None)
        if isinstance(drop, torch.nn.Module):

            def keep(m: Any, args: tuple, name: str = name) -> None:
                if name not in found and args and isinstance(args[0], torch.Tensor):
                    found[name] = args[0].detach().clone()

            handles.append(drop.register_forward_pre_hook(keep))
    saved: dict[str, bool] = {}
    _set_fused(model, False, saved)
    try:
        with torch.no_grad():
            model(x)
    finally:
        _set_fused(model, None, saved)
        for handle in handles:
            handle.remove()
    return found


def _mad(probs: Any, geometry: Any) -> float | None:
    """Mean attention distance (px, mean over heads) of ``[sequence, head, Q, K]`` maps:
    prefix rows/cols dropped, rows renormalised over spatial keys (METRICS.md §1)."""
    from inspector.analyzers._distance import mean_attention_distance
    from inspector.analyzers._geometry import distance_matrix

    queries, keys = geometry.centres()
    stats = mean_attention_distance(
        probs.double().numpy(), distance_matrix(queries, keys), geometry.prefix
    )
    return float(stats.renormalised.mean())


def run_one(name: str) -> dict[str, Any]:
    """Capture model ``name`` and validate everything; a JSON-able dict."""
    import timm
    import torch

    import hooks

    torch.set_num_threads(2)
    start = time.perf_counter()
    out: dict[str, Any] = {"model": name, "status": "ok"}
    torch.manual_seed(0)
    with torch.device("meta"):
        meta = timm.create_model(name, pretrained=False)
    params = sum(p.numel() for p in meta.parameters())
    out["params"] = params
    if params > MAX_PARAMS:
        out.update(status="skipped", error=f"{params / 1e6:.0f}M parameters > 100M")
        return out
    size = tuple(meta.pretrained_cfg.get("input_size", (3, 224, 224)))
    kwargs: dict[str, Any] = {}
    if size[-1] > 256 and hooks.find_attention(meta):  # try the smaller size it allows
        kwargs = {"img_size": 224}
    del meta
    try:
        model = timm.create_model(name, pretrained=False, **kwargs).eval()
        if kwargs:
            size = (3, 224, 224)
            with torch.no_grad():
                model(torch.zeros(1, *size))
    except Exception:
        model, size = timm.create_model(name, pretrained=False).eval(), size
    out["input_size"] = list(size[-2:])
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(1))
    attention = hooks.find_attention(model)
    channels = hooks.find_channels(model)
    out["channels_found"] = len(channels)
    out["channels_auto"] = sum(site.kind in ("conv", "mlp") for site in channels.values())
    out["attention_found"] = len(attention)
    out["not_read"] = sorted(
        {
            type(m).__name__
            for n, m in model.named_modules()
            if ATTENTION_LIKE.search(type(m).__name__)
            and n not in attention
            and not any(a.startswith(f"{n}.") for a in attention)
        }
    )
    refs = {"now": _unfused_reference(model, x, attention) if attention else {}}

    with torch.no_grad():
        plain = model(x)
    layers: dict[str, dict[str, Any]] = {
        n: {"class": type(m).__name__, "fused_attn": getattr(m, "fused_attn", None)}
        for n, m in attention.items()
    }

    def check(tag: str) -> Callable[[str, Any], None]:
        def on_attention(layer: str, probs: Any) -> None:
            info = layers[layer]
            if f"{tag}_err" in info:
                return
            p = probs.double()
            info.setdefault("rows_err", float((p.sum(-1) - 1).abs().max()))
            info.setdefault("negative", bool((p < 0).any()))
            if tag == "capture":
                info["probs"] = p  # for the distance, dropped before JSON
            ref = refs["now"].get(layer)
            if ref is None:
                info[f"{tag}_err"] = None
                return
            ref = _sequences(ref, attention[layer]).double()
            if ref.shape != p.shape:
                info[f"{tag}_err"] = f"shape {tuple(ref.shape)} vs {tuple(p.shape)}"
            elif (ref < 0).any() or (ref.sum(-1) - 1).abs().max() > 1e-3:
                info[f"{tag}_err"] = (
                    f"{UNCOMPARABLE} to the values (mixed after the softmax): the captured "
                    "softmax is not compared"
                )
            else:
                info[f"{tag}_err"] = float((ref - p).abs().max())

        return on_attention

    opts: dict[str, Any] = {"keep_maps": 1, "positions": 16}
    with torch.no_grad():
        cap = hooks.capture(
            model,
            attention="*" if attention else None,
            on_attention=check("capture"),
            **opts,
        )
        with cap:
            captured = model(x)
    out["outputs_unchanged"] = bool(torch.equal(plain, captured))
    out["outputs_max_diff"] = float((plain.float() - captured.float()).abs().max())
    out["channels_captured"] = sum(r.moments is not None for r in cap.channels.values())
    for layer, record in cap.attention.items():
        info = layers[layer]
        geometry = record.geometry
        info.update(
            kind=geometry.kind,
            reason=geometry.reason,
            source=record.source,
            problem=record.problem,
            captured=record.images > 0,
            geometry=geometry.to_dict(),
        )
        probs = info.pop("probs", None)
        if probs is not None and geometry.known:
            try:
                info["mad"] = _mad(probs, geometry)
            except Exception as exc:  # a geometry that does not fit is a finding
                info["mad_error"] = f"{type(exc).__name__}: {exc}"
    if any(m is not None and not m for m in (i["fused_attn"] for i in layers.values())):
        saved: dict[str, bool] = {}
        _set_fused(model, True, saved)  # the fused path too: masks and biases through SDPA
        try:
            with torch.no_grad(), hooks.capture(model, channels=None, on_attention=check("fused")):
                model(x)
        finally:
            _set_fused(model, None, saved)
    if any(
        isinstance(i.get(k), float) and i[k] > TOLERANCE
        for i in layers.values()
        for k in ("capture_err", "fused_err")
    ):  # tell float32 rounding (large logits) from a capture error: the same in float64
        _check_in_float64(model, x, attention, refs, check)
    out["layers"] = layers
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _check_in_float64(
    model: Any,
    x: Any,
    attention: dict[str, Any],
    refs: dict[str, Any],
    check: Callable[[str], Callable[[str, Any], None]],
) -> None:
    """Repeat the reference and both capture paths with the model in float64."""
    import torch

    import hooks

    model.double()
    x = x.double()
    refs["now"] = _unfused_reference(model, x, attention)
    with torch.no_grad(), hooks.capture(model, channels=None, on_attention=check("capture64")):
        model(x)
    saved: dict[str, bool] = {}
    _set_fused(model, True, saved)
    try:
        with torch.no_grad(), hooks.capture(model, channels=None, on_attention=check("fused64")):
            model(x)
    finally:
        _set_fused(model, None, saved)


# -- the report ---------------------------------------------------------------------------


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
    """One line per geometry rule of ``hooks`` (its docstring), families grouped."""
    from hooks import _family_rules, _family_rules_more  # noqa: F401  (register the rules)
    from hooks._families import FAMILY_RULES

    by_rule: dict[Any, list[str]] = {}
    for family, fn in sorted(FAMILY_RULES.items()):
        by_rule.setdefault(fn, []).append(family)
    lines = []
    for fn, families in by_rule.items():
        text = " ".join((fn.__doc__ or fn.__name__).split())
        lines.append(f"- `{'`, `'.join(families)}` — {text}")
    return lines


def write_markdown(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    t = totals(results)
    rows = []
    for family, runs in sorted(results.items()):
        for index, result in enumerate(runs):
            rows.append(_row(family if index == 0 else f"{family} (attention)", result))
    lines = [
        "# Coverage of timm families",
        "",
        "Generated by `benchmarks/coverage_sweep.py` (timm "
        f"{results and next(iter(results.values()))[0].get('timm', '?')}; random weights, one"
        " image, CPU). For every timm module (family) its smallest model is captured with",
        "`hooks.capture`; when that model has no attention, the family's smallest model with",
        "attention is run too (row *family (attention)*). Attention status per family:",
        "**known** — every attention layer captured, each with a known token geometry or",
        "a kind to which distance does not apply; **n/a** — only class or channel attention",
        "(no spatial query, no distance); **unknown** — some layer has no geometry (reason",
        "in the notes; no distance is reported for it); **not captured** — some layer gave",
        "no probabilities (reason in the notes).",
        "",
        "## Totals",
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
        "## Per model",
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
        "and hybrid ViTs by `vision_transformer`), in `hooks/_family_rules*.py`. Any family",
        "without a rule, and any layer a rule cannot read exactly, is `unknown`",
        "with the reason — never a guessed grid. Every geometry is checked at run time",
        "against the query, key and window counts seen. `<vit-like>` applies to non-timm",
        "models shaped like a timm ViT.",
        "",
        *rule_lines(),
        "",
    ]
    path.write_text("\n".join(lines))


# -- driver -------------------------------------------------------------------------------


def _child(model: str, timeout: int) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", model],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return {"model": model, "status": "failed", "error": f"timeout after {timeout} s"}
    last = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    if done.returncode != 0 or not last:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        return {"model": model, "status": "failed", "error": " / ".join(tail)}
    return json.loads(last[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--families", help="comma-separated timm modules (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "coverage.md")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "coverage.json")
    parser.add_argument("--counts", type=Path, default=REPO / "benchmarks" / "coverage_counts.json")
    parser.add_argument(
        "--reuse", action="store_true", help="keep results in --json (all families only)"
    )
    args = parser.parse_args(argv)
    if args.one:
        import timm

        print(json.dumps({**run_one(args.one), "timm": timm.__version__}))
        return 0
    families = args.families.split(",") if args.families else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.counts.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    if args.json.exists():
        results = json.loads(args.json.read_text())
    print("choosing the models (parameters counted on the meta device) ...", file=sys.stderr)
    chosen = choose_models(families, args.counts)
    for family, models in chosen.items():
        reuse = args.reuse and families is None  # named families always run afresh
        done = {r.get("model"): r for r in results.get(family, [])} if reuse else {}
        runs = []
        for model in models:
            if model not in done:
                print(f"{family}: {model}", file=sys.stderr, flush=True)
            runs.append(done.get(model) or _child(model, args.timeout))
        results[family] = runs
        args.json.write_text(json.dumps(results, indent=1))
        write_markdown(results, args.out)
    write_markdown(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
