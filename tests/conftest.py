"""Shared fixtures: tiny real models, the shared folder beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TRAINED_VIT = SHARED / "weights" / "vit_tiny_patch16_224.safetensors"


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    """A timm model with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def model_input(model: nn.Module, batch: int = 2, seed: int = 1) -> torch.Tensor:
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(seed))


class MHANet(nn.Module):
    """A tiny model built on nn.MultiheadAttention over a 4×4 patch grid."""

    def __init__(self, dim: int = 16, heads: int = 4, batch_first: bool = True) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.batch_first = batch_first
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        if not self.batch_first:
            tokens = tokens.transpose(0, 1)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.head(out.mean(1))


def sequential_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()


@pytest.fixture
def trained_vit_path() -> Path:
    if not TRAINED_VIT.exists():
        pytest.skip(f"trained ViT-Ti weights not found at {TRAINED_VIT} (only in the dev sandbox)")
    return TRAINED_VIT
