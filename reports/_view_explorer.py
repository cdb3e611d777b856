"""View records of the attention-map explorer: kept attention rows laid out on the image.

The bridge (``inspector.present``) maps each layer's kept maps onto its token grid; this
module only checks the shapes. Rows are relative attention: each row is scaled to its own
maximum when the page packs it (8 bits per key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ._checks import as_array, as_tuple, set_field
from ._errors import ViewError

__all__ = ["Explorer", "ExplorerLayer"]


@dataclass(frozen=True)
class ExplorerLayer:
    """The kept attention rows of one layer, placed on its token grid.

    Attributes:
        name: Layer path.
        grid: Token grid ``(rows, cols)`` of the layer's map.
        stride: Pixel stride ``(y, x)`` between neighbouring tokens.
        origin: Pixel centre ``(y, x)`` of token ``(0, 0)``.
        queries: ``[Q]`` grid cell (row-major) of each stored query row; ``-1`` for the
            first prefix (class) token.
        key_set: ``[Q]`` which row of ``keys`` each query row attends over.
        keys: ``[S, K]`` grid cell of each key of each key set (a window's cells for
            windowed attention, every cell for global); ``-1`` for padding slots.
        rows: ``[image, head, Q, K]`` non-negative attention of each stored query row.
        query_step: Stored queries are every ``query_step``-th token in rows and columns.
    """

    name: str
    grid: tuple[int, int]
    stride: tuple[float, float]
    origin: tuple[float, float]
    queries: np.ndarray
    key_set: np.ndarray
    keys: np.ndarray
    rows: np.ndarray
    query_step: int = 1

    def __post_init__(self) -> None:
        set_field(self, "grid", tuple(int(v) for v in self.grid))
        set_field(self, "stride", tuple(float(v) for v in self.stride))
        set_field(self, "origin", tuple(float(v) for v in self.origin))
        queries = as_array(self, "queries", 1, dtype=np.int64)
        key_set = as_array(self, "key_set", 1, dtype=np.int64)
        keys = as_array(self, "keys", 2, dtype=np.int64)
        rows = as_array(self, "rows", 4, dtype=np.float32)
        cells = self.grid[0] * self.grid[1]
        problems = []
        if len(self.grid) != 2 or min(self.grid) < 1:
            problems.append(f"grid {self.grid} is not (rows >= 1, cols >= 1)")
        if queries.shape != key_set.shape:
            problems.append(f"queries {queries.shape} and key_set {key_set.shape} differ")
        if rows.shape[2:] != (queries.shape[0], keys.shape[1]):
            problems.append(
                f"rows {rows.shape} are not [image, head, {len(queries)}, {keys.shape[1]}]"
            )
        if queries.min() < -1 or queries.max() >= cells or keys.min() < -1 or keys.max() >= cells:
            problems.append(f"cells outside the {self.grid} grid")
        if key_set.min() < 0 or key_set.max() >= keys.shape[0]:
            problems.append(f"key_set outside the {keys.shape[0]} key sets")
        if not np.isfinite(rows).all() or rows.min() < 0:
            problems.append("rows must be finite and non-negative")
        if self.query_step < 1:
            problems.append(f"query_step {self.query_step} < 1")
        if problems:
            raise ViewError(f"ExplorerLayer {self.name!r}: " + "; ".join(problems))


@dataclass(frozen=True)
class Explorer:
    """What the attention-map explorer offers.

    Attributes:
        images: ``(image id, [row, col, 3] uint8 RGB as fed to the model)`` per image;
            image ``i`` is row ``i`` of every layer's ``rows``.
        layers: The layers, in model order.
        left_out: What was not included, one sentence each (layers whose geometry the
            explorer cannot place, images and query rows cut to keep the page small).
    """

    images: tuple[tuple[str, np.ndarray], ...]
    layers: tuple[ExplorerLayer, ...]
    left_out: tuple[str, ...] = ()

    #: Most bytes of packed rows (8 bits per key) one page carries (about 2 MB in base64).
    BUDGET: ClassVar[int] = 1_500_000

    def __post_init__(self) -> None:
        as_tuple(self, "layers", ExplorerLayer)
        as_tuple(self, "left_out", str)
        images = []
        for image_id, image in self.images:
            arr = np.array(image, dtype=np.uint8, copy=True)
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise ViewError(
                    f"Explorer image {image_id!r} must be [row, col, 3], got {arr.shape}"
                )
            arr.flags.writeable = False
            images.append((str(image_id), arr))
        set_field(self, "images", tuple(images))
        if not images or not self.layers:
            raise ViewError("Explorer needs at least one image and one layer")
        for layer in self.layers:
            if layer.rows.shape[0] != len(images):
                raise ViewError(
                    f"ExplorerLayer {layer.name!r} holds {layer.rows.shape[0]} images, "
                    f"the explorer {len(images)}"
                )
