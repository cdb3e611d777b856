"""Run the analyzers: build their inputs from the capture state and the model passes."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

import hooks

from ._capture_pass import CapturePassResult
from ._images import ImageSet
from ._options import ALL_ANALYSES, AnalyzeOptions
from ._passes import erf_layers, erf_pass, importance_pass, pruning_pass
from .analyzers import (
    REGISTRY,
    AblationInput,
    AnalysisInputs,
    ErfInput,
    GateInput,
    LayerInput,
    PruningInput,
)
from .store import RunWriter

__all__ = ["layer_inputs", "run_analyses"]

logger = logging.getLogger("inspector")


def _distances(geometry: dict[str, Any]) -> np.ndarray | None:
    parsed = hooks.TokenGeometry.from_dict(geometry)
    if not parsed.known:
        return None
    queries, keys = parsed.centres()
    return np.sqrt(((queries[:, None, :] - keys[None, :, :]) ** 2).sum(-1))


def layer_inputs(tree: dict[str, dict[str, Any]]) -> dict[str, LayerInput]:
    """Analyzer inputs from per-layer state (as :func:`state_tree` or the run file gives)."""
    out = {}
    for name, data in tree.items():
        attrs = data["attrs"]
        geometry = attrs.get("geometry")
        out[name] = LayerInput(
            name=name,
            kind=attrs["kind"],
            attrs=attrs,
            summaries=data.get("summaries") or {},
            maps=data.get("maps"),
            moments=data.get("moments"),
            groups=data.get("groups"),
            distances=_distances(geometry) if geometry else None,
        )
    return out


def _units(cap: hooks.Capture) -> dict[str, dict[str, int]]:
    model_modules = dict(cap.model.named_modules())
    heads = {
        n: r.heads
        for n, r in cap.attention.items()
        if r.moments is not None and not isinstance(model_modules[n], nn.MultiheadAttention)
    }
    channels = {n: r.channels for n, r in cap.channels.items() if r.channels}
    return {k: v for k, v in (("heads", heads), ("channels", channels)) if v}


def run_analyses(
    model: nn.Module,
    captured: CapturePassResult,
    images: ImageSet,
    opts: AnalyzeOptions,
    writer: RunWriter,
    device: torch.device,
) -> dict[str, float]:
    """Run the selected analyzers in as few passes as possible; write their results.

    Returns:
        Seconds per pass (``receptive_field``, ``importance``, ``pruning``, ``analyzers``).
    """
    names = [a for a in ALL_ANALYSES if a in opts.analyses]
    needs = REGISTRY.needs(names)
    cap = captured.capture
    inputs = layer_inputs(captured.state())
    timings: dict[str, float] = {}
    erf: dict[str, ErfInput] = {}
    gates: dict[str, GateInput] = {}
    pruning: dict[str, PruningInput] = {}
    notes: dict[str, str] = {}
    if needs & {"erf", "gates", "pruning"}:
        x, _, labels = next(images.batches(opts.erf_images))
        x = x.to(device)
        if "erf" in needs:
            began = time.perf_counter()
            geometry = {n: r.geometry for n, r in cap.attention.items()}
            layers = erf_layers(model, list(cap.attention), list(cap.channels))
            maps, skipped = erf_pass(model, x, layers, geometry, progress=opts.progress)
            erf = {
                name: ErfInput(
                    map=v["map"],
                    centre=(float(v["centre"][0]), float(v["centre"][1])),
                    branch=v["branch"],
                    position=v["note"],
                )
                for name, v in maps.items()
            }
            erf |= {name: ErfInput(reason=reason) for name, reason in skipped.items()}
            timings["receptive_field"] = time.perf_counter() - began
        units = _units(cap)
        if needs & {"gates", "pruning"} and units:
            began = time.perf_counter()
            try:
                passed = importance_pass(model, x, units, labels)
                full_logits = passed.pop("logits")
                gates = {
                    kind: GateInput(
                        raw=v["raw"],
                        ablation=AblationInput(
                            layers=tuple(v["ablation"]["layers"]),
                            units=v["ablation"]["units"],
                            gradient=v["ablation"]["gradient"],
                            delta=v["ablation"]["delta"],
                            images=v["ablation"]["images"],
                        ),
                    )
                    for kind, v in passed.items()
                }
            except ValueError as exc:
                notes["importance"] = str(exc)
            timings["importance"] = time.perf_counter() - began
        if "pruning" in needs and gates:
            began = time.perf_counter()
            importance = REGISTRY["importance"]().compute(AnalysisInputs(inputs, gates=gates))
            for kind in gates:
                broken = [p for p in units[kind] if p not in importance.layers]
                if broken:  # an order over part of the units would mislabel the curve
                    notes[f"pruning:{kind}"] = (
                        f"{kind} not pruned: no finite importance for {', '.join(broken[:3])}"
                    )
                    continue
                ranked = sorted(
                    (float(v), path, unit)
                    for path, layer in importance.layers.items()
                    if layer.kind == kind
                    for unit, v in enumerate(layer.normalised)
                )
                order = [(path, unit) for _, path, unit in ranked]
                curve = pruning_pass(model, x, kind, units[kind], order, full=full_logits)
                pruning[kind] = PruningInput(
                    curve["fractions"], curve["agreement"], curve["kl"], units=len(order)
                )
            timings["pruning"] = time.perf_counter() - began
    began = time.perf_counter()
    analysis_inputs = AnalysisInputs(inputs, erf=erf, gates=gates, pruning=pruning)
    for name in names:
        analyzer = REGISTRY[name]()
        result = analyzer.compute(analysis_inputs)
        if name in ("importance", "pruning_curve") and "importance" in notes:
            result = replace(result, notes={"model": notes["importance"]})
        if name == "pruning_curve":
            pruned = {
                key.partition(":")[2]: note
                for key, note in notes.items()
                if key.startswith("pruning:")
            }
            result = replace(result, notes={**result.notes, **pruned})
        writer.write_analysis(name, result.to_tree(), result.params, result.version)
    timings["analyzers"] = time.perf_counter() - began
    return timings
