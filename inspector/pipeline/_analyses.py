"""The passes after the capture, each returning a typed input, and the analyzers on them."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import hooks

from ..analyzers import (
    REGISTRY,
    AblationInput,
    AnalysisInputs,
    ErfInput,
    GateInput,
    LayerInput,
    PruningInput,
)
from ..store import RunWriter
from ._capture import CaptureInput
from ._gradients import ABLATE, PRUNING_STEPS, erf_layers, erf_pass, importance_pass, pruning_pass
from ._plan import Plan
from ._progress import Progress, Silent

__all__ = [
    "ErfPassResult",
    "ImportancePassResult",
    "PruningPassResult",
    "gate_units",
    "layer_inputs",
    "run_analyses",
]

logger = logging.getLogger("inspector")


@dataclass(frozen=True)
class ErfPassResult:
    """The receptive-field pass: per layer its map, centre and branch, or why it has none."""

    layers: Mapping[str, ErfInput] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class ImportancePassResult:
    """The importance pass: per unit kind (``heads``, ``channels``) the raw gate gradients
    and the ablation check; the units gated; the unpruned logits; why it could not run,
    if it could not."""

    kinds: Mapping[str, GateInput] = field(default_factory=dict)
    units: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    problem: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class PruningPassResult:
    """The pruning pass: per unit kind the curve; per kind not pruned the reason."""

    curves: Mapping[str, PruningInput] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _distances(geometry: Mapping[str, Any]) -> np.ndarray | None:
    parsed = hooks.TokenGeometry.from_dict(geometry)
    if not parsed.known:
        return None
    queries, keys = parsed.centres()
    return np.sqrt(((queries[:, None, :] - keys[None, :, :]) ** 2).sum(-1))


def layer_inputs(state: hooks.CaptureState) -> dict[str, LayerInput]:
    """Analyzer inputs from a capture state (a live pass's, or a run file's)."""
    return {
        name: LayerInput(
            name=name,
            kind=layer.kind,
            attrs={"kind": layer.kind, **layer.attrs},
            summaries=layer.summaries,
            maps=layer.maps,
            moments=layer.moments,
            groups=layer.groups,
            distances=_distances(layer.attrs["geometry"]) if layer.attrs.get("geometry") else None,
        )
        for name, layer in state.layers.items()
    }


def gate_units(gateable: Mapping[str, int], state: hooks.CaptureState) -> dict[str, dict[str, int]]:
    """Units the gradient passes gate: ``{"heads": {path: heads}, "channels": {path:
    channels}}``, the gateable heads (:func:`hooks.gateable_heads`) whose per-head outputs
    were captured and every captured channel layer that saw a channel."""
    layers = state.layers
    heads = {n: h for n, h in gateable.items() if n in layers and layers[n].moments is not None}
    channels = {
        n: int(s.attrs["channels"])
        for n, s in layers.items()
        if s.kind == "channel" and s.attrs.get("channels")
    }
    return {k: v for k, v in (("heads", heads), ("channels", channels)) if v}


class ErfPass:
    """Gradient ERF of every block, attention branch (or convolution of a plain CNN)."""

    name = "receptive_field"

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        capture: CaptureInput,
        plan: Plan,
        progress: Progress | None = None,
    ) -> ErfPassResult:
        began = time.perf_counter()
        attention = [n for n, s in capture.state.layers.items() if s.kind == "attention"]
        channels = [n for n, s in capture.state.layers.items() if s.kind == "channel"]
        geometry = {n: g for n in attention if (g := capture.state.layers[n].geometry) is not None}
        layers = erf_layers(model, attention, channels)
        with (progress or Silent()).step("receptive field", len(layers), "layers") as step:
            found, skipped = erf_pass(model, x, layers, geometry, tick=step.update)
        layers = {
            name: ErfInput(
                map=v["map"],
                centre=(float(v["centre"][0]), float(v["centre"][1])),
                branch=v["branch"],
                position=v["note"],
            )
            for name, v in found.items()
        }
        layers |= {name: ErfInput(reason=reason) for name, reason in skipped.items()}
        return ErfPassResult(layers, time.perf_counter() - began)


class ImportancePass:
    """Gate-gradient importance of every gateable head and captured channel."""

    name = "importance"

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        units: Mapping[str, Any],
        progress: Progress | None = None,
    ) -> ImportancePassResult:
        began = time.perf_counter()
        # one backward for every gate, then ABLATE single-unit ablations per kind
        total = 1 + sum(min(ABLATE, sum(layers.values())) for layers in units.values())
        try:
            with (progress or Silent()).step("importance", total, "passes") as step:
                found = importance_pass(model, x, units, labels, tick=step.update)
        except ValueError as exc:
            return ImportancePassResult(
                units=units, problem=str(exc), seconds=time.perf_counter() - began
            )
        logits = found.pop("logits")
        kinds = {
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
            for kind, v in found.items()
        }
        return ImportancePassResult(kinds, units, logits, seconds=time.perf_counter() - began)


class PruningPass:
    """Pruning curves: units removed in increasing normalised importance."""

    name = "pruning"

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        gates: ImportancePassResult,
        layers: Mapping[str, LayerInput],
        progress: Progress | None = None,
    ) -> PruningPassResult:
        began = time.perf_counter()
        step = (progress or Silent()).step("pruning", PRUNING_STEPS * len(gates.kinds), "forwards")
        with step as bar:
            return self._curves(model, x, gates, layers, began, bar.update)

    def _curves(
        self,
        model: nn.Module,
        x: torch.Tensor,
        gates: ImportancePassResult,
        layers: Mapping[str, LayerInput],
        began: float,
        tick: Callable[[int], None],
    ) -> PruningPassResult:
        importance = REGISTRY["importance"]().compute(AnalysisInputs(layers, gates=gates.kinds))
        curves: dict[str, PruningInput] = {}
        notes: dict[str, str] = {}
        for kind in gates.kinds:
            broken = [p for p in gates.units[kind] if p not in importance.layers]
            if broken:  # an order over part of the units would mislabel the curve
                notes[kind] = f"{kind} not pruned: no finite importance for {', '.join(broken[:3])}"
                continue
            ranked = sorted(
                (float(v), path, unit)
                for path, layer in importance.layers.items()
                if layer.kind == kind
                for unit, v in enumerate(layer.normalised)
            )
            order = [(path, unit) for _, path, unit in ranked]
            curve = pruning_pass(
                model, x, kind, gates.units[kind], order, full=gates.logits, tick=tick
            )
            curves[kind] = PruningInput(
                curve["fractions"], curve["agreement"], curve["kl"], units=len(order)
            )
        return PruningPassResult(curves, notes, time.perf_counter() - began)


def run_analyses(
    model: nn.Module,
    plan: Plan,
    capture: CaptureInput,
    writer: RunWriter,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Run the plan's model passes, then its analyzers; write their results.

    Returns:
        Seconds per pass (``receptive_field``, ``importance``, ``pruning``, ``analyzers``).
    """
    layers = layer_inputs(capture.state)
    erf, gates, pruning = ErfPassResult(), ImportancePassResult(), PruningPassResult()
    timings: dict[str, float] = {}
    if plan.passes:
        x, _, labels = next(plan.images.batches(plan.gradient_images))
        x = x.to(plan.device)
        if "receptive_field" in plan.passes:
            erf = ErfPass().run(model, x, capture, plan, progress)
            timings["receptive_field"] = erf.seconds
        units = gate_units(plan.gateable, capture.state)
        if "importance" in plan.passes and units:
            gates = ImportancePass().run(model, x, labels, units, progress)
            timings["importance"] = gates.seconds
        if "pruning" in plan.passes and gates.kinds:
            pruning = PruningPass().run(model, x, gates, layers, progress)
            timings["pruning"] = pruning.seconds
    began = time.perf_counter()
    inputs = AnalysisInputs(layers, erf=erf.layers, gates=gates.kinds, pruning=pruning.curves)
    for name in plan.analyses:
        result = REGISTRY[name]().compute(inputs)
        notes = dict(result.notes)
        if name in ("importance", "pruning_curve") and gates.problem is not None:
            notes = {"model": gates.problem}
        if name == "pruning_curve":
            notes |= pruning.notes
        result = dataclasses.replace(result, notes=notes)
        writer.write_analysis(name, result.to_tree(), result.params, result.version)
    timings["analyzers"] = time.perf_counter() - began
    return timings
