"""Token positions on the input image, for distance-based metrics.

Every distance in :mod:`inspector.analyzers` is in input pixels. A token of a grid with
stride ``(stride_y, stride_x)`` sits at the centre of the input patch it summarises, so
distances between tokens are comparable across stages and models of different strides.
"""

from __future__ import annotations

import numpy as np

__all__ = ["distance_matrix", "token_centres"]


def token_centres(rows: int, cols: int, stride_y: float, stride_x: float) -> np.ndarray:
    """Centres of a ``rows × cols`` token grid, in input pixels.

    Args:
        rows: Grid height in tokens (from the model, never ``sqrt(tokens)``).
        cols: Grid width in tokens.
        stride_y: Input pixels between vertically adjacent tokens.
        stride_x: Input pixels between horizontally adjacent tokens.

    Returns:
        ``[rows * cols, 2]`` float64 array of ``(y, x)`` centres in row-major token order;
        token ``(r, c)`` sits at ``((r + 0.5) stride_y, (c + 0.5) stride_x)``.

    Raises:
        ValueError: If the grid is empty or a stride is not positive.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"token grid must be at least 1×1, got {rows}×{cols}")
    if not (stride_y > 0 and stride_x > 0):
        raise ValueError(f"strides must be positive, got ({stride_y}, {stride_x})")
    ys = (np.arange(rows, dtype=np.float64) + 0.5) * stride_y
    xs = (np.arange(cols, dtype=np.float64) + 0.5) * stride_x
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_y.ravel(), grid_x.ravel()], axis=1)


def distance_matrix(query_centres: np.ndarray, key_centres: np.ndarray) -> np.ndarray:
    """Euclidean distances between every query and every key centre.

    Args:
        query_centres: ``[query, 2]`` centres in input pixels.
        key_centres: ``[key, 2]`` centres in input pixels (e.g. a spatially reduced grid).

    Returns:
        ``[query, key]`` float64 distances in input pixels.

    Raises:
        ValueError: If either argument is not a ``[n, 2]`` array.
    """
    queries = np.asarray(query_centres, dtype=np.float64)
    keys = np.asarray(key_centres, dtype=np.float64)
    for name, array in (("query_centres", queries), ("key_centres", keys)):
        if array.ndim != 2 or array.shape[1] != 2:
            raise ValueError(f"{name} must be [n, 2] (y, x) centres, got {array.shape}")
    diff = queries[:, None, :] - keys[None, :, :]
    return np.sqrt(np.einsum("qkc,qkc->qk", diff, diff))
