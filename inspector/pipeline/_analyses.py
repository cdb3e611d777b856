"""The passes after the capture, each returning a typed input, and the analyzers on them."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
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
    EquivarianceInput,
    ErfInput,
    GateInput,
    ImportanceResult,
    IntervalSpec,
    LayerInput,
    MeanMapInput,
    PruningInput,
    bootstrap,
    wilson_interval,
)
from ..store import RunWriter
from ._capture import CaptureInput
from ._equivariance import equivariance_pass
from ._gradients import (
    ABLATE,
    PRUNING_STEPS,
    _logits,
    erf_layers,
    erf_pass,
    importance_pass,
    pruning_pass,
)
from ._mean_maps import MeanMaps
from ._plan import PASSES_OF, Plan
from ._progress import Progress, Silent

__all__ = [
    "EquivariancePassResult",
    "ErfPassResult",
    "ImportancePassResult",
    "PruningPassResult",
    "gate_units",
    "importance_split",
    "layer_inputs",
    "pruning_order",
    "run_analyses",
]

logger = logging.getLogger("inspector")


@dataclass(frozen=True)
class ErfPassResult:
    """The receptive-field pass: per layer its map, centre and branch, or why it has none."""

    layers: Mapping[str, ErfInput] = field(default_factory=dict)
    seconds: float = 0.0
    images: int = 0


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
    images: int = 0


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


def _slots(geometry: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    parsed = hooks.TokenGeometry.from_dict(geometry)
    return parsed.real_slots() if parsed.known else None


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
            image_groups=layer.image_groups,
            distances=_distances(layer.attrs["geometry"]) if layer.attrs.get("geometry") else None,
            slots=_slots(layer.attrs["geometry"]) if layer.attrs.get("geometry") else None,
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


def _erf_wide(layers: Mapping[str, dict[str, Any]], precision: float) -> bool:
    """Whether some block's ERF mean distance interval is still wider than ``precision``
    (half-width relative to the estimate; a quick 200-resample bootstrap)."""
    spec = IntervalSpec(resamples=200)
    for v in layers.values():
        if v["branch"] not in ("block", "conv"):
            continue
        weighted, mass = np.concatenate(v["weighted"]), np.concatenate(v["mass"])
        if weighted.size < 2 or mass.sum() <= 0:
            return True
        point = weighted.sum() / mass.sum()

        def ratio(i: np.ndarray, w: np.ndarray = weighted, m: np.ndarray = mass) -> np.ndarray:
            return np.asarray(w[i].sum() / m[i].sum())

        low, high = bootstrap(weighted.size, ratio, spec)
        if (high - low) / 2 > precision * max(point, 1e-9):
            return True
    return False


PROFILE_GROUPS = 32
"""Radial ERF profiles are kept per image up to this many images, then summed into this
many disjoint image groups (image ``i`` into group ``i mod 32``), so their memory does not
grow with the images; the radii's bootstrap resamples the groups (METRICS.md §7)."""


def _grouped(groups: np.ndarray | None, profile: np.ndarray, seen: int) -> np.ndarray:
    """Add a batch's per-image profiles (images ``seen``, ``seen + 1``, ...) to the group
    profiles ``[group, radius]``."""
    if groups is None:
        groups = np.zeros((0, profile.shape[1]))
    for i, row in enumerate(profile):
        group = (seen + i) % PROFILE_GROUPS
        if group == groups.shape[0]:
            groups = np.vstack([groups, row[None]])
        else:
            groups[group] += row
    return groups


