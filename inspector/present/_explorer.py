"""The attention-map explorer's view: each layer's kept maps placed on its token grid.

Global layers keep their rows as they are; windowed layers are mapped back onto the map
(timm's convention: the map is rolled by ``-shift``, zero-padded at the bottom / right,
and cut into windows row-major, slots row-major inside a window). Layers whose maps do
not sit on one query grid (reduced or pooled keys, dilated grids, class attention) are
named as left out. The page budget picks how many images and which query rows go in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import reports

from ..store import Run

__all__ = ["explorer_view", "window_cells"]
#: Most images offered.
MAX_IMAGES = 3


def window_cells(
    grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int] | None
) -> np.ndarray:
    """``[window, slot]`` map cell (row-major) of every slot of every window; ``-1`` for
    padding slots (timm: roll by ``-shift``, pad bottom / right, cut row-major)."""
    (h, w), (wh, ww) = grid, window
    sr, sc = shift or (0, 0)
    rows = np.arange(-(-h // wh) * wh).reshape(-1, wh)  # [window row, slot row] in the rolled map
    cols = np.arange(-(-w // ww) * ww).reshape(-1, ww)
    i = rows[:, None, :, None]
    j = cols[None, :, None, :]
    real = (i < h) & (j < w)
    cells = ((i + sr) % h) * w + (j + sc) % w
    cells = np.where(real, cells, -1)
    return cells.reshape(rows.shape[0] * cols.shape[0], wh * ww)


def _query_cells(grid: tuple[int, int], step: int) -> np.ndarray:
    rows, cols = np.meshgrid(
        np.arange(0, grid[0], step), np.arange(0, grid[1], step), indexing="ij"
    )
    return (rows * grid[1] + cols).ravel()


Builder = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _global(geometry: dict[str, Any], maps: np.ndarray) -> Builder | None:
    prefix, grid = int(geometry.get("prefix", 0)), tuple(geometry["grid"])
    cells = grid[0] * grid[1]
    if maps.ndim != 4 or maps.shape[-2:] != (prefix + cells, prefix + cells):
        return None

    def build(images: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
        spatial = _query_cells(grid, step)
        queries = np.concatenate([[-1], spatial]) if prefix else spatial
        rows_at = np.concatenate([[0], prefix + spatial]) if prefix else prefix + spatial
        rows = maps[images][:, :, rows_at, prefix:]
        keys = np.arange(cells)[None, :]
        return queries, np.zeros(len(queries), dtype=np.int64), keys, rows

    return build


def _windowed(geometry: dict[str, Any], maps: np.ndarray) -> Builder | None:
    grid, window = tuple(geometry["grid"]), tuple(geometry["window"])
    if geometry.get("key_window") or geometry.get("prefix", 0) or maps.ndim != 5:
        return None
    shift = tuple(geometry["shift"]) if geometry.get("shift") else None
    cells = window_cells(grid, window, shift)  # type: ignore[arg-type]
    if maps.shape[1] != cells.shape[0] or maps.shape[-2:] != (cells.shape[1], cells.shape[1]):
        return None
    where = np.full(grid[0] * grid[1], -1)
    slot = np.full(grid[0] * grid[1], -1)
    for w, row in enumerate(cells):
        real = row >= 0
        where[row[real]] = w
        slot[row[real]] = np.flatnonzero(real)

    def build(images: np.ndarray, step: int) -> tuple[np.ndarray, ...]:
        queries = _query_cells(grid, step)  # type: ignore[arg-type]
        picked = maps[images]  # [image, window, head, query, key]
        rows = picked[:, where[queries], :, slot[queries], :]  # [query, image, head, key]
        return queries, where[queries], cells, np.moveaxis(rows, 0, 2)

    return build


_RULES = {"global": _global, "windowed": _windowed}


def _budget(layers: list[tuple[Any, Builder, np.ndarray]], available: int) -> tuple[int, int]:
    """``(images, query step)`` within :data:`reports.Explorer.BUDGET`: the finest query
    step that still fits two images (one if nothing does), then the most images."""

    def size(images: int, step: int) -> int:
        total = 0
        for layer, _, maps in layers:
            geometry = layer.attrs["geometry"]
            rows, cols = geometry["grid"]
            prefix = int(geometry.get("prefix", 0))
            queries = -(-rows // step) * -(-cols // step) + (1 if prefix else 0)
            total += images * maps.shape[-3] * queries * (maps.shape[-1] - prefix)
        return total

    most = min(MAX_IMAGES, available)
    for fewest in (min(2, most), 1):  # two images to switch between, before every row
        for step in range(1, 9):
            for images in range(most, fewest - 1, -1):
                if size(images, step) <= reports.Explorer.BUDGET:
                    return images, step
    return 1, 8


def explorer_view(
    run: Run, image_of: Callable[[str], np.ndarray | None]
) -> reports.Explorer | None:
    """The explorer's view of ``run``'s kept maps, or ``None`` when none can be placed."""
    usable: list[tuple[Any, Builder, np.ndarray]] = []
    skipped: list[str] = []
    for layer in run.attention_layers():
        maps = layer.maps
        if maps is None:
            continue
        geometry = layer.attrs.get("geometry", {})
        rule = _RULES.get(geometry.get("kind", ""))
        build = rule(geometry, maps) if rule else None
        if build is None:
            skipped.append(f"{layer.name} ({geometry.get('kind', 'unknown')})")
            continue
        usable.append((layer, build, maps))
    if not usable:
        return None
    kept = min(len(layer.maps) for layer, _, _ in usable)
    pictures = []
    for index, sample_id in enumerate(run.sample_ids[:kept]):
        image = image_of(sample_id)
        if image is not None:
            pictures.append((index, sample_id, image))
    if not pictures:
        return None
    count, step = _budget(usable, len(pictures))
    pictures = pictures[:count]
    chosen = np.array([index for index, _, _ in pictures])
    layers = []
    for layer, build, _ in usable:
        queries, key_set, keys, rows = build(chosen, step)
        geometry = layer.attrs["geometry"]
        stride = tuple(geometry["stride"])
        origin = geometry.get("origin") or (stride[0] / 2, stride[1] / 2)
        layers.append(
            reports.ExplorerLayer(
                layer.name,
                tuple(geometry["grid"]),
                stride,
                tuple(origin),
                queries,
                key_set,
                keys,
                np.nan_to_num(rows.astype(np.float32), nan=0.0).clip(min=0),
                query_step=step,
            )
        )
    left_out = []
    if skipped:
        left_out.append(
            f"Not in the explorer (their maps do not sit on one query grid): {', '.join(skipped)}."
        )
    if len(pictures) < kept:
        left_out.append(
            f"{len(pictures)} of the {kept} images with kept maps, to keep the page small."
        )
    return reports.Explorer(
        tuple((sid, img) for _, sid, img in pictures), tuple(layers), tuple(left_out)
    )
