"""Models a user brings: re-parameterized weight files, modules passed to the API, models
without attention."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from timm.utils.model import reparameterize_model
from torch import nn

import hooks
from inspector._errors import WeightsError
from inspector._models import create_model
from inspector.pipeline._resolve import module_name

SHARED = Path(__file__).resolve().parents[2] / "shared" / "weights"


@pytest.mark.parametrize(
    "arch",
    [
        "mobileone_s0",
        *(pytest.param(a, marks=pytest.mark.slow) for a in ("fastvit_t8", "repvgg_a0")),
    ],
)
def test_a_reparameterized_weights_file_loads_into_the_fused_model(
    arch: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    fused = reparameterize_model(timm.create_model(arch, pretrained=False).eval())
    path = tmp_path / f"{arch}.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in fused.state_dict().items()}, path)
    model, info = create_model(arch, weights=path)
    assert info.reparameterized and "re-parameterized" in info.reason
    assert module_name(model) == arch
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fused(x), atol=0, rtol=0)


def test_a_training_form_file_still_loads_without_fusing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = timm.create_model("mobileone_s0", pretrained=False).eval()
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, path)
    model, info = create_model("mobileone_s0", weights=path)
    assert not info.reparameterized
    assert any(hasattr(m, "reparameterize") for m in model.modules())


def test_a_file_of_another_model_names_both_forms(tmp_path: Path) -> None:
    other = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in other.state_dict().items()}, path)
    with pytest.raises(WeightsError, match="does not fit the model 'mobileone_s0'"):
        create_model("mobileone_s0", weights=path)


@pytest.mark.skipif(
    not (SHARED / "mobileone_s0.safetensors").exists(),
    reason="needs ../shared/weights/mobileone_s0.safetensors (trained, fused MobileOne-S0)",
)
def test_trained_fused_mobileone_loads_and_knows_a_cat() -> None:
    model, info = create_model("mobileone_s0", weights=SHARED / "mobileone_s0.safetensors")
    assert info.reparameterized
    assert sum(p.numel() for p in model.parameters()) == 2_078_504


def test_a_module_keeps_its_timm_name_or_the_given_one() -> None:
    model = reparameterize_model(timm.create_model("mobileone_s0", pretrained=False))
    assert type(model).__name__ == "ByobNet"
    assert module_name(model) == "mobileone_s0"
    assert module_name(model, "my-net") == "my-net"
    assert module_name(nn.Linear(2, 2)) == "Linear"


def test_capture_of_a_model_without_attention_works_with_defaults() -> None:
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    with torch.no_grad(), hooks.capture(cnn) as cap:
        cnn(torch.randn(2, 3, 16, 16))
    assert not cap.attention
    assert set(cap.channels) == {"0", "2"}
    assert cap.channels["2"].moments is not None
    with pytest.raises(hooks.CaptureError, match="no attention module"):
        hooks.capture(cnn, attention="blocks.*")