class ErfPass:
    """Gradient ERF of every block, attention branch (or convolution of a plain CNN), on
    ``erf_images`` images, or in the adaptive mode batch after batch until every block's
    mean-distance interval is narrow enough."""

    name = "receptive_field"

    def run(
        self,
        model: nn.Module,
        capture: CaptureInput,
        plan: Plan,
        progress: Progress | None = None,
    ) -> ErfPassResult:
        began = time.perf_counter()
        opts = plan.options
        attention = [n for n, s in capture.state.layers.items() if s.kind == "attention"]
        channels = [n for n, s in capture.state.layers.items() if s.kind == "channel"]
        geometry = {n: g for n in attention if (g := capture.state.layers[n].geometry) is not None}
        layers = erf_layers(model, attention, channels)
        total: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        seen = 0
        limit = opts.max_images if opts.adaptive else opts.erf_images
        # one item per layer and batch; the adaptive mode adds a batch's layers as it goes
        with (progress or Silent()).step("receptive field", len(layers), "layers") as step:
            for x, _, _ in plan.images.batches(min(opts.erf_images, limit)):
                if seen:
                    step.extend(len(layers))
                x = x[: limit - seen].to(plan.device)
                found, skipped = erf_pass(model, x, layers, geometry, tick=step.update)
                n = x.shape[0]
                seen = self._add(total, found, n, seen, keep=opts.erf_images)
                if seen >= limit or not opts.adaptive or not _erf_wide(total, opts.precision):
                    break
        out = {
            name: ErfInput(
                map=v["map"] / seen,
                per_image=np.concatenate(v["per_image"]) if v["per_image"] else None,
                centre=(float(v["centre"][0]), float(v["centre"][1])),
                branch=v["branch"],
                position=v["note"],
                weighted=np.concatenate(v["weighted"]),
                mass=np.concatenate(v["mass"]),
                profile=v["profile"],
                radii=v["radii"],
                theoretical_rf=float(v["theoretical_rf"]),
                replknet_map=None if v["replknet_map"] is None else v["replknet_map"] / seen,
            )
            for name, v in total.items()
        }
        out |= {name: ErfInput(reason=reason) for name, reason in skipped.items()}
        return ErfPassResult(out, time.perf_counter() - began, images=seen)

    @staticmethod
    def _add(
        total: dict[str, dict[str, Any]],
        found: Mapping[str, dict[str, Any]],
        n: int,
        seen: int,
        keep: int = 0,
    ) -> int:
        """Add one batch of ``n`` images (``seen`` before it) to the running sums (and the
        per-image maps of the first ``keep`` images, for input dependence); returns the
        images seen after it."""
        for name, v in found.items():
            into = total.setdefault(
                name,
                {
                    **v,
                    "map": 0.0,
                    "replknet_map": None,
                    "weighted": [],
                    "mass": [],
                    "profile": None,
                    "per_image": [],
                },
            )
            into["map"] = into["map"] + v["map"] * n
            if v["replknet_map"] is not None:
                base = into["replknet_map"]
                into["replknet_map"] = v["replknet_map"] * n + (0 if base is None else base)
            into["weighted"].append(v["weighted"])
            into["mass"].append(v["mass"])
            into["profile"] = _grouped(into["profile"], v["profile"], seen)
            if seen < keep:
                into["per_image"].append(v["per_image"][: keep - seen])
        return seen + n


def importance_split(total: int, available: int) -> tuple[int, int]:
    """``(importance, held_out)`` image counts of ``total`` pruning images, at most
    ``available``: importance on the first half (rounded up), the curve on the rest."""
    total = min(total, available)
    first = (total + 1) // 2
    return first, total - first


@dataclass(frozen=True)
class EquivariancePassResult:
    """The equivariance pass: per layer its outputs on shifted images, or why it has none."""

    layers: Mapping[str, EquivarianceInput] = field(default_factory=dict)
    seconds: float = 0.0


class EquivariancePass:
    """Outputs of the ERF layers on the images and on circularly rolled copies."""

    name = "translation_equivariance"

    def run(
        self,
        model: nn.Module,
        capture: CaptureInput,
        plan: Plan,
        erf: ErfPassResult,
        progress: Progress | None = None,
    ) -> EquivariancePassResult:
        began = time.perf_counter()
        attention = [n for n, s in capture.state.layers.items() if s.kind == "attention"]
        channels = [n for n, s in capture.state.layers.items() if s.kind == "channel"]
        geometry = {n: g for n in attention if (g := capture.state.layers[n].geometry) is not None}
        names = [name for name, _ in erf_layers(model, attention, channels)]
        x, _, _ = next(plan.images.batches(plan.options.erf_images))
        x = x[: plan.options.erf_images].to(plan.device)
        # one forward on the images, then one per distinct shift (counted once known)
        with (progress or Silent()).step("equivariance", 1, "forwards") as step:
            found = equivariance_pass(
                model, x, names, geometry, erf.layers, tick=step.update, extend=step.extend
            )
        return EquivariancePassResult(found, time.perf_counter() - began)


def mean_map_inputs(mean_maps: MeanMaps | None) -> dict[str, MeanMapInput]:
    """Analyzer inputs from the capture pass's streamed map sums (a layer whose sums
    cannot be read gets the reason)."""
    out: dict[str, MeanMapInput] = {}
    if mean_maps is None:
        return out
    for name, item in mean_maps.arrays().items():
        if "problem" in item:
            out[name] = MeanMapInput(reason=str(item["problem"]))
        else:
            out[name] = MeanMapInput(item["maps"], item["entropy"], item["counts"])
    return out


