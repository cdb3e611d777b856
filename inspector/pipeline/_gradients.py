"""Model passes beyond capture: gradient ERF, gate-gradient importance, pruning curves.

Each returns plain numpy arrays for ``inspector.analyzers``; hooks are scoped to the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import hooks

from ._pixel_map import PixelMap, receptive_fields
from ._progress import Progress

__all__ = ["erf_layers", "erf_pass", "importance_pass", "pruning_pass"]


def erf_layers(
    model: nn.Module, attention: Sequence[str], channels: Sequence[str]
) -> list[tuple[str, str]]:
    """``(path, branch)`` of every layer whose ERF is measured, in model order.

    Blocks (post-residual, :func:`hooks.find_blocks`) and, inside a block, its attention
    module (the attention branch before the residual). Models with no such blocks (a
    plain ``nn.Sequential`` CNN) use their convolutions.
    """
    modules = list(model.named_modules())
    blocks = set(hooks.find_blocks(model))
    attention_set = set(attention)
    out: list[tuple[str, str]] = []
    for name, _ in modules:
        if name in blocks:
            out.append((name, "block"))
        elif name in attention_set and any(name.startswith(b + ".") for b in blocks):
            out.append((name, "attention"))
    if not out:
        conv = set(channels)
        out = [(n, "conv") for n, m in modules if n in conv and isinstance(m, nn.Conv2d)]
    return out


def _selector(
    shape: tuple[int, ...],
    input_hw: tuple[int, int],
    geometry: hooks.TokenGeometry | None,
    pixels: PixelMap | None = None,
) -> tuple[Any, tuple[float, float], str] | str:
    """How to pick the centre of a layer's output: ``(selector, centre px, note)`` or a reason.

    A 4-D output's centre unit is placed in input pixels by its traced pixel map (the
    convolution and pooling arithmetic on the way, see ``inspector._pixel_map``); where
    that cannot be traced, by the patch convention ``(r + 0.5) · stride − 0.5``.
    """
    height, width = input_hw
    if len(shape) == 4:
        if pixels is not None:
            nhwc = (pixels[4], pixels[5]) == (1, 2)
        else:  # NCHW unless only the trailing axes disagree (timm Swin blocks are NHWC)
            nhwc = shape[2] != shape[3] and shape[1] == shape[2]
        rows, cols = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
        r, c = rows // 2, cols // 2
        if pixels is not None:
            centre = (pixels[2] + pixels[0] * r, pixels[3] + pixels[1] * c)
            how = "traced"
        else:
            centre = ((r + 0.5) * height / rows - 0.5, (c + 0.5) * width / cols - 0.5)
            how = "patch convention"
        note = f"position ({r}, {c}) of {rows}x{cols}" + (" (NHWC)" if nhwc else "")
        note += f", centre {how}"

        def pick(out: Any, r: int = r, c: int = c) -> torch.Tensor:
            y = hooks.first_tensor(out)
            assert y is not None
            return (y[:, r, c, :] if nhwc else y[:, :, r, c]).sum(-1)

        return pick, centre, note
    if len(shape) == 3:
        if geometry is not None and geometry.known and geometry.kind != "global":
            return (
                f"no ERF here: the output holds {shape[1]} tokens per sequence in "
                f"{geometry.kind} order, not one token map (ERFs are read at block outputs)"
            )
        if geometry is None or geometry.kind != "global" or geometry.tokens != shape[1]:
            return "token layout unknown for this layer (no global geometry matching its tokens)"
        assert geometry.grid is not None and geometry.stride is not None
        rows, cols = geometry.grid
        r, c = rows // 2, cols // 2
        token = geometry.prefix + r * cols + c
        # The geometry's token centres (its origin included: MViTv2, LeViT) are in
        # continuous pixel coordinates; the ERF map's are pixel indices, half a pixel less.
        y, x = geometry.centres()[0][r * cols + c]
        centre = (float(y) - 0.5, float(x) - 0.5)

        def pick_token(out: Any, token: int = token) -> torch.Tensor:
            y = hooks.first_tensor(out)
            assert y is not None
            return y[:, token, :].sum(-1)

        return pick_token, centre, f"token {token} (grid {r}, {c} of {rows}x{cols})"
    return f"output of shape {shape} has no spatial layout"


def erf_pass(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[tuple[str, str]],
    geometry: Mapping[str, hooks.TokenGeometry],
    *,
    tick: Callable[[int], None] | None = None,
    progress: bool = False,
    replknet: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Gradient ERF (METRICS.md §3) of each layer: mean over images of ``|∂s/∂x|``
    summed over colour channels, ``s = Σ_c y[c, centre]``.

    One forward keeps every layer's output; each layer then costs one backward
    (``autograd.grad`` with the graph retained). captum's ``NeuronGradient`` reruns the
    whole forward per layer; it is used only for a layer whose kept output a later
    in-place operation modified.

    Args:
        tick: Called with 1 after each layer (the run's progress display).
        progress: Without ``tick``, show a progress display of this pass alone.
        replknet: Also compute, for block and convolution outputs, the map of RepLKNet's
            protocol (ReLU on the centre activations, ReLU on the gradient; one more
            backward per layer).

    Returns:
        Per layer: ``map`` ``[y, x]``, ``centre`` (pixels), ``branch``, ``note``,
        ``weighted`` and ``mass`` ``[sample]`` (each image's ``Σ m_p ‖p − centre‖`` and
        ``Σ m_p``), ``profile`` ``[sample, radius]`` (each image's mass at each distinct
        distance ``radii`` from the centre, ascending), ``theoretical_rf`` (px; inf
        unbounded, NaN unknown) and ``replknet_map`` (or None); and per skipped layer the
        reason.
    """
    if tick is None and progress:
        with Progress(["receptive field"]).step("receptive field", len(layers), "layers") as step:
            return erf_pass(model, x, layers, geometry, tick=step.update, replknet=replknet)
    modules = dict(model.named_modules())
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), hooks.probe(model, [name for name, _ in layers]) as kept:
        model(inputs)
    outputs = kept.outputs
    results: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    input_hw = (int(x.shape[-2]), int(x.shape[-1]))
    four_d = [n for n, _ in layers if outputs.get(n) is not None and outputs[n].dim() == 4]
    pixels, fields = receptive_fields(model, x, four_d) if four_d else ({}, {})
    for name, branch in _ticking(layers, tick):
        output = outputs.get(name)
        owner = next(
            (g for path, g in geometry.items() if path == name or path.startswith(name + ".")),
            None,
        )
        choice = (
            "no tensor output"
            if output is None
            else _selector(tuple(output.shape), input_hw, owner, pixels.get(name))
        )
        if isinstance(choice, str):
            skipped[name] = choice
            continue
        pick, centre, note = choice
        # token layers reach here only with global geometry: every block attends globally
        field = fields.get(name, float("nan")) if output.dim() == 4 else float("inf")
        # A later in-place operation (e.g. ReLU(inplace=True)) rewrites the kept output
        # and its autograd history without any error: its gradient would be that of the
        # rewritten values. captum's NeuronGradient reads a copy taken in the hook.
        grads = None
        if not kept.modified(name):
            try:
                (grads,) = torch.autograd.grad(pick(output).sum(), inputs, retain_graph=True)
            except RuntimeError:  # a tensor saved for backward was modified in place
                grads = None
        if grads is None:
            from captum.attr import NeuronGradient  # rarely needed; importing it costs 0.7 s

            grads = NeuronGradient(model, modules[name]).attribute(
                x.detach().clone().requires_grad_(True), neuron_selector=pick
            )
        per_image = grads.detach().abs().sum(1).double()
        rows = torch.arange(per_image.shape[-2], dtype=torch.float64) - centre[0]
        cols = torch.arange(per_image.shape[-1], dtype=torch.float64) - centre[1]
        distance = torch.hypot(rows[:, None], cols[None, :]).to(per_image.device)
        # Each image's mass per distinct distance from the centre (ascending): the radii
        # of any mean of the images' maps, for the bootstrap interval of r50 / r90.
        radii, ring = torch.unique(distance.flatten(), sorted=True, return_inverse=True)
        profile = per_image.new_zeros(per_image.shape[0], radii.numel())
        profile.index_add_(1, ring, per_image.flatten(1))
        replknet_map = None
        if replknet and branch in ("block", "conv") and not kept.modified(name):
            replknet_map = _replknet_map(output, pick, inputs)
        results[name] = {
            "map": per_image.mean(0).cpu().numpy(),
            "per_image": per_image.cpu().numpy(),
            "centre": np.asarray(centre),
            "branch": branch,
            "note": note,
            "weighted": (per_image * distance).sum((-2, -1)).cpu().numpy(),
            "mass": per_image.sum((-2, -1)).cpu().numpy(),
            "profile": profile.cpu().numpy(),
            "radii": radii.cpu().numpy(),
            "theoretical_rf": float(field),
            "replknet_map": replknet_map,
        }
    outputs.clear()
    return results, skipped


