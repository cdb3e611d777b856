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

``--main`` runs the default main job instead — ``inspector.analyze`` with every analysis on
2 builtin images, random weights — on the same models (and, for windowed families, also
at an input size whose maps do not fill whole windows, so padding is exercised). Results
go to ``benchmarks/coverage_main.json``, one entry per model written as soon as it is
done; a rerun skips the models already there (``--fresh`` reruns them), so the sweep can
be stopped and continued. ``docs/coverage.md`` reports both sweeps (``--report`` rewrites
it from the two result files). Run it in the background, one process at a time::

    nohup .venv/bin/python benchmarks/coverage_sweep.py --main > /tmp/main-sweep.log 2>&1 &
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
sys.path.insert(0, str(REPO / "benchmarks"))

from _coverage_report import TOLERANCE, UNCOMPARABLE, write_markdown  # noqa: E402

MAX_PARAMS = 100_000_000
LOW_PRIORITY = ("_enc", "_dist", "_distilled", "_clip", "_siglip")  # same arch, other head
ATTENTION_LIKE = re.compile(r"Attention|Attn|SHSA|MHSA")
# One intra-op thread per model: on a shared machine (more runnable processes than cores)
# two OpenMP threads wait on each other's time slices — a forward of mobilenetv3_small_050
# took 5-10 s with 2 threads and 0.17 s with 1 on the 2-core dev box under load.
THREADS = 1


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
    from hooks._discovery import head_count
    from hooks._taps import _as_sequences

    out = _as_sequences(probs, head_count(module), module)
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
    prefix rows/cols dropped, rows renormalised over spatial keys (METRICS.md §1); in
    windows zero-padded at the border, padded queries dropped and padded keys left out."""
    import numpy as np

    from inspector.analyzers._distance import mean_attention_distance
    from inspector.analyzers._geometry import distance_matrix

    queries, keys = geometry.centres()
    distances = distance_matrix(queries, keys)
    slots = geometry.real_slots()
    if slots is None:
        stats = mean_attention_distance(probs.double().numpy(), distances, geometry.prefix)
        return float(stats.renormalised.mean())
    p = geometry.prefix
    spatial = probs.double().numpy()[..., p:, p:]  # [sequence, head, Q, K]
    windows = slots[0].shape[0]
    real_q = np.tile(slots[0], (spatial.shape[0] // windows, 1))[:, None, :]
    real_k = np.tile(slots[1], (spatial.shape[0] // windows, 1))[:, None, None, :]
    spatial = spatial * real_k
    with np.errstate(invalid="ignore", divide="ignore"):
        per_query = (spatial * distances).sum(-1) / spatial.sum(-1)
    valid = real_q & np.isfinite(per_query)
    per_head = np.where(valid, per_query, 0).sum((0, 2)) / valid.sum((0, 2))
    return float(per_head.mean())


def run_one(name: str) -> dict[str, Any]:
    """Capture model ``name`` and validate everything; a JSON-able dict."""
    import timm
    import torch

    import hooks

    torch.set_num_threads(THREADS)
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


# -- the default main job (``--main``) ----------------------------------------------------

PADDED_SIZES = {  # windowed families: an input whose maps are not a multiple of the window
    "swin_transformer": 256,
    "swin_transformer_v2": 224,
    "swin_transformer_v2_cr": 256,
    "maxxvit": 256,
    "davit": 256,
    "gcvit": 256,
    "vision_transformer_sam": 272,
    "hieradet_sam2": 256,
    "tiny_vit": 256,
    "nest": 256,
    "twins": 256,
    "efficientvit_msra": 256,
}


def main_one(name: str, size: int | None, analyses: str | None = None) -> dict[str, Any]:
    """``inspector.analyze`` with every analysis on 2 builtin images; per analysis ok or
    the reason it failed, and the geometry kinds of the attention layers."""
    import tempfile

    import timm
    import torch

    import hooks
    from inspector import AnalyzeOptions, analyze
    from inspector.present import failed_analyses

    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    out: dict[str, Any] = {"model": name, "status": "ok", "size": size}
    with torch.device("meta"):
        meta = timm.create_model(name, pretrained=False)
    params = sum(p.numel() for p in meta.parameters())
    out["params"] = params
    if params > MAX_PARAMS:
        out.update(status="skipped", error=f"{params / 1e6:.0f}M parameters > 100M")
        return out
    default = int(meta.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    smaller = size is None and default > 256 and bool(hooks.find_attention(meta))
    if smaller:  # try the smaller size it allows, else its own
        size = 224
    del meta
    model: Any = name
    input_size = None
    if size is not None and size != default:
        try:
            model = timm.create_model(name, pretrained=False, img_size=size).eval()
            model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size)}
        except TypeError:  # no img_size: a model whose maps follow the input
            input_size = size
        except Exception as exc:
            if not smaller:
                out.update(status="skipped", error=f"cannot build at {size} px: {exc}")
                return out
            model, size = name, None
    out["input"] = size or default
    chosen = {"analyses": tuple(analyses.split(","))} if analyses else {}
    options = AnalyzeOptions(
        weights="random", limit=2, input_size=input_size, report=False, progress=False, **chosen
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = analyze(model, "builtin", out=tmp, options=options)
        failed = failed_analyses(run)
        out["analyses"] = {a: failed.get(a, "ok") for a in options.analyses}
        kinds: dict[str, int] = {}
        padded = 0
        for layer in run.attention_layers():
            geometry = layer.attrs.get("geometry") or {}
            kind = str(geometry.get("kind", "unknown"))
            kinds[kind] = kinds.get(kind, 0) + 1
            padded += bool(geometry) and hooks.TokenGeometry.from_dict(geometry).padded
        out["attention"] = kinds
        out["padded_layers"] = padded  # windows zero-padded at the border (METRICS.md §1)
        out["notes"] = {a: dict(list(run.result(a).notes.items())[:3]) for a in run.analysis}
        out["warnings"] = []
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _write_report(args: argparse.Namespace) -> None:
    """``--out`` from both result files (the main job and the capture sweep)."""
    write_markdown(_load(args.json), args.out, main=_load(args.main_json))


def _main_sweep(args: argparse.Namespace, families: list[str] | None) -> int:
    results = _load(args.main_json)
    chosen = choose_models(families, args.counts)
    added = args.add_analyses.split(",") if args.add_analyses else []
    for family, models in chosen.items():
        runs = [] if args.padded_only else [(m, None) for m in models]
        if family in PADDED_SIZES:
            runs.append((models[-1], PADDED_SIZES[family]))
        for model, size in runs:
            key = f"{family}/{model}" + (f"@{size}" if size else "")
            extra = ["--size", str(size)] if size else []
            if added:  # analyses that joined the default job: run them, merge per analysis
                done = results.get(key, {})
                if done.get("status") != "ok" or all(a in done["analyses"] for a in added):
                    continue
                print(f"{key} (+{args.add_analyses})", file=sys.stderr, flush=True)
                one = _child(
                    model, args.timeout, ["--main", "--analyses", args.add_analyses, *extra]
                )
                if one.get("status") == "ok":
                    done["analyses"].update({a: one["analyses"][a] for a in added})
                else:
                    done["analyses"].update({a: f"run failed: {one.get('error')}" for a in added})
            elif key in results and results[key].get("status") != "failed" and not args.fresh:
                continue  # done (a failed run is tried again)
            else:
                print(f"{key}", file=sys.stderr, flush=True)
                results[key] = {"family": family, **_child(model, args.timeout, ["--main", *extra])}
            args.main_json.write_text(json.dumps(results, indent=1))
            _write_report(args)
    _write_report(args)
    return 0


# -- driver -------------------------------------------------------------------------------


def _child(model: str, timeout: int, extra: list[str] | None = None) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--one", model, *(extra or [])],
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
    parser.add_argument("--main", action="store_true", help="the default main job per model")
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fresh", action="store_true", help="--main: rerun models done")
    parser.add_argument(
        "--padded-only", action="store_true", help="--main: only the runs at a padding size"
    )
    parser.add_argument(
        "--add-analyses",
        help="--main: run only these analyses (comma-separated) on the models already "
        "swept and add them to their rows (analyses that joined the default job later)",
    )
    parser.add_argument("--analyses", help=argparse.SUPPRESS)
    parser.add_argument(
        "--main-json", type=Path, default=REPO / "benchmarks" / "coverage_main.json"
    )
    parser.add_argument(
        "--report", action="store_true", help="only rewrite --out from the result files"
    )
    args = parser.parse_args(argv)
    if args.one:
        import timm

        one = main_one(args.one, args.size, args.analyses) if args.main else run_one(args.one)
        print(json.dumps({**one, "timm": timm.__version__}, default=str))
        return 0
    if args.report:
        _write_report(args)
        return 0
    families = args.families.split(",") if args.families else None
    if args.main:
        return _main_sweep(args, families)
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
        write_markdown(results, args.out, main=_load(args.main_json))
    write_markdown(results, args.out, main=_load(args.main_json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
