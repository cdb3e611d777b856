"""The translation-equivariance pass (METRICS.md §9): every spatial layer's output on the
images and on circularly rolled copies, laid out as ``[sample, y, x, channel]`` grids.

One extra forward per distinct shift: a layer of stride ``s`` is compared at ``t = s``
and at the sub-stride ``t = s // 2``; layers of equal (or halved) stride share forwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import hooks

from ..analyzers import EquivarianceInput, ErfInput

__all__ = ["equivariance_pass", "output_grid"]


def output_grid(
    output: torch.Tensor,
    input_hw: tuple[int, int],
    geometry: hooks.TokenGeometry | None,
    samples: int | None = None,
) -> tuple[np.ndarray, tuple[float, float]] | str:
    """A layer's output as ``[sample, y, x, channel]`` and its stride ``(y, x)`` in input
    pixels per cell, or why it has no grid.

    4-D outputs are NCHW (NHWC when only the trailing axes disagree, as timm's Swin
    blocks); 3-D token outputs are laid out on their global geometry's grid, prefix
    tokens (class, distillation, register) left out. An output whose leading axis is not
    the ``samples`` images (windows or sequences of each image, as EfficientViT-MSRA's
    window attention) has no image-wide map.
    """
    height, width = input_hw
    if samples is not None and output.dim() >= 2 and output.shape[0] != samples:
        return (
            f"the output's leading axis holds {output.shape[0]} sequences for {samples} "
            "images (windows): no image-wide map"
        )
    if output.dim() == 4:
        nhwc = output.shape[2] != output.shape[3] and output.shape[1] == output.shape[2]
        grid = output if nhwc else output.permute(0, 2, 3, 1)
    elif output.dim() == 3:
        if geometry is None or geometry.kind != "global" or geometry.grid is None:
            return "token layout unknown (no global geometry)"
        if geometry.tokens != output.shape[1]:
            return f"{output.shape[1]} tokens, geometry says {geometry.tokens}"
        rows, cols = geometry.grid
        grid = output[:, geometry.prefix :, :].reshape(output.shape[0], rows, cols, -1)
    elif output.dim() == 2:  # a global pool's [sample, channel]: one cell
        grid = output[:, None, None, :]
    else:
        return f"output of shape {tuple(output.shape)} has no spatial layout"
    rows, cols = int(grid.shape[1]), int(grid.shape[2])
    if height % rows or width % cols:
        return f"grid {rows}x{cols} does not divide the input {height}x{width}"
    array = grid.detach().float().cpu().numpy()
    return array, (height / rows, width / cols)


def _margin(
    erf: ErfInput | None, stride: tuple[float, float], grid: tuple[int, int]
) -> tuple[int, str]:
    """The theoretical RF radius in cells (support of the gradient ERF map), capped at a
    quarter of the grid."""
    cap = min(grid) // 4
    if erf is None or erf.map is None or erf.centre is None:
        return cap, "a quarter of the grid (no ERF map)"
    ys, xs = np.nonzero(np.asarray(erf.map) > 0)
    if ys.size == 0:
        return cap, "a quarter of the grid (empty ERF map)"
    radius = max(
        np.abs(ys - erf.centre[0]).max() / stride[0], np.abs(xs - erf.centre[1]).max() / stride[1]
    )
    cells = math.ceil(radius - 1e-9)
    if cells >= cap:
        return cap, "a quarter of the grid (RF radius capped)"
    return cells, "RF radius (support of the ERF map)"


def _outputs(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    with torch.no_grad(), hooks.probe(model, list(names)) as kept:
        model(x)
    out = {n: t for n, t in kept.outputs.items() if isinstance(t, torch.Tensor)}
    return {n: t.clone() for n, t in out.items()}


def equivariance_pass(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str],
    geometry: Mapping[str, hooks.TokenGeometry],
    erf: Mapping[str, ErfInput] | None = None,
    *,
    tick: Callable[[], None] | None = None,
    extend: Callable[[int], None] | None = None,
) -> dict[str, EquivarianceInput]:
    """Per layer, its outputs on ``x`` and on ``x`` rolled by its stride and half of it.

    Args:
        layers: Module paths, model order.
        geometry: Token geometry of attention modules (a block finds its attention's).
        erf: ERF maps, whose support gives each layer's border margin.
        tick: Called after each forward (a progress display's step).
        extend: Called once with the number of shifted forwards still to come.
    """
    erf = erf or {}
    input_hw = (int(x.shape[-2]), int(x.shape[-1]))
    base = _outputs(model, x, layers)
    if tick is not None:
        tick()
    found: dict[str, EquivarianceInput] = {}
    grids: dict[str, tuple[np.ndarray, tuple[float, float]]] = {}
    for name in layers:
        output = base.get(name)
        owner = _owner(geometry, name)
        laid = (
            "no tensor output"
            if output is None
            else output_grid(output, input_hw, owner, samples=x.shape[0])
        )
        if isinstance(laid, str):
            found[name] = EquivarianceInput(reason=laid)
            continue
        grids[name] = laid
    base.clear()
    wanted: dict[int, list[tuple[str, str]]] = {}
    for name, (_, (sy, sx)) in grids.items():
        if sy != sx or sy != int(sy):
            found[name] = EquivarianceInput(reason=f"stride {sy}x{sx} is not one whole number")
            continue
        s = int(sy)
        wanted.setdefault(s, []).append((name, "stride"))
        if s >= 2:
            wanted.setdefault(s // 2, []).append((name, "sub"))
    shifted: dict[str, dict[str, np.ndarray]] = {n: {} for n in grids}
    shifts: dict[str, dict[str, int]] = {n: {} for n in grids}
    if extend is not None:
        extend(len(wanted))
    for t, users in sorted(wanted.items()):
        rolled = _outputs(model, torch.roll(x, (t, t), dims=(-2, -1)), [n for n, _ in users])
        if tick is not None:
            tick()
        for name, key in users:
            out = rolled.get(name)
            owner = _owner(geometry, name)
            laid = None if out is None else output_grid(out, input_hw, owner, x.shape[0])
            if isinstance(laid, tuple):
                shifted[name][key] = laid[0]
                shifts[name][key] = t
    for name, (array, stride) in grids.items():
        if name in found:
            continue
        margin, source = _margin(erf.get(name), stride, array.shape[1:3])
        found[name] = EquivarianceInput(
            base=array,
            shifted=shifted[name],
            shifts=shifts[name],
            stride=stride,
            margin=margin,
            margin_source=source,
        )
    return {name: found[name] for name in layers if name in found}


def _owner(geometry: Mapping[str, hooks.TokenGeometry], name: str) -> hooks.TokenGeometry | None:
    return next(
        (g for path, g in geometry.items() if path == name or path.startswith(name + ".")), None
    )