def _replknet_map(output: torch.Tensor, pick: Any, inputs: torch.Tensor) -> np.ndarray | None:
    """RepLKNet's ``get_input_grad``: ``s = Σ_c ReLU(y[c, centre])``, gradient ReLU'd,
    summed over colour channels; mean over images. ``pick`` sums the centre over
    channels, so ReLU is applied through a mask on the output itself."""
    y = hooks.first_tensor(output)
    if y is None:
        return None
    try:
        gated = y * (y > 0).to(y.dtype)
        (grads,) = torch.autograd.grad(pick(gated).sum(), inputs, retain_graph=True)
    except RuntimeError:
        return None
    return grads.detach().clamp(min=0).sum(1).mean(0).double().cpu().numpy()


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError("importance needs a classifier: the model's output is not [sample, class]")
    return out


ABLATE = 6
"""Units per kind whose gate gradient is checked against true ablation."""

PRUNING_STEPS = 10
"""Points of a pruning curve after the unpruned model (1/10 of the units each)."""


def _ticking(items: Sequence[Any], tick: Callable[[int], None] | None) -> Iterator[Any]:
    """``items``, calling ``tick(1)`` after each has been handled."""
    for item in items:
        yield item
        if tick is not None:
            tick(1)


def importance_pass(
    model: nn.Module,
    x: torch.Tensor,
    units: Mapping[str, Mapping[str, int]],
    labels: torch.Tensor | None = None,
    *,
    ablate: int = ABLATE,
    ablation_images: int = 4,
    tick: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Gate-gradient importance (METRICS.md §5): ``|∂L/∂ξ_u|`` per image, with ``L`` the
    cross-entropy of the model's own top-1 (or the label where known), plus true
    single-unit ablation of up to ``ablate`` units per kind for validation.

    The validation compares, unit by unit, the mean gate gradient with the mean |ΔL| of
    removing the unit over the same images. That comparison is paired image by image, so
    it needs few images but units across the whole range of importance: the units are
    picked at evenly spaced ranks of their gradient, and each ablation (one forward per
    unit) runs on the first ``ablation_images`` images only.

    Args:
        units: ``{"heads": {path: heads}, "channels": {path: channels}}``.
        tick: Called with 1 after the gradient pass and after each ablation.

    Returns:
        Per kind: ``raw`` ``{path: [sample, unit]}``, ``ablation`` (``layers``, ``units``,
        ``gradient`` mean |∂L/∂ξ|, ``delta`` mean |ΔL| when the unit's gate is 0, both
        over the first ``images`` images); and under ``logits`` the unpruned model's
        output (reused by :func:`pruning_pass`).
    """
    batch = x.shape[0]
    gates = {
        kind: {
            p: torch.ones(batch, n, device=x.device, requires_grad=True) for p, n in layers.items()
        }
        for kind, layers in units.items()
    }
    # Gates of 1 leave every value as it is: this forward gives the unpruned logits too.
    with hooks.gates(model, heads=gates.get("heads"), channels=gates.get("channels")):
        logits = _logits(model, x)
    full = logits.detach()
    if not bool(torch.isfinite(full).all()):
        bad = int((~torch.isfinite(full)).any(-1).sum())
        raise ValueError(
            f"the model's output holds NaN or inf for {bad} of {batch} images; importance "
            "and pruning need finite logits"
        )
    target = full.argmax(-1)
    if labels is not None:
        labels = labels.to(target.device)  # the condition too: a CPU mask fails on CUDA
        target = torch.where(labels >= 0, labels, target)
    loss = F.cross_entropy(logits, target, reduction="sum")
    flat = [g for layers in gates.values() for g in layers.values()]
    grads = torch.autograd.grad(loss, flat) if flat else ()
    by_gate = {id(g): d for g, d in zip(flat, grads, strict=True)}
    if tick is not None:
        tick(1)
    seen = min(batch, max(1, ablation_images))
    out: dict[str, Any] = {"logits": full}
    for kind, layers in gates.items():
        raw = {p: by_gate[id(g)].abs().cpu().numpy() for p, g in layers.items()}
        check = _AblationCheck(model, x[:seen], target[:seen], full[:seen], tick)
        out[kind] = {"raw": raw, "ablation": check.run(kind, units[kind], raw, ablate)}
    return out


class _AblationCheck:
    """True single-unit ablation of a few units, to validate their gate gradients."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        target: torch.Tensor,
        full: torch.Tensor,
        tick: Callable[[int], None] | None = None,
    ) -> None:
        self.model, self.x, self.target, self.tick = model, x, target, tick
        with torch.no_grad():
            self.base = F.cross_entropy(full, target, reduction="none")

    def run(
        self, kind: str, units: Mapping[str, int], raw: Mapping[str, np.ndarray], ablate: int
    ) -> dict[str, Any]:
        """Ablate up to ``ablate`` units at evenly spaced ranks of their mean gradient."""
        seen = self.x.shape[0]
        everything = [(p, u) for p, n in units.items() for u in range(n)]
        gradient = np.array([raw[p][:seen, u].mean() for p, u in everything])
        ranked = np.argsort(gradient, kind="stable")
        spots = np.linspace(0, len(everything) - 1, min(ablate, len(everything))).round()
        rows = []
        for index in _ticking(ranked[np.unique(spots).astype(int)], self.tick):
            path, unit = everything[index]
            per_image = self._delta(kind, units, path, unit)
            rows.append((path, unit, float(gradient[index]), per_image))
        return {
            "layers": [r[0] for r in rows],
            "units": np.array([r[1] for r in rows], dtype=np.int64),
            "gradient": np.array([r[2] for r in rows]),
            "delta": np.array([r[3].mean() for r in rows]),
            "images": seen,
            "gradient_images": np.array(
                [raw[r[0]][:seen, r[1]] for r in rows], dtype=np.float64
            ).reshape(len(rows), seen),
            "delta_images": np.array([r[3] for r in rows]).reshape(len(rows), seen),
        }

    def _delta(self, kind: str, units: Mapping[str, int], path: str, unit: int) -> np.ndarray:
        """``[image]`` |ΔL| of each image when ``unit`` of ``path`` is removed (gate 0)."""
        gate = torch.ones(units[path], device=self.x.device)
        gate[unit] = 0
        key = "heads" if kind == "heads" else "channels"
        with torch.inference_mode(), hooks.gates(self.model, **{key: {path: gate}}):
            logits = _logits(self.model, self.x)
            ablated = F.cross_entropy(logits, self.target, reduction="none")
        return (ablated - self.base).abs().double().cpu().numpy()


