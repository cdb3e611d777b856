"""Integration tier (families): windows zero-padded at the border are not tokens.

A map that is not a multiple of the window is zero-padded at the bottom / right before it
is cut into windows (SAM ViT, Swin, DaViT, TinyViT, Twins, EfficientViT-MSRA, SAM2 Hiera).
METRICS.md §1: padded queries are dropped and attention is renormalised over real keys
only. Tiny random-init models whose token map is not a multiple of the window are
captured, and the stored per-image summaries are compared with an independent
computation written here: the model's own unfused probabilities (``fused_attn=False``,
``attn_drop`` input) masked by hand with timm's own partition of a marker map.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models import swin_transformer, vision_transformer_sam
from torch import nn

import hooks
from inspector import AnalyzeOptions, analyze
from inspector._summaries import attention_summaries
from inspector.metrics import distance_matrix, mean_attention_distance

pytestmark = pytest.mark.families


def sam_model() -> nn.Module:
    """5×5 patch map, 3×3 windows (padded to 6×6: 11 of 36 slots are padding)."""
    torch.manual_seed(0)
    return vision_transformer_sam.VisionTransformerSAM(
        img_size=80,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=2,
        window_size=3,
        global_attn_indexes=(1,),
        num_classes=0,
    ).eval()


def swin_model() -> nn.Module:
    """16×16 map at stride 4, 7×7 windows shifted by 3 (padded to 21×21)."""
    torch.manual_seed(0)
    return swin_transformer.SwinTransformer(
        img_size=64, embed_dim=24, depths=(2,), num_heads=(2,), window_size=7, num_classes=0
    ).eval()


def sam_marker(model: nn.Module, layer: str, size: int) -> torch.Tensor:
    """``[window, slot]``: 1 on real tokens, as SAM's own partition lays them out."""
    block = model.get_submodule(layer.rsplit(".", 1)[0])
    side = size // 16
    windows, _ = vision_transformer_sam.window_partition(
        torch.ones(1, side, side, 1), block.window_size
    )
    return windows.reshape(windows.shape[0], -1)


def swin_marker(model: nn.Module, layer: str, size: int) -> torch.Tensor:
    """Swin: the cyclic shift, then zero padding to the window, then its partition."""
    block = model.get_submodule(layer.rsplit(".", 1)[0])
    side = size // 4
    window, shift = block.window_size, block.shift_size
    ones = torch.roll(torch.ones(1, side, side, 1), (-shift[0], -shift[1]), (1, 2))
    padded = F.pad(ones, (0, 0, 0, -side % window[1], 0, -side % window[0]))
    windows = swin_transformer.window_partition(padded, window)
    return windows.reshape(windows.shape[0], -1)


