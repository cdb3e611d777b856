"""Helpers for rule authors: pixel strides, token grids and pooling arithmetic.

Conventions: token ``(0, 0)`` of a model's first grid sits at half its stride; a pooled
or strided grid derived from it inherits its position from the pooling arithmetic
(kernel ``k``, stride ``s``, padding ``p`` put output ``i`` over input ``s·i + (k-1)/2 - p``).
Every helper raises :class:`Unknown` when what it reads is not exact.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ._registry import Context, Unknown
from ._token import TokenGeometry

__all__ = [
    "FPair",
    "Pair",
    "block_stride",
    "conv_grid",
    "fstride",
    "grid_of",
    "grid_padded",
    "info_stride",
    "map_geometry",
    "pair",
    "pooled",
    "reduced_keys",
    "reductions",
    "stage_stride",
    "window_geometry",
]

Pair = tuple[int, int]
"""Integer ``(rows, cols)`` or ``(y, x)``."""
FPair = tuple[float, float]
"""Float ``(y, x)`` in pixels."""


def pair(value: Any) -> Pair:
    """``(v, v)`` for an int, else the first two items as ints (timm's sizes and strides)."""
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def reductions(model: nn.Module) -> list[int]:
    """Pixel strides of the model's stages (``feature_info``, stem entries left out)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise Unknown(f"{type(model).__name__} has no feature_info reductions")
    return [
        int(d["reduction"])
        for d in info
        if not str(d.get("module", "")).startswith(("stem", "patch_embed"))
    ]


def stage_stride(model: nn.Module, stage: int) -> int:
    strides = reductions(model)
    if stage >= len(strides):
        raise Unknown(f"stage {stage} has no feature_info reduction ({strides})")
    return strides[stage]


def grid_of(size: Pair, stride: Pair | int) -> Pair:
    """The token grid of a map at ``stride`` px, when the input is a multiple of it."""
    sy, sx = pair(stride)
    if size[0] % sy or size[1] % sx:
        raise Unknown(
            f"input {size[0]}×{size[1]} is not a multiple of the stage stride {sy}×{sx}: "
            "the token grid depends on padding"
        )
    return (size[0] // sy, size[1] // sx)


def grid_padded(size: Pair, base: int, stride: int) -> Pair:
    """The grid at ``stride`` px of a model whose first grid (``base`` px, input a multiple
    of it) is halved by merges that zero-pad odd sizes at the bottom / right (Swin): token
    ``i`` still sits at ``(i + 0.5)·stride``."""
    rows, cols = grid_of(size, base)
    if stride % base:
        raise Unknown(f"stage stride {stride} is not a multiple of the patch stride {base}")
    step = stride // base
    return (-(-rows // step), -(-cols // step))


def pooled(grid: Pair, kernel: Any, stride: Any, padding: Any) -> tuple[Pair, FPair]:
    """Output grid of a pooling / strided conv and the input-token index of output 0."""
    k, s, p = pair(kernel), pair(stride), pair(padding)
    out = ((grid[0] + 2 * p[0] - k[0]) // s[0] + 1, (grid[1] + 2 * p[1] - k[1]) // s[1] + 1)
    return out, ((k[0] - 1) / 2 - p[0], (k[1] - 1) / 2 - p[1])


def fstride(stride: Pair | int) -> FPair:
    """A pixel stride as floats ``(y, x)``, as :class:`TokenGeometry` holds it."""
    sy, sx = pair(stride)
    return (float(sy), float(sx))


def reduced_keys(grid: Pair, stride: FPair, sr: int) -> dict[str, Any]:
    """Keys from a ``sr × sr`` / stride ``sr`` convolution without padding (PVT, Twins):
    key ``j`` summarises queries ``sr·j … sr·j + sr - 1`` (a trailing remainder is dropped)."""
    if sr <= 1:
        return {}
    return {
        "key_grid": (grid[0] // sr, grid[1] // sr),
        "key_stride": (stride[0] * sr, stride[1] * sr),
    }


def info_stride(context: Context, module: str) -> int:
    """The ``feature_info`` reduction of the model part named ``module``."""
    for entry in getattr(context.model, "feature_info", None) or []:
        if entry.get("module") == module:
            return int(entry["reduction"])
    raise Unknown(f"no feature_info reduction for {module}")


def map_geometry(context: Context, stride: int, note: str, **fields: object) -> TokenGeometry:
    """Global attention over the whole map at ``stride`` px."""
    grid = grid_of(context.size, stride)
    resolution = getattr(context.module, "resolution", None)
    if resolution is not None and pair(resolution) != grid:
        raise Unknown(f"module resolution {resolution} differs from the {grid} map at the input")
    return TokenGeometry(kind="global", grid=grid, stride=fstride(stride), reason=note, **fields)  # type: ignore[arg-type]


def window_geometry(context: Context, stride: int, window: object, note: str) -> TokenGeometry:
    """Non-overlapping ``window`` attention on the map at ``stride`` px."""
    return TokenGeometry(
        kind="windowed",
        grid=grid_of(context.size, stride),
        stride=fstride(stride),
        window=pair(window),
        reason=note,
    )


def conv_grid(
    grid: tuple[int, int], stride: int, conv: object, what: str
) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """Grid, pixel stride and pixel origin of the output of a plain ``nn.Conv2d`` /
    ``nn.AvgPool2d`` over a map at ``stride`` px whose token 0 sits at ``stride / 2``."""
    if type(conv).__name__ not in ("Conv2d", "AvgPool2d", "MaxPool2d") or isinstance(
        getattr(conv, "padding", 0), str
    ):
        raise Unknown(f"{what} is a {type(conv).__name__}: its token positions are not modelled")
    kernel, step, padding = conv.kernel_size, conv.stride, conv.padding  # type: ignore[attr-defined]
    out, offset = pooled(grid, kernel, step, padding)
    s = pair(step)
    origin = (stride * (0.5 + offset[0]), stride * (0.5 + offset[1]))
    return out, (float(stride * s[0]), float(stride * s[1])), origin


def block_stride(model: nn.Module, index: int) -> int:
    """Stride of ``blocks.{index}`` for models whose ``feature_info`` names the last block of
    each stage (``blocks.0``, ``blocks.2``, ...): the reduction of the first entry at or
    after ``index``."""
    ends = sorted(
        (int(str(d["module"]).split(".")[1]), int(d["reduction"]))
        for d in getattr(model, "feature_info", None) or []
        if str(d.get("module", "")).startswith("blocks.")
    )
    stride = next((r for last, r in ends if last >= index), None)
    if stride is None:
        raise Unknown(f"block {index} is after the last feature_info stage")
    return stride
