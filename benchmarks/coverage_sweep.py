"""Coverage sweep: capture every timm family's smallest model and say what works.

For each timm module (family) the model with the fewest parameters (counted on the meta
device) is built with random weights and run on one random image under
``hooks.capture``; each model runs in its own subprocess with a timeout, so a crash or a
hang costs one row. Per family it records channel layers captured, attention layers
found and captured, whether the probabilities are valid (rows sum to 1; equal within
1e-4 to the model's own unfused computation — ``fused_attn=False``, ``attn_drop``
input — where one exists, for the fused path too), the geometry per layer (known / not
applicable / unknown, with reasons), the mean attention distance computed from the
captured maps and the geometry, time and peak memory. It writes ``docs/coverage.md``.

Run on demand (not in CI); on a 2-core machine the whole sweep takes about an hour::

    .venv/bin/python benchmarks/coverage_sweep.py            # all families
    .venv/bin/python benchmarks/coverage_sweep.py --families swin_transformer,levit
"""

from __future__ import annotations

import argparse
import json
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


# -- choosing the models ------------------------------------------------------------------


def count_parameters(name: str) -> int | None:
    """Parameters of timm model ``name``, built on the meta device (no memory, no init)."""
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
    except Exception:
        return None
    return sum(p.numel() for p in model.parameters())


def smallest_models(families: list[str] | None) -> dict[str, tuple[str, int | None]]:
    """The smallest model of every timm family: ``{family: (model, parameters)}``."""
    import timm

    chosen: dict[str, tuple[str, int | None]] = {}
    for family in families or timm.list_modules():
        names = timm.list_models(module=family)
        if not names:
            continue
        counted = [(count_parameters(n), n) for n in names]
        known = [(c, any(t in n for t in LOW_PRIORITY), n) for c, n in counted if c is not None]
        if known:
            params, _, name = min(known)
            chosen[family] = (name, params)
        else:
            chosen[family] = (min(names, key=len), None)
        print(f"  {family}: {chosen[family][0]} ({chosen[family][1]})", file=sys.stderr)
    return chosen


# -- one model (runs in a subprocess) -----------------------------------------------------


def _sequences(probs: Any, heads: int) -> Any:
    """``[sequence, head, query, key]`` as the capture reports it."""
    if probs.dim() >= 4:
        return probs.reshape(-1, *probs.shape[-3:])
    return probs.unsqueeze(1) if heads == 1 else probs


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
                    found[name] = args[0].detach().float().clone()

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
    out["attention_found"] = len(attention)
    reference = _unfused_reference(model, x, attention) if attention else {}

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
            p = probs.float()
            info.setdefault("rows_err", float((p.sum(-1) - 1).abs().max()))
            info.setdefault("negative", bool((p < 0).any()))
            if tag == "capture":
                info["probs"] = p  # for the distance, dropped before JSON
            ref = reference.get(layer)
            if ref is None:
                info[f"{tag}_err"] = None
                return
            ref = _sequences(ref, int(attention[layer].num_heads))
            if ref.shape != p.shape:
                info[f"{tag}_err"] = f"shape {tuple(ref.shape)} vs {tuple(p.shape)}"
            elif (ref < 0).any() or (ref.sum(-1) - 1).abs().max() > 1e-3:
                info[f"{tag}_err"] = "model applies a non-stochastic map (mixed after softmax)"
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
    out["layers"] = layers
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


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


def _valid(info: dict[str, Any]) -> str:
    """``ok`` / ``no reference`` / a description of what failed, for one layer."""
    if not info.get("captured"):
        return "not captured"
    if info.get("negative") or (info.get("rows_err") or 0) > 1e-4:
        return f"rows off by {info.get('rows_err'):.1e}"
    errors = [info.get(k) for k in ("capture_err", "fused_err") if k in info]
    numbers = [e for e in errors if isinstance(e, float)]
    texts = [e for e in errors if isinstance(e, str)]
    if any(e > TOLERANCE for e in numbers):
        return f"differs from unfused by {max(numbers):.1e}"
    if texts:
        return texts[0]
    return "ok" if numbers else "no unfused reference"


def family_summary(result: dict[str, Any]) -> dict[str, Any]:
    layers = result.get("layers", {})
    statuses = [_layer_status(i) for i in layers.values()]
    validity = [_valid(i) for i in layers.values()]
    mads = [i["mad"] for i in layers.values() if i.get("mad") is not None]
    notes: list[str] = []
    for info in layers.values():
        for text in (
            info.get("reason") if _layer_status(info) == "unknown" else None,
            info.get("problem"),
            info.get("mad_error"),
        ):
            if text and text not in notes:
                notes.append(text)
    for v in validity:
        if v not in ("ok", "no unfused reference", "not captured") and v not in notes:
            notes.append(v)
    if layers:
        kinds = sorted({i.get("kind", "?") for i in layers.values()})
        attention = "not captured" if "not captured" in statuses else (
            "unknown" if "unknown" in statuses else (
                "known" if "known" in statuses else "n/a"))  # fmt: skip
    else:
        kinds, attention = [], "none"
    return {
        "known": statuses.count("known"),
        "na": statuses.count("n/a"),
        "unknown": statuses.count("unknown"),
        "not_captured": statuses.count("not captured"),
        "valid": sum(v == "ok" for v in validity),
        "no_reference": sum(v == "no unfused reference" for v in validity),
        "kinds": kinds,
        "attention": attention,
        "mad": (min(mads), max(mads)) if mads else None,
        "notes": notes,
    }


