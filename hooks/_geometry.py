"""Token geometry of an attention layer: where each query and key token sits in the input.

Distances are only meaningful when token centres are known in input pixels, so
geometry is read from the model (``num_prefix_tokens``, ``patch_embed.grid_size``,
``patch_embed.patch_size``) and checked against the token count seen at run time.
When it cannot be inferred the layer is ``unknown`` with a reason — never a guess
(in particular never ``sqrt(N)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from torch import nn

__all__ = ["GeometryKind", "TokenGeometry", "infer_geometry"]

GeometryKind = Literal["global", "windowed", "channel-attention", "unknown"]


@dataclass(frozen=True)
class TokenGeometry:
    """Where the tokens of one attention layer sit in input pixels.

    Attributes:
        kind: ``global`` (every query sees the whole key grid), ``windowed``,
            ``channel-attention`` (no spatial distance applies) or ``unknown``.
        prefix: Number of non-spatial tokens (class, distillation, register) placed
            before the spatial tokens, for queries and keys alike.
        grid: Query grid ``(rows, cols)``.
        stride: Pixel stride ``(y, x)`` between neighbouring query tokens.
        key_grid: Key grid when it differs from the query grid (reduced keys).
        key_stride: Pixel stride of the key grid.
        window: Window ``(rows, cols)`` in tokens for windowed attention.
        shift: Cyclic shift ``(rows, cols)`` in tokens for shifted windows.
        reason: Why the geometry is ``unknown`` (or a note on how it was inferred).
    """

    kind: GeometryKind
    prefix: int = 0
    grid: tuple[int, int] | None = None
    stride: tuple[float, float] | None = None
    key_grid: tuple[int, int] | None = None
    key_stride: tuple[float, float] | None = None
    window: tuple[int, int] | None = None
    shift: tuple[int, int] | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.prefix < 0:
            raise ValueError(f"prefix must be >= 0, got {self.prefix}")
        if self.kind in ("global", "windowed") and (self.grid is None or self.stride is None):
            raise ValueError(f"a {self.kind} geometry needs grid and stride")
        if self.kind == "unknown" and not self.reason:
            raise ValueError("an unknown geometry needs a reason")

    @property
    def known(self) -> bool:
        return self.kind in ("global", "windowed")

    @property
    def keys(self) -> tuple[int, int] | None:
        """Key grid (the query grid unless keys are reduced)."""
        return self.key_grid or self.grid

    @property
    def tokens(self) -> int | None:
        """Expected number of query tokens per sequence, prefix included."""
        if self.grid is None:
            return None
        return self.prefix + self.grid[0] * self.grid[1]

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres ``(y, x)`` of the spatial query and key tokens of one sequence.

        Returns:
            ``(queries [Q, 2], keys [K, 2])`` in the order the sequence holds them
            (row-major), without prefix tokens. For windowed attention, the positions
            inside one window (every window has the same relative layout).

        Raises:
            ValueError: The geometry is not ``global`` or ``windowed``.
        """
        if not self.known:
            raise ValueError(f"no token centres for a {self.kind} geometry ({self.reason})")
        assert self.grid is not None and self.stride is not None
        grid = self.window if self.kind == "windowed" and self.window else self.grid
        queries = _grid_centres(grid, self.stride)
        if self.kind == "windowed" or self.key_grid is None:
            return queries, queries
        return queries, _grid_centres(self.key_grid, self.key_stride or self.stride)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.as_items()}

    def as_items(self) -> list[tuple[str, Any]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenGeometry:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def unknown(cls, reason: str) -> TokenGeometry:
        return cls(kind="unknown", reason=reason)


def _grid_centres(grid: tuple[int, int], stride: tuple[float, float]) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    centres = np.stack([(rows + 0.5) * stride[0], (cols + 0.5) * stride[1]], axis=-1)
    return centres.reshape(-1, 2).astype(np.float64)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def infer_geometry(
    model: nn.Module,
    name: str,
    module: nn.Module,
    input_size: tuple[int, int] | None = None,
) -> TokenGeometry:
    """Infer the geometry of attention module ``name`` of ``model`` from its attributes.

    Handles ViT-style models (DeiT, ViT with registers, BEiT, EVA, ...) whose blocks
    attend over ``num_prefix_tokens`` + a ``patch_embed.grid_size`` grid. Models with a
    dynamic image size get the grid of ``input_size`` (``(height, width)`` in pixels).
    """
    if isinstance(module, nn.MultiheadAttention):
        return TokenGeometry.unknown(
            "nn.MultiheadAttention carries no token layout; pass geometry= explicitly"
        )
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    patch = getattr(patch_embed, "patch_size", None)
    if patch_embed is None or grid is None or patch is None:
        return TokenGeometry.unknown(f"{type(model).__name__} has no patch_embed grid")
    if not name.startswith(("blocks.", "stages.")) or ".attn" not in name:
        return TokenGeometry.unknown(f"{name} is not an attention module inside the blocks")
    if getattr(model, "dynamic_img_size", False) and input_size is not None:
        feat = getattr(patch_embed, "dynamic_feat_size", None)
        if feat is None:
            return TokenGeometry.unknown("dynamic image size without patch_embed.dynamic_feat_size")
        grid = feat(tuple(input_size))
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    rows, cols = _pair(grid)
    py, px = _pair(patch)
    return TokenGeometry(
        kind="global",
        prefix=prefix,
        grid=(rows, cols),
        stride=(float(py), float(px)),
        reason="patch_embed.grid_size and num_prefix_tokens",
    )
