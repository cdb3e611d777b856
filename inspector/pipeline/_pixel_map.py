"""Where each output unit of a convolutional layer sits in input pixels.

A one-image probe forward runs under a torch function mode that carries an affine map
``pixel = offset + scale · index`` (per axis) from the input through every operation:
convolutions and pools compose it (``scale · stride``, ``offset + scale · (dilation ·
(kernel − 1) / 2 − padding)``), explicit ``F.pad`` shifts it, and operations that keep
the spatial shape pass it on. Anything else (flattening, interpolation, global pools)
ends it, and the caller falls back to a documented convention.

The same trace carries the theoretical receptive field (METRICS.md §3): the side, in
input pixels, of the region that can influence one unit, per axis. A convolution or
pool of kernel ``k``, dilation ``d`` on a map of scale ``s`` adds ``s · d · (k − 1)``;
an operation on several traced tensors (a residual sum) takes the largest; a global pool
(a map reduced to 1×1) makes it unbounded, and so does anything it is combined with
(squeeze-and-excitation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

import hooks

__all__ = ["PixelMap", "pixel_maps", "receptive_fields"]

PixelMap = tuple[float, float, float, float, int, int]
"""``(scale_y, scale_x, offset_y, offset_x, y_axis, x_axis)``: unit ``(r, c)`` (indices on
axes ``y_axis``, ``x_axis`` of the tensor) is centred on input pixel
``(offset_y + scale_y r, offset_x + scale_x c)``; pixel ``i`` spans ``[i, i + 1)``."""

# Matched by name: torch hands the mode the outermost overridable function, which is a
# builtin for some (conv2d, avg_pool2d) and a Python wrapper for others (_max_pool2d, pad).
_CONV = {"conv2d"}
_POOL = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d"}
_PAD = {"pad", "_pad"}


def _pair(value: Any, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _arg(args: Sequence[Any], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


class _Trace(TorchFunctionMode):
    def __init__(self, image: torch.Tensor) -> None:
        super().__init__()
        self.maps: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.maps[image] = (1.0, 1.0, 0.0, 0.0, 2, 3)
        self.rf: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.rf[image] = (1.0, 1.0)

    def _fields(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[float, float] | None:
        """The largest receptive field among the traced tensors in the arguments."""
        found: list[tuple[float, float]] = []

        def walk(items: Any) -> None:
            for item in items:
                if isinstance(item, torch.Tensor) and item in self.rf:
                    found.append(self.rf[item])
                elif isinstance(item, (list, tuple)):
                    walk(item)

        walk(args)
        walk(kwargs.values())
        if not found:
            return None
        return (max(f[0] for f in found), max(f[1] for f in found))

    def _source(self, args: Sequence[Any]) -> torch.Tensor | None:
        for arg in args:
            if isinstance(arg, torch.Tensor) and arg in self.maps:
                return arg
            if isinstance(arg, (list, tuple)):
                found = self._source(arg)
                if found is not None:
                    return found
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        source = self._source(args)
        result = out[0] if isinstance(out, tuple) and out else out
        if not isinstance(result, torch.Tensor) or result.dim() != 4:
            return out
        field = self._fields(args, kwargs)
        if source is None:  # no pixel map (a pooled 1x1 gate): carry its field on
            if field is not None:
                self.rf[result] = field
            return out
        sy, sx, oy, ox, ya, xa = self.maps[source]
        name = getattr(func, "__name__", "")
        if field is not None:
            spatial = [source.shape[ya], source.shape[xa]]
            if name in _CONV or name in _POOL:
                pass  # set below, with the kernel
            elif result.shape[-2:] == (1, 1) and spatial != [1, 1]:
                self.rf[result] = (math.inf, math.inf)  # a global pool sees everything
            elif result.shape == source.shape or name == "permute":
                self.rf[result] = field
        if name == "permute":  # channels-last blocks (ConvNeXt norms, Swin) move the axes
            dims = [d % source.dim() for d in (args[1:] if len(args) > 2 else args[1])]
            self.maps[result] = (sy, sx, oy, ox, dims.index(ya), dims.index(xa))
            return out
        if (ya, xa) != (2, 3):
            if result.shape == source.shape:
                self.maps[result] = (sy, sx, oy, ox, ya, xa)
            return out
        if name in _CONV:
            weight = _arg(args, kwargs, 1, "weight", None)
            padding = _arg(args, kwargs, 4, "padding", 0)
            if isinstance(padding, str):  # 'valid' is 0; 'same' only at stride 1
                padding = 0 if padding == "valid" else None
            if padding is None:
                ky, kx = weight.shape[-2:]
                py, px = (ky - 1) // 2, (kx - 1) // 2  # torch puts the odd pixel right
            else:
                py, px = _pair(padding, 0)
            (ky, kx), (ty, tx) = weight.shape[-2:], _pair(_arg(args, kwargs, 3, "stride", 1), 1)
            dy, dx = _pair(_arg(args, kwargs, 5, "dilation", 1), 1)
        elif name in _POOL:
            ky, kx = _pair(_arg(args, kwargs, 1, "kernel_size", 1), 1)
            stride = _arg(args, kwargs, 2, "stride", None)
            ty, tx = _pair(stride if stride else (ky, kx), 1)
            py, px = _pair(_arg(args, kwargs, 3, "padding", 0), 0)
            dilation = _arg(args, kwargs, 4, "dilation", 1) if "max" in name else 1
            dy, dx = _pair(dilation, 1)
        elif name in _PAD:
            pad = [*_arg(args, kwargs, 1, "pad", ()), 0, 0, 0, 0]
            left, top = pad[0], pad[2]
            self.maps[result] = (sy, sx, oy - sy * top, ox - sx * left, 2, 3)
            return out
        else:
            if result.shape[-2:] == source.shape[-2:]:
                self.maps[result] = (sy, sx, oy, ox, 2, 3)
            return out
        if field is not None:
            self.rf[result] = (field[0] + sy * dy * (ky - 1), field[1] + sx * dx * (kx - 1))
        self.maps[result] = (
            sy * ty,
            sx * tx,
            oy + sy * (dy * (ky - 1) / 2 - py),
            ox + sx * (dx * (kx - 1) / 2 - px),
            2,
            3,
        )
        return out


def pixel_maps(model: nn.Module, image: torch.Tensor, names: Sequence[str]) -> dict[str, PixelMap]:
    """The pixel map of each named module's 4-D output, where it can be traced.

    Args:
        model: The model (run once on ``image[:1]`` without gradients).
        image: Input batch ``[sample, channel, y, x]``.
        names: Module paths whose outputs are wanted.
    """
    probe = image[:1].detach().clone()
    trace = _Trace(probe)
    with torch.no_grad(), hooks.probe(model, names) as kept, trace:
        model(probe)
    return {name: trace.maps[t] for name, t in kept.outputs.items() if t in trace.maps}


def receptive_fields(
    model: nn.Module, image: torch.Tensor, names: Sequence[str]
) -> tuple[dict[str, PixelMap], dict[str, float]]:
    """The pixel maps (as :func:`pixel_maps`) and the theoretical receptive field side
    (px, the larger axis; ``inf`` unbounded) of each named module's 4-D output."""
    probe = image[:1].detach().clone()
    trace = _Trace(probe)
    with torch.no_grad(), hooks.probe(model, names) as kept, trace:
        model(probe)
    maps = {name: trace.maps[t] for name, t in kept.outputs.items() if t in trace.maps}
    fields = {name: max(trace.rf[t]) for name, t in kept.outputs.items() if t in trace.rf}
    return maps, fields