class ImportancePass:
    """Gate-gradient importance of every gateable head and captured channel."""

    name = "importance"

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        labels: torch.Tensor,
        units: Mapping[str, Any],
        ablate: int = ABLATE,
        progress: Progress | None = None,
    ) -> ImportancePassResult:
        began = time.perf_counter()
        # one backward for every gate, then ``ablate`` single-unit ablations per kind
        total = 1 + sum(min(ablate, sum(layers.values())) for layers in units.values())
        try:
            with (progress or Silent()).step("importance", total, "passes") as step:
                found = importance_pass(model, x, units, labels, ablate=ablate, tick=step.update)
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
                    gradient_images=v["ablation"]["gradient_images"],
                    delta_images=v["ablation"]["delta_images"],
                ),
            )
            for kind, v in found.items()
        }
        return ImportancePassResult(
            kinds, units, logits, seconds=time.perf_counter() - began, images=int(x.shape[0])
        )


def pruning_order(
    importance: ImportanceResult, kind: str, order: str = "raw"
) -> list[tuple[str, int]]:
    """Units of ``kind`` in increasing ``raw`` or ``normalised`` importance (ties by path
    and unit)."""
    ranked = sorted(
        (float(v), path, unit)
        for path, layer in importance.layers.items()
        if layer.kind == kind
        for unit, v in enumerate(layer.raw if order == "raw" else layer.normalised)
    )
    return [(path, unit) for _, path, unit in ranked]


class PruningPass:
    """Pruning curves on held-out images: units removed in increasing importance (as
    estimated on the importance images, which the held-out ones never include)."""

    name = "pruning"

    def run(
        self,
        model: nn.Module,
        plan: Plan,
        gates: ImportancePassResult,
        layers: Mapping[str, LayerInput],
        start: int,
        held_out: int,
        progress: Progress | None = None,
    ) -> PruningPassResult:
        began = time.perf_counter()
        opts = plan.options
        importance = REGISTRY["importance"]().compute(AnalysisInputs(layers, gates=gates.kinds))
        orders: dict[str, list[tuple[str, int]]] = {}
        notes: dict[str, str] = {}
        for kind in gates.kinds:
            broken = [p for p in gates.units[kind] if p not in importance.layers]
            if broken:  # an order over part of the units would mislabel the curve
                notes[kind] = f"{kind} not pruned: no finite importance for {', '.join(broken[:3])}"
                continue
            orders[kind] = pruning_order(importance, kind, opts.pruning_order)
        if held_out < 1:
            notes |= {k: f"{k} not pruned: no held-out image left" for k in orders}
            return PruningPassResult({}, notes, time.perf_counter() - began)
        sums: dict[str, dict[str, Any]] = {}
        seen = 0
        limit = opts.max_images if opts.adaptive else held_out
        per_batch = PRUNING_STEPS * len(orders)  # pruned forwards per held-out batch
        with (progress or Silent()).step("pruning", per_batch, "forwards") as step:
            for x, _, labels in plan.images.batches(held_out, start=start):
                if seen:  # the adaptive mode takes another batch
                    step.extend(per_batch)
                x, labels = x[: limit - seen].to(plan.device), labels[: limit - seen]
                n = x.shape[0]
                try:
                    with torch.inference_mode():  # the unpruned logits, once for every kind
                        full = _logits(model, x)
                    found = {
                        kind: pruning_pass(
                            model,
                            x,
                            kind,
                            gates.units[kind],
                            order,
                            full=full,
                            labels=labels,
                            tick=step.update,
                        )
                        for kind, order in orders.items()
                    }
                except ValueError as exc:
                    notes["model"] = str(exc)
                    return PruningPassResult({}, notes, time.perf_counter() - began)
                for kind, curve in found.items():
                    into = sums.setdefault(
                        kind, {"agree": 0.0, "kl": 0.0, "correct": 0.0, "lab": 0}
                    )
                    into["fractions"] = curve["fractions"]
                    into["agree"] = into["agree"] + curve["agreement"] * n
                    into["kl"] = into["kl"] + curve["kl"] * n
                    lab = int(curve["labelled"])
                    if lab:
                        into["correct"] = into["correct"] + curve["accuracy"] * lab
                    into["lab"] += lab
                seen += n
                if seen >= limit or not opts.adaptive:
                    break
                widest = max(
                    float(np.max(high - low))
                    for v in sums.values()
                    for low, high in [wilson_interval(np.round(v["agree"]), seen)]
                )
                if widest / 2 <= opts.precision:
                    break
        curves = {
            kind: PruningInput(
                v["fractions"],
                v["agree"] / seen,
                v["kl"] / seen,
                units=len(orders[kind]),
                images=seen,
                accuracy=v["correct"] / v["lab"] if v["lab"] else None,
                labelled=v["lab"],
                importance_images=gates.images,
            )
            for kind, v in sums.items()
        }
        return PruningPassResult(curves, notes, time.perf_counter() - began)