def unfused(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's own softmax output ``[sequence, head, query, key]`` (unfused path)."""
    module = model.get_submodule(layer)
    found: list[torch.Tensor] = []
    handle = module.attn_drop.register_forward_pre_hook(lambda m, a: found.append(a[0].clone()))
    module.fused_attn = False
    try:
        with torch.no_grad():
            model(x)
    finally:
        module.fused_attn = True
        handle.remove()
    probs = found[0].double()
    if probs.ndim == 3:  # SAM: [sequence · head, query, key]
        probs = probs.reshape(-1, module.num_heads, *probs.shape[-2:])
    return probs


def reference(
    probs: torch.Tensor, real: torch.Tensor, window: int, stride: float, batch: int
) -> dict[str, np.ndarray]:
    """Per image and head, over real queries only, rows renormalised over real keys:
    MAD, MAD_raw and entropy (normalised by ln of the real keys)."""
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    slots = np.stack([ys.ravel(), xs.ravel()], -1) * stride
    per_image = real.shape[0]
    heads = probs.shape[1]
    out = {k: np.zeros((batch, heads)) for k in ("distance", "raw", "entropy", "normalised")}
    for b in range(batch):
        for h in range(heads):
            values: dict[str, list[float]] = {k: [] for k in out}
            for w in range(per_image):
                keep = real[w].numpy() > 0.5
                rows = probs[b * per_image + w, h].numpy()[keep][:, keep]
                pos = slots[keep]
                d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
                normed = rows / rows.sum(-1, keepdims=True)
                entropy = -(normed * np.log(normed)).sum(-1)
                values["distance"] += list((normed * d).sum(-1))
                values["raw"] += list((rows * d).sum(-1))
                values["entropy"] += list(entropy)
                values["normalised"] += list(entropy / math.log(keep.sum()))
            for k in out:
                out[k][b, h] = np.mean(values[k])
    return out


CASES: dict[str, tuple[Callable[[], nn.Module], int, str, Callable, float]] = {
    "samvit": (sam_model, 80, "blocks.0.attn", sam_marker, 16.0),
    "swin-shifted": (swin_model, 64, "layers.0.blocks.1.attn", swin_marker, 4.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_padded_window_slots_are_not_tokens(case: str) -> None:
    build, size, layer, marker, stride = CASES[case]
    model = build()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    real = marker(model, layer, size)
    assert 0 < int((real < 0.5).sum()) < real.numel()  # the map really is padded
    probs = unfused(model, layer, x)

    with torch.no_grad(), hooks.capture(model, summaries=attention_summaries()) as cap:
        model(x)
    record = cap.attention[layer]
    geometry = record.geometry
    assert geometry.kind == "windowed" and geometry.padded
    queries, keys = geometry.real_slots()  # type: ignore[misc]
    np.testing.assert_array_equal(queries, real.numpy() > 0.5)
    np.testing.assert_array_equal(keys, real.numpy() > 0.5)

    window = geometry.window[0]  # type: ignore[index]
    expected = reference(probs, real, window, stride, batch=2)
    np.testing.assert_allclose(record.summary("distance"), expected["distance"], rtol=1e-5)
    np.testing.assert_allclose(record.summary("distance_raw"), expected["raw"], rtol=1e-5)
    np.testing.assert_allclose(record.summary("entropy"), expected["entropy"], rtol=1e-5)
    np.testing.assert_allclose(
        record.summary("entropy_normalised"), expected["normalised"], rtol=1e-5
    )
    np.testing.assert_allclose(record.summary("prefix_mass"), 0.0, atol=1e-7)

    # Counting the padding as tokens (every slot a query and a key) reads differently.
    naive = mean_attention_distance(
        probs.numpy(), distance_matrix(*geometry.centres()), prefix=0
    ).renormalised
    naive_image = naive.reshape(2, -1, naive.shape[-1]).mean(1)
    assert np.abs(naive_image - expected["distance"]).min() > 0.01 * expected["distance"].min()


def test_real_slots_of_a_5x5_map_in_3x3_windows() -> None:
    geometry = hooks.TokenGeometry(kind="windowed", grid=(5, 5), stride=(16.0, 16.0), window=(3, 3))
    assert geometry.padded
    queries, keys = geometry.real_slots()  # type: ignore[misc]
    assert queries.shape == (4, 9)
    assert queries.sum(-1).tolist() == [9, 6, 6, 4]  # full, right, bottom, corner
    np.testing.assert_array_equal(queries[1].reshape(3, 3), [[1, 1, 0]] * 3)
    np.testing.assert_array_equal(keys, queries)
    whole = hooks.TokenGeometry(kind="windowed", grid=(6, 6), stride=(16.0, 16.0), window=(3, 3))
    assert not whole.padded and whole.real_slots() is None


def test_padded_sam_run_reports_distance_and_uniform_over_real_tokens(tmp_path: Path) -> None:
    """Through ``inspector.analyze``: the uniform reference stored beside the MAD is
    uniform attention over each window's real keys, mean over the 25 real queries (not
    the full 3×3 window's 23.25 px)."""
    model = sam_model()
    options = AnalyzeOptions(
        analyses=("attention_distance",), limit=2, input_size=80, report=False, progress=False
    )
    run = analyze(model, "builtin", out=tmp_path, options=options)
    layer = run.result("attention_distance").layers["blocks.0.attn"]
    side, window, stride = 5, 3, 16.0
    per_query = []
    for top in range(0, side, window):
        for left in range(0, side, window):
            rows = np.arange(top, min(top + window, side))
            cols = np.arange(left, min(left + window, side))
            pos = np.stack(np.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2) * stride
            d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
            per_query += list(d.mean(1))
    assert len(per_query) == side * side
    assert layer.uniform == pytest.approx(np.mean(per_query), rel=1e-9)
    slots = np.indices((window, window)).reshape(2, -1).T * stride
    full = np.sqrt(((slots[:, None] - slots[None]) ** 2).sum(-1)).mean()
    assert full == pytest.approx(23.252980, rel=1e-6)  # one full 3×3 window
    assert layer.uniform < full - 1.0


def test_head_output_moments_skip_padded_slots() -> None:
    """The per-head outputs (input of ``proj``) of padded slots are not sampled: with every
    position kept, the moments count the 25 real tokens of each image, and their mean is
    the mean over the real rows picked by SAM's own partition of a marker map."""
    model = sam_model()
    layer = "blocks.0.attn"
    x = torch.randn(2, 3, 80, 80, generator=torch.Generator().manual_seed(1))
    inputs: list[torch.Tensor] = []
    handle = model.get_submodule(f"{layer}.proj").register_forward_pre_hook(
        lambda m, args: inputs.append(args[0].detach().clone()) and None
    )
    with torch.no_grad(), hooks.capture(model, positions=None, channels=None) as cap:
        model(x)
    handle.remove()
    real = sam_marker(model, layer, 80).reshape(-1) > 0.5  # [window · slot] of one image
    outputs = inputs[0].reshape(2, real.numel(), -1)  # [image, window · slot, features]
    assert outputs.shape[1] == 36 and int(real.sum()) == 25
    moments = cap.attention[layer].moments
    assert moments is not None and moments.count == 2 * 25
    expected = outputs[:, real].reshape(-1, outputs.shape[-1]).double().mean(0)
    torch.testing.assert_close(moments.mean.double(), expected, atol=1e-5, rtol=0)
