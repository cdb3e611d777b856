"""The trained ViT-Ti/16 of ../shared/weights against METRICS.md §5 and §7.

Skipped where the weights are absent (a user's checkout). The distances are checked
against an independent computation: timm's own unfused attention, the softmax read at
``attn_drop``, and renormalised MAD in numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from support import TRAINED_VIT, load_trained_vit

from inspector import AnalyzeOptions, analyze
from inspector.images import builtin_images_dir
from inspector.metrics import distance_matrix, token_centres

ARCH = "vit_tiny_patch16_224"


def load_independently(path: Path) -> torch.nn.Module:
    """As the weights README says: safetensors into timm, strictly (no inspector code)."""
    return load_trained_vit(path)


def unfused_probabilities(
    model: torch.nn.Module, x: torch.Tensor
) -> tuple[list[np.ndarray], torch.Tensor]:
    """Per block ``[sample, head, query, key]``: the softmax timm passes to ``attn_drop``;
    and the logits."""
    found: dict[int, np.ndarray] = {}
    handles = []
    for index, block in enumerate(model.blocks):
        block.attn.fused_attn = False
        handles.append(
            block.attn.attn_drop.register_forward_hook(
                lambda m, a, out, index=index: found.__setitem__(index, out.double().numpy())
            )
        )
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [found[i] for i in range(len(model.blocks))], logits


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not TRAINED_VIT.exists():
        pytest.skip(f"trained ViT-Ti weights not found at {TRAINED_VIT} (only in the dev sandbox)")
    options = AnalyzeOptions(
        weights=str(TRAINED_VIT),
        analyses=("attention_distance", "attention_entropy"),
        layers="blocks.*.attn",  # attention only: no channel moments to gather
        report=False,
        progress=False,
    )
    run = analyze(ARCH, "builtin", out=tmp_path_factory.mktemp("trained"), options=options)
    return TRAINED_VIT, run


def test_trained_vit_distances_follow_the_vit_paper(trained_run: Any) -> None:
    """METRICS.md §7: early blocks mix local and global heads, late blocks are global; and
    every head's distance equals timm's unfused attention measured in numpy."""
    path, run = trained_run
    assert run.meta["weights_source"] == "file"
    layers = run.analysis["attention_distance"]["layers"]
    assert sorted(layers) == sorted(f"blocks.{i}.attn" for i in range(12))

    model = load_independently(path)
    transform = timm.data.create_transform(
        **timm.data.resolve_data_config({}, model=model), is_training=False
    )
    files = [builtin_images_dir() / name for name in run.sample_ids]
    assert len(files) == 9
    x = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    rows, cols = model.patch_embed.grid_size
    stride = model.patch_embed.patch_size
    centres = token_centres(rows, cols, stride[0], stride[1])
    distances = distance_matrix(centres, centres)
    prefix = model.num_prefix_tokens

    maps, logits = unfused_probabilities(model, x)
    assert int(logits[run.sample_ids.index("chelsea.jpg")].argmax()) == 285  # Egyptian cat
    lines = []
    for index, probs in enumerate(maps):
        spatial = probs[:, :, prefix:, prefix:]
        per_query = np.einsum("shqk,qk->shq", spatial, distances) / spatial.sum(-1)
        expected = per_query.mean(-1).mean(0)  # mean over queries, then images
        got = layers[f"blocks.{index}.attn"]["mean"]
        np.testing.assert_allclose(got, expected, rtol=1e-4)
        lines.append(
            f"block {index:2d}: most local {got.min():6.1f} px, most global {got.max():6.1f}"
        )
    print("\n" + "\n".join(lines))

    means = [layers[f"blocks.{i}.attn"]["mean"] for i in range(12)]
    for block in (0, 1):
        assert means[block].min() < 40, f"block {block} has no local head: {means[block]}"
        assert means[block].max() > 80, f"block {block} has no global head: {means[block]}"
    for block in (10, 11):
        assert means[block].min() > 100, f"block {block} is not all global: {means[block]}"
