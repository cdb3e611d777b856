"""Integration tier: the attention-map explorer's view of real runs.

Windowed maps are placed back on the image with timm's own partition (roll by
``-shift``, pad, ``window_partition``) as the reference; global maps keep their rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models import swin_transformer
from timm.models.swin_transformer import window_partition

import reports
from inspector import AnalyzeOptions, analyze
from inspector.present._explorer import explorer_view, window_cells
from inspector.present._report import _image

pytestmark = pytest.mark.families


@pytest.mark.parametrize(
    ("grid", "window", "shift"),
    [((5, 7), (3, 3), (1, 2)), ((6, 6), (3, 3), None), ((16, 16), (7, 7), (3, 3))],
)
def test_window_cells_follow_timms_partition(
    grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int] | None
) -> None:
    h, w = grid
    cells = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w, 1)
    if shift:
        cells = torch.roll(cells, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    pad_h, pad_w = -h % window[0], -w % window[1]
    cells = F.pad(cells, (0, 0, 0, pad_w, 0, pad_h), value=-1.0)
    expected = window_partition(cells, window).reshape(-1, window[0] * window[1])
    np.testing.assert_array_equal(window_cells(grid, window, shift), expected.numpy())


def _run(model: torch.nn.Module, size: int, tmp_path: Path):
    options = AnalyzeOptions(
        analyses=("attention_distance",),
        limit=3,
        keep_maps=3,
        input_size=size,
        report=False,
        progress=False,
    )
    return analyze(model, "builtin", out=tmp_path, options=options)


def test_windowed_rows_are_the_kept_window_rows(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = swin_transformer.SwinTransformer(
        img_size=64, embed_dim=24, depths=(2,), num_heads=(2,), window_size=7, num_classes=0
    ).eval()  # 16×16 map, 7×7 windows padded to 21×21, the second block shifted by 3
    run = _run(model, 64, tmp_path)
    view = explorer_view(run, lambda sample_id: _image(run, sample_id))
    assert view is not None and len(view.images) == 3
    layers = {layer.name: layer for layer in view.layers}
    for name in ("layers.0.blocks.0.attn", "layers.0.blocks.1.attn"):
        layer, maps = layers[name], run.layers[name].maps
        assert layer.grid == (16, 16) and layer.stride == (4.0, 4.0)
        assert layer.query_step == 1 and sorted(layer.queries.tolist()) == list(range(256))
        for q, cell in enumerate(layer.queries):
            keys = layer.keys[layer.key_set[q]]
            assert cell in keys  # a query attends inside its own window
        for q in (0, 17, 255):
            cell = layer.queries[q]
            window = next(i for i, row in enumerate(layer.keys) if cell in row)
            slot = int(np.flatnonzero(layer.keys[window] == cell)[0])
            np.testing.assert_allclose(
                layer.rows[:, :, q], maps[:3, window, :, slot].astype(np.float32), rtol=1e-6
            )
    # The shifted block's windows wrap around: some key set holds cells from both edges.
    shifted = layers["layers.0.blocks.1.attn"].keys
    assert any(({0, 15} <= set(row % 16)) for row in shifted[shifted.min(1) >= 0])


def test_global_rows_keep_the_class_query_and_fit_the_page(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=64, patch_size=8, embed_dim=24, depth=2, num_heads=3).eval()
    run = _run(model, 64, tmp_path)
    view = explorer_view(run, lambda sample_id: _image(run, sample_id))
    assert view is not None
    for layer in view.layers:
        maps = run.layers[layer.name].maps[: len(view.images)].astype(np.float32)
        assert layer.queries[0] == -1 and layer.grid == (8, 8)
        np.testing.assert_allclose(layer.rows[:, :, 0], maps[:, :, 0, 1:], rtol=1e-6)
        cell = layer.queries[5]
        np.testing.assert_allclose(layer.rows[:, :, 5], maps[:, :, 1 + cell, 1:], rtol=1e-6)
    assert sum(layer.rows.size for layer in view.layers) <= reports.Explorer.BUDGET