def _failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_analyses(
    model: nn.Module,
    plan: Plan,
    capture: CaptureInput,
    writer: RunWriter,
    progress: Progress | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Run the plan's model passes, then its analyzers; write their results.

    A pass or an analyzer that raises does not stop the run: the analyses it feeds are
    recorded as failed with the reason (root attribute ``failed_analyses``, a warning) and
    the others are written.

    Returns:
        Seconds per pass (``receptive_field``, ``translation_equivariance``,
        ``importance``, ``pruning``, ``analyzers``) and per analyzer (``analyzer:NAME``),
        and the failed analyses with their reasons.
    """
    layers = layer_inputs(capture.state)
    erf, gates, pruning = ErfPassResult(), ImportancePassResult(), PruningPassResult()
    shifted = EquivariancePassResult()
    timings: dict[str, float] = {}
    opts = plan.options
    failed: dict[str, str] = {}

    def broke(step: str, exc: Exception) -> None:
        logger.debug("%s pass failed", step, exc_info=True)
        for name in plan.analyses:
            if step in PASSES_OF.get(name, ()) and name not in failed:
                failed[name] = f"the {step.replace('_', '-')} pass failed: {_failure(exc)}"

    if "receptive_field" in plan.passes:
        try:
            erf = ErfPass().run(model, capture, plan, progress)
            timings["receptive_field"] = erf.seconds
        except Exception as exc:
            broke("receptive_field", exc)
    if "translation_equivariance" in plan.passes:
        try:
            shifted = EquivariancePass().run(model, capture, plan, erf, progress)
            timings["translation_equivariance"] = shifted.seconds
        except Exception as exc:
            broke("translation_equivariance", exc)
    units = gate_units(plan.gateable, capture.state)
    first, held_out = importance_split(opts.pruning_images, len(plan.images))
    if "importance" in plan.passes and units:
        try:
            x, _, labels = next(plan.images.batches(first))
            gates = ImportancePass().run(
                model,
                x.to(plan.device),
                labels,
                units,
                ablate=opts.ablation_units,
                progress=progress,
            )
            timings["importance"] = gates.seconds
        except Exception as exc:
            broke("importance", exc)
    if "pruning" in plan.passes and gates.kinds:
        try:
            pruning = PruningPass().run(
                model, plan, gates, layers, first, held_out, progress=progress
            )
            timings["pruning"] = pruning.seconds
        except Exception as exc:
            broke("pruning", exc)
    began = time.perf_counter()
    inputs = AnalysisInputs(
        layers,
        erf=erf.layers,
        gates=gates.kinds,
        pruning=pruning.curves,
        mean_maps=mean_map_inputs(plan.mean_maps),
        equivariance=shifted.layers,
    )
    for name in plan.analyses:
        if name in failed:
            continue
        try:
            analyzer = (
                REGISTRY[name](threshold=opts.pruning_threshold, order=opts.pruning_order)
                if name == "pruning_curve"
                else REGISTRY[name]()
            )
            began_one = time.perf_counter()
            result = analyzer.compute(inputs)
            timings[f"analyzer:{name}"] = time.perf_counter() - began_one
            notes = dict(result.notes)
            if name in ("importance", "pruning_curve") and gates.problem is not None:
                notes = {"model": gates.problem}
            if name == "pruning_curve":
                notes |= pruning.notes
            result = dataclasses.replace(result, notes=notes)
            tree = result.to_tree()
        except Exception as exc:
            logger.debug("analysis %s failed", name, exc_info=True)
            failed[name] = _failure(exc)
            continue
        writer.write_analysis(name, tree, result.params, result.version)
    timings["analyzers"] = time.perf_counter() - began
    for name, reason in failed.items():
        logger.warning("analysis %s failed (the others are written): %s", name, reason)
    return timings, failed