def write_markdown(results: dict[str, dict[str, Any]], path: Path) -> None:
    rows, totals = [], {
        "families": len(results), "run": 0, "skipped": 0, "failed": 0, "channels": 0,
        "attention": 0, "known": 0, "na": 0, "unknown": 0, "not_captured": 0,
        "wrong_probs": 0, "changed_outputs": 0,
    }  # fmt: skip
    for family, result in sorted(results.items()):
        status = result.get("status")
        if status != "ok":
            totals["skipped" if status == "skipped" else "failed"] += 1
            rows.append(
                f"| {family} | {result.get('model', '?')} | "
                f"{result.get('params', 0) / 1e6:.1f} | | | | | | | | | "
                f"**{status}**: {str(result.get('error', '')).strip()[-300:]} |"
            )
            continue
        totals["run"] += 1
        s = family_summary(result)
        totals["channels"] += result["channels_captured"] > 0
        if result["attention_found"]:
            totals["attention"] += 1
            key = {"known": "known", "n/a": "na", "unknown": "unknown"}.get(
                s["attention"], "not_captured"
            )
            totals[key] += 1
        layer_count = len(result["layers"])
        wrong = layer_count - s["valid"] - s["no_reference"] - s["not_captured"]
        totals["wrong_probs"] += wrong > 0
        totals["changed_outputs"] += not result["outputs_unchanged"]
        mad = f"{s['mad'][0]:.0f}–{s['mad'][1]:.0f}" if s["mad"] else ""
        geometry = f"{s['known']} / {s['na']} / {s['unknown']}" if layer_count else "—"
        rows.append(
            f"| {family} | {result['model']} | {result['params'] / 1e6:.1f} | "
            f"{result['input_size'][0]}×{result['input_size'][1]} | "
            f"{result['channels_captured']}/{result['channels_found']} | "
            f"{layer_count - s['not_captured']}/{layer_count} | "
            f"{s['valid']} ok, {s['no_reference']} no ref | "
            f"{geometry} ({', '.join(s['kinds'])}) | {mad} | "
            f"{'yes' if result['outputs_unchanged'] else 'NO'} | "
            f"{result['seconds']} s, {result['peak_mb']} MB | {'; '.join(s['notes'])[:400]} |"
        )
    lines = [
        "# Coverage of timm families",
        "",
        "Generated by `benchmarks/coverage_sweep.py` (random weights, one image, CPU): the",
        "smallest model of every timm module, captured with `hooks.capture`. Attention",
        "status per family: **known** — every attention layer captured and its token",
        "geometry known (or not applicable); **n/a** — only class or channel attention (no",
        "spatial query, no distance); **unknown** — some layer has no geometry (reason in",
        "the notes; no distance is reported for it); **not captured** — some layer gave no",
        "probabilities (reason in the notes).",
        "",
        "## Totals",
        "",
        f"- families: {totals['families']} (run {totals['run']}, skipped {totals['skipped']},"
        f" failed {totals['failed']})",
        f"- channels captured: {totals['channels']} of {totals['run']} families run",
        f"- families with attention: {totals['attention']} — geometry known "
        f"{totals['known']}, not applicable {totals['na']}, unknown {totals['unknown']},"
        f" not captured {totals['not_captured']}",
        f"- families with probabilities off (rows ≠ 1 or ≠ unfused): {totals['wrong_probs']}",
        f"- families whose outputs changed under capture: {totals['changed_outputs']}",
        "",
        "## Per family",
        "",
        "Columns: channel layers captured / found; attention layers captured / found;",
        "validated probabilities (rows sum to 1 and equal to the unfused computation within",
        "1e-4, fused path included; *no ref* = the module has no unfused `attn_drop` path to",
        "compare with, rows still checked); geometry known / n/a / unknown per layer (kinds);",
        "MAD range over layers in px (mean over heads, renormalised, random weights);",
        "outputs bit-identical under capture; time and peak RSS of the subprocess.",
        "",
        "| family | model | M params | input | channels | attention | probabilities |"
        " geometry | MAD px | outputs | cost | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--families", help="comma-separated timm modules (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "coverage.md")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "coverage.json")
    parser.add_argument("--reuse", action="store_true", help="keep results already in --json")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    families = args.families.split(",") if args.families else None
    results: dict[str, dict[str, Any]] = {}
    if args.reuse and args.json.exists():
        results = json.loads(args.json.read_text())
    print("choosing the smallest model per family ...", file=sys.stderr)
    chosen = smallest_models(families)
    for family, (model, _) in chosen.items():
        if family in results and results[family].get("model") == model:
            continue
        print(f"{family}: {model}", file=sys.stderr, flush=True)
        results[family] = _child(model, args.timeout)
        args.json.write_text(json.dumps(results, indent=1))
        write_markdown(results, args.out)
    write_markdown(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
