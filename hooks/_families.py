"""Per-family token geometry of timm models: one rule per model family.

A rule reads what the model declares — ``patch_embed`` grids, ``feature_info``
reductions, window / shift / partition sizes, pooling and spatial-reduction layers,
``num_prefix_tokens`` — and the input size, and returns a :class:`TokenGeometry`. It
never guesses: anything it cannot read exactly (an input that is not a multiple of a
stage stride, an unregistered family) is ``unknown`` with the reason. The capture then
checks every geometry against the query, key and sequence counts it sees.

Conventions: token ``(0, 0)`` of a model's first grid sits at half its stride; a pooled
or strided grid derived from it inherits its position from the pooling arithmetic
(kernel ``k``, stride ``s``, padding ``p`` put output ``i`` over input ``s·i + (k-1)/2 - p``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._geometry import TokenGeometry

__all__ = ["FAMILY_RULES", "infer_family_geometry"]

Pair = tuple[int, int]
FPair = tuple[float, float]


class _Unknown(Exception):
    """Raised inside a rule: the geometry cannot be read exactly (the message says why)."""


@dataclass(frozen=True)
class Context:
    """What a rule sees.

    Attributes:
        model: The whole model.
        name: The attention module's path.
        module: The attention module.
        size: Input ``(height, width)`` in pixels.
        modules: ``model.named_modules()`` as a dict.
    """

    model: nn.Module
    name: str
    module: nn.Module
    size: Pair
    modules: dict[str, nn.Module]

    def parent(self, up: int = 1) -> nn.Module:
        path = self.name.rsplit(".", up)[0] if self.name.count(".") >= up else ""
        return self.modules[path]

    def match(self, pattern: str) -> re.Match[str]:
        found = re.fullmatch(pattern, self.name)
        if found is None:
            raise _Unknown(f"{self.name} is not where this family's rule expects attention")
        return found


Rule = Callable[[Context], TokenGeometry]


def pair(value: Any) -> Pair:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def reductions(model: nn.Module) -> list[int]:
    """Pixel strides of the model's stages (``feature_info``, stem entries left out)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise _Unknown(f"{type(model).__name__} has no feature_info reductions")
    return [
        int(d["reduction"])
        for d in info
        if not str(d.get("module", "")).startswith(("stem", "patch_embed"))
    ]


def stage_stride(model: nn.Module, stage: int) -> int:
    strides = reductions(model)
    if stage >= len(strides):
        raise _Unknown(f"stage {stage} has no feature_info reduction ({strides})")
    return strides[stage]


def grid_of(size: Pair, stride: Pair | int) -> Pair:
    """The token grid of a map at ``stride`` px, when the input is a multiple of it."""
    sy, sx = pair(stride)
    if size[0] % sy or size[1] % sx:
        raise _Unknown(
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
        raise _Unknown(f"stage stride {stride} is not a multiple of the patch stride {base}")
    step = stride // base
    return (-(-rows // step), -(-cols // step))


def pooled(grid: Pair, kernel: Any, stride: Any, padding: Any) -> tuple[Pair, FPair]:
    """Output grid of a pooling / strided conv and the input-token index of output 0."""
    k, s, p = pair(kernel), pair(stride), pair(padding)
    out = ((grid[0] + 2 * p[0] - k[0]) // s[0] + 1, (grid[1] + 2 * p[1] - k[1]) // s[1] + 1)
    return out, ((k[0] - 1) / 2 - p[0], (k[1] - 1) / 2 - p[1])


def fstride(stride: Pair | int) -> FPair:
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
    raise _Unknown(f"no feature_info reduction for {module}")


def map_geometry(context: Context, stride: int, note: str, **fields: object) -> TokenGeometry:
    """Global attention over the whole map at ``stride`` px."""
    grid = grid_of(context.size, stride)
    resolution = getattr(context.module, "resolution", None)
    if resolution is not None and pair(resolution) != grid:
        raise _Unknown(f"module resolution {resolution} differs from the {grid} map at the input")
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
        raise _Unknown(f"{what} is a {type(conv).__name__}: its token positions are not modelled")
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
        raise _Unknown(f"block {index} is after the last feature_info stage")
    return stride


# -- the registry -------------------------------------------------------------------------

FAMILY_RULES: dict[str, Rule] = {}
"""Rule per timm model module (``type(model).__module__`` without ``timm.models.``)."""


def rule(*families: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for family in families:
            if family in FAMILY_RULES:
                raise ValueError(f"two geometry rules for {family}")
            FAMILY_RULES[family] = fn
        return fn

    return register


def _default_size(model: nn.Module) -> Pair:
    embed = getattr(model, "patch_embed", None)
    img = getattr(embed, "img_size", None)
    if img is not None:
        return pair(img)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    if size:
        return (int(size[-2]), int(size[-1]))
    raise _Unknown("no input size given and the model declares none")


def infer_family_geometry(
    model: nn.Module, name: str, module: nn.Module, input_size: tuple[int, int] | None = None
) -> TokenGeometry:
    """The geometry of attention ``name`` by the rule of ``model``'s family (see module doc)."""
    if isinstance(module, nn.MultiheadAttention):
        return TokenGeometry.unknown(
            "nn.MultiheadAttention carries no token layout; pass geometry= explicitly"
        )
    from . import _family_rules, _family_rules_mixed, _family_rules_more  # noqa: F401

    if "AttentionPool" in type(module).__name__:
        return TokenGeometry.unknown(
            f"attention pooling ({type(module).__name__}): the pooling query has no position"
        )

    where = type(model).__module__
    family = where.removeprefix("timm.models.")
    fn = FAMILY_RULES.get(family)
    if fn is None and not where.startswith("timm."):
        fn = FAMILY_RULES["<vit-like>"]
    if fn is None:
        return TokenGeometry.unknown(
            f"no geometry rule for the timm family {family} ({type(module).__name__})"
        )
    try:
        size = pair(input_size) if input_size is not None else _default_size(model)
        context = Context(model, name, module, size, dict(model.named_modules()))
        return fn(context)
    except _Unknown as exc:
        return TokenGeometry.unknown(str(exc))
