"""Token geometry of an attention layer: where each query and key token sits in the input.

Distances are only meaningful when token centres are known in input pixels, so
geometry is read from the model (``num_prefix_tokens``, ``patch_embed.grid_size``,
``feature_info`` reductions, window and pooling attributes; see the rules of
:mod:`hooks.geometry`) and checked against the token counts seen at run time. When it
cannot be inferred the layer is ``unknown`` with a reason — never a guess (in particular
never ``sqrt(N)``).

Kinds:

- ``global``: every query of the ``grid`` sees every key of the key grid (``key_grid``
  when keys are spatially reduced or pooled, else the query grid).
- ``windowed``: the map is cut into ``window``-sized blocks (after a cyclic ``shift``);
  each block is one attention sequence. Token positions are those inside one block. Keys
  may come from a finer map cut into ``key_window`` blocks (queries pooled inside each
  window, SAM2 Hiera).
- ``dilated``: grid attention (MaxViT, MobileViT): one sequence holds a ``window`` of
  tokens spaced ``dilation`` tokens apart, spread over the whole map.
- ``class-attention``: only the prefix (class) tokens query; keys are the prefix and the
  key grid. No spatial query, so no attention distance applies.
- ``channel-attention``: queries and keys are channels (XCiT); no spatial distance.
- ``unknown``: with the reason.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["NOT_APPLICABLE", "GeometryKind", "TokenGeometry"]

GeometryKind = Literal[
    "global", "windowed", "dilated", "class-attention", "channel-attention", "unknown"
]

NOT_APPLICABLE: tuple[str, ...] = ("class-attention", "channel-attention")
"""Kinds for which attention distance does not apply (no spatial query or token)."""

_SPATIAL = ("global", "windowed", "dilated")


def _area(shape: tuple[int, int]) -> int:
    return int(shape[0]) * int(shape[1])


@dataclass(frozen=True)
class TokenGeometry:
    """Where the tokens of one attention layer sit in input pixels.

    Attributes:
        kind: See the module docstring.
        prefix: Number of non-spatial tokens (class, distillation, register) placed
            before the spatial tokens, for queries and keys alike (for
            ``class-attention``: the querying tokens).
        grid: Query grid ``(rows, cols)`` of the whole map.
        stride: Pixel stride ``(y, x)`` between neighbouring query tokens.
        key_grid: Key grid when it differs from the query grid (reduced or pooled keys;
            for ``windowed`` with a ``key_window``, the map cut into key windows).
        key_stride: Pixel stride of the key grid.
        window: Tokens ``(rows, cols)`` of one sequence for ``windowed`` and ``dilated``.
        shift: Cyclic shift ``(rows, cols)`` in tokens for shifted windows.
        reason: Why the geometry is ``unknown`` (or a note on how it was inferred).
        dilation: Spacing ``(rows, cols)`` in tokens between the tokens of one ``dilated``
            sequence.
        origin: Pixel centre ``(y, x)`` of query token ``(0, 0)``; ``None`` means half a
            stride (the centre of the first patch).
        key_origin: Pixel centre of key token ``(0, 0)``; ``None`` means half a key stride.
        key_window: Key tokens ``(rows, cols)`` of one ``windowed`` sequence when they differ
            from the query window (on the ``key_stride`` map).
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
    dilation: tuple[int, int] | None = None
    origin: tuple[float, float] | None = None
    key_origin: tuple[float, float] | None = None
    key_window: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.prefix < 0:
            raise ValueError(f"prefix must be >= 0, got {self.prefix}")
        if self.kind in _SPATIAL and (self.grid is None or self.stride is None):
            raise ValueError(f"a {self.kind} geometry needs grid and stride")
        if self.kind in ("windowed", "dilated") and self.window is None:
            raise ValueError(f"a {self.kind} geometry needs a window")
        if self.kind == "dilated":
            if self.dilation is None:
                raise ValueError("a dilated geometry needs a dilation")
            assert self.grid is not None and self.window is not None
            if any(
                g != w * d for g, w, d in zip(self.grid, self.window, self.dilation, strict=True)
            ):
                raise ValueError(
                    f"dilated grid {self.grid} is not window {self.window} × dilation "
                    f"{self.dilation}"
                )
        if self.kind == "class-attention" and (self.key_grid is None or self.key_stride is None):
            raise ValueError("a class-attention geometry needs key_grid and key_stride")
        if self.kind == "class-attention" and self.prefix < 1:
            raise ValueError("a class-attention geometry needs prefix >= 1 (the querying tokens)")
        if self.kind == "unknown" and not self.reason:
            raise ValueError("an unknown geometry needs a reason")

    @property
    def known(self) -> bool:
        """Query and key centres are known: attention distance applies."""
        return self.kind in _SPATIAL

    @property
    def applicable(self) -> bool:
        """Attention distance applies to this kind (``False`` for class/channel attention)."""
        return self.kind not in NOT_APPLICABLE

    @property
    def keys(self) -> tuple[int, int] | None:
        """Key grid (the query grid unless keys are reduced)."""
        return self.key_grid or self.grid

    @property
    def tokens(self) -> int | None:
        """Expected number of query tokens per sequence, prefix included."""
        if self.kind in ("windowed", "dilated"):
            assert self.window is not None
            return self.prefix + _area(self.window)
        if self.kind == "class-attention":
            return self.prefix
        if self.grid is None:
            return None
        return self.prefix + _area(self.grid)

    @property
    def key_tokens(self) -> int | None:
        """Expected number of key tokens per sequence, prefix included."""
        if self.kind in ("windowed", "dilated"):
            assert self.window is not None
            return self.prefix + _area(self.key_window or self.window)
        keys = self.keys
        return None if keys is None else self.prefix + _area(keys)

    @property
    def sequences(self) -> int | None:
        """Expected number of attention sequences (windows) per image."""
        if self.kind in ("global", "class-attention"):
            return 1
        if self.kind == "windowed":
            assert self.grid is not None and self.window is not None
            rows = math.ceil(self.grid[0] / self.window[0])
            return rows * math.ceil(self.grid[1] / self.window[1])
        if self.kind == "dilated":
            assert self.dilation is not None
            return _area(self.dilation)
        return None

    def mismatch(self, sequences: int, queries: int, keys: int) -> str | None:
        """Why attention of ``sequences`` per image × ``queries`` × ``keys`` tokens does not
        fit this geometry, or ``None`` when it fits (or nothing is known to check)."""
        for what, seen, expected in (
            ("query tokens", queries, self.tokens),
            ("key tokens", keys, self.key_tokens),
            ("sequences per image", sequences, self.sequences),
        ):
            if expected is not None and seen != expected:
                return (
                    f"{seen} {what} seen, the inferred {self.kind} geometry has {expected} "
                    f"(prefix {self.prefix}, grid {self.grid}, keys {self.keys}, "
                    f"window {self.window})"
                )
        return None

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres ``(y, x)`` of the spatial query and key tokens of one sequence.

        Returns:
            ``(queries [Q, 2], keys [K, 2])`` in the order the sequence holds them
            (row-major), without prefix tokens. For ``windowed`` and ``dilated``
            attention, the positions inside one sequence (every sequence has the same
            relative layout, so distances are those of any of them).

        Raises:
            ValueError: The geometry is not ``global``, ``windowed`` or ``dilated``.
        """
        if not self.known:
            raise ValueError(f"no token centres for a {self.kind} geometry ({self.reason})")
        assert self.grid is not None and self.stride is not None
        if self.kind in ("windowed", "dilated"):
            assert self.window is not None
            step = self.dilation or (1, 1)
            stride = (self.stride[0] * step[0], self.stride[1] * step[1])
            queries = _grid_centres(self.window, stride, self.origin)
            if self.key_window is None:
                return queries, queries
            keys = _grid_centres(self.key_window, self.key_stride or stride, self.key_origin)
            return queries, keys
        queries = _grid_centres(self.grid, self.stride, self.origin)
        if self.key_grid is None and self.key_stride is None and self.key_origin is None:
            return queries, queries
        keys = _grid_centres(
            self.key_grid or self.grid, self.key_stride or self.stride, self.key_origin
        )
        return queries, keys

    @property
    def padded(self) -> bool:
        """Windows zero-padded at the bottom / right border: the map (query or key) is not
        a multiple of its window, so some slots of the border sequences are not tokens."""
        if self.kind != "windowed":
            return False
        assert self.grid is not None and self.window is not None
        keys, key_window = self.keys, self.key_window or self.window
        assert keys is not None
        return any(
            g % w for g, w in zip((*self.grid, *keys), (*self.window, *key_window), strict=True)
        )

    def real_slots(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Which spatial slots of each sequence of one image are tokens, not padding
        (METRICS.md §1: padded queries are dropped, attention renormalised over real keys).

        Windows are cut row-major from the map zero-padded at the bottom / right (after any
        cyclic shift, which keeps the padding at the end), slots row-major inside a window.

        Returns:
            ``(queries [sequence, Q], keys [sequence, K])`` booleans, ``None`` when no slot
            is padding.

        Raises:
            ValueError: Query and key maps give different numbers of windows.
        """
        if not self.padded:
            return None
        assert self.grid is not None and self.window is not None and self.keys is not None
        queries = _slots(self.grid, self.window)
        keys = _slots(self.keys, self.key_window or self.window)
        if len(queries) != len(keys):
            raise ValueError(
                f"{len(queries)} query windows and {len(keys)} key windows in {self.grid} / "
                f"{self.keys} maps"
            )
        return queries, keys

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


def _grid_centres(
    grid: tuple[int, int], stride: tuple[float, float], origin: tuple[float, float] | None
) -> np.ndarray:
    oy, ox = origin if origin is not None else (stride[0] / 2, stride[1] / 2)
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    centres = np.stack([oy + rows * stride[0], ox + cols * stride[1]], axis=-1)
    return centres.reshape(-1, 2).astype(np.float64)


def _slots(grid: tuple[int, int], window: tuple[int, int]) -> np.ndarray:
    """``[window, slot]``: whether each slot of each window of the zero-padded map is real."""
    (h, w), (wh, ww) = grid, window
    rows = np.arange(-(-h // wh) * wh).reshape(-1, wh) < h  # [window row, slot row]
    cols = np.arange(-(-w // ww) * ww).reshape(-1, ww) < w
    real = rows[:, None, :, None] & cols[None, :, None, :]  # [wr, wc, sr, sc]
    return real.reshape(rows.shape[0] * cols.shape[0], wh * ww)