def pruning_pass(
    model: nn.Module,
    x: torch.Tensor,
    kind: str,
    units: Mapping[str, int],
    order: Sequence[tuple[str, int]],
    steps: int = PRUNING_STEPS,
    full: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    tick: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Remove units (gate 0) in the given order, ``1/steps`` of them at a time; measure
    top-1 agreement with the full model and mean KL(full ‖ pruned).

    Args:
        full: The unpruned model's logits on ``x`` when already known.
        labels: Class index per image (-1 unknown): top-1 accuracy on the labelled ones.
        tick: Called with 1 after each pruned forward.

    Returns:
        ``fractions``, ``agreement``, ``kl`` per step; ``accuracy`` per step (NaN without
        labels) and ``labelled`` (images with a label).
    """
    known = labels >= 0 if labels is not None else torch.zeros(x.shape[0], dtype=torch.bool)
    known = known.to(x.device)
    labelled = int(known.sum())

    def accuracy(logits: torch.Tensor) -> float:
        if not labelled:
            return float("nan")
        assert labels is not None
        hits = logits.argmax(-1)[known] == labels.to(x.device)[known]
        return float(hits.float().mean())

    with torch.inference_mode():
        full = _logits(model, x) if full is None else full
        if not bool(torch.isfinite(full).all()):
            bad = int((~torch.isfinite(full)).any(-1).sum())
            raise ValueError(
                f"the model's output holds NaN or inf for {bad} of {x.shape[0]} held-out "
                "images; pruning needs finite logits"
            )
        reference = full.log_softmax(-1)
        fractions = np.linspace(0.0, 1.0, steps + 1)
        # Nothing removed is the model itself: agreement 1 and KL 0 without a forward.
        agreement, kl, correct = [1.0], [0.0], [accuracy(full)]
        for fraction in _ticking(fractions[1:], tick):
            removed = order[: round(float(fraction) * len(order))]
            gates = {p: torch.ones(n, device=x.device) for p, n in units.items()}
            for path, unit in removed:
                gates[path][unit] = 0
            key = "heads" if kind == "heads" else "channels"
            with hooks.gates(model, **{key: gates}):
                logits = _logits(model, x)
                pruned = logits.log_softmax(-1)
            agreement.append(float((pruned.argmax(-1) == full.argmax(-1)).float().mean()))
            kl.append(float((reference.exp() * (reference - pruned)).sum(-1).mean()))
            correct.append(accuracy(logits))
    return {
        "fractions": fractions,
        "agreement": np.array(agreement),
        "kl": np.array(kl),
        "accuracy": np.array(correct),
        "labelled": np.array(labelled),
    }
