"""Models a user brings: re-parameterized weight files, modules passed to the API, models
without attention."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from support import SHARED as SHARED_ROOT
from timm.utils.model import reparameterize_model
from torch import nn

import hooks
from inspector._errors import WeightsError
from inspector._models import create_model
from inspector.pipeline._resolve import module_name

SHARED = SHARED_ROOT / "weights"


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
    with pytest.raises(WeightsError, match="does not fit model 'mobileone_s0'"):
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


class _Softmax(nn.Module):
    """Single-head attention without any attribute discovery reads."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 8, 4, stride=4)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.mix(x).flatten(2).transpose(1, 2)  # [batch, token, channel]
        attn = (t @ t.transpose(1, 2)).softmax(dim=-1)
        return self.head((attn @ t).mean(1))


def test_softmax_modules_finds_what_discovery_misses() -> None:
    model = _Softmax()
    assert not hooks.find_attention(model)
    found = hooks.softmax_modules(model, torch.randn(1, 3, 16, 16))
    assert found == {}  # the root module has no path of its own
    nested = nn.Sequential(model)
    found = hooks.softmax_modules(nested, torch.randn(1, 3, 16, 16))
    assert found == {"0": "softmax over keys"}
    assert not hooks.softmax_modules(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.randn(1, 3, 8, 8))
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_a_run_that_misses_attention_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from inspector import analyze

    model = nn.Sequential(_Softmax())
    with caplog.at_level("WARNING", logger="inspector"):
        analyze(
            model, "builtin", out=tmp_path, limit=1, report=False, progress=False,
            analyses=("channel_redundancy",),
        )  # fmt: skip
    assert "no attention module recognised, but 1 module(s) compute attention" in caplog.text
    assert "softmax over keys: 0" in caplog.text


@pytest.mark.parametrize(
    ("arch", "kwargs", "kind"),
    [
        (
            "hiera_tiny_224",
            dict(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1)),
            "MaskUnitAttention",
        ),
        ("shvit_s1", dict(depth=(1, 1, 1)), "SHSA"),
        ("iformer_t", {}, "SHMA"),
    ],
)
def test_attention_found_in_hiera_shvit_iformer(arch: str, kwargs: dict, kind: str) -> None:
    """Found by their head count (``heads``, single-head classes), captured with valid rows
    and unchanged outputs; geometry is an explicit unknown with the reason."""
    torch.manual_seed(0)
    try:
        model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    except TypeError:
        model = timm.create_model(arch, pretrained=False).eval()
    attention = hooks.find_attention(model)
    assert attention and {type(m).__name__ for m in attention.values()} == {kind}
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        plain = model(x)
        seen: dict[str, torch.Tensor] = {}
        with hooks.capture(model, on_attention=lambda n, p: seen.setdefault(n, p)) as cap:
            out = model(x)
    assert torch.equal(out, plain)
    assert set(seen) == set(attention)
    for name, probs in seen.items():
        assert probs.shape[1] == hooks.head_count(attention[name])
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
        record = cap.attention[name]
        assert record.geometry.known or record.geometry.reason


def test_transformers_vit_sdpa_probabilities_equal_eager_output_attentions() -> None:
    """SDPA stays on (outputs unchanged); the captured maps equal what the same model in
    eager mode returns with ``output_attentions=True`` (an independent computation)."""
    transformers = pytest.importorskip("transformers", reason="the transformers test extra")
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.ViTModel(config).eval()
    assert model.config._attn_implementation == "sdpa"
    x = torch.randn(2, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        plain = model(x).last_hidden_state
        with hooks.capture(model, on_attention=lambda n, p: seen.setdefault(n, p)) as cap:
            out = model(x).last_hidden_state
        model.config._attn_implementation = "eager"
        eager = model(x, output_attentions=True).attentions
    assert torch.equal(out, plain)
    assert list(seen) == ["layers.0.attention", "layers.1.attention"]
    for probs, expected in zip(seen.values(), eager, strict=True):
        torch.testing.assert_close(probs, expected, atol=1e-6, rtol=0)
    geometry = cap.attention["layers.0.attention"].geometry
    assert (geometry.kind, geometry.prefix, geometry.grid, geometry.stride) == (
        "global", 1, (4, 4), (8.0, 8.0),
    )  # fmt: skip


@pytest.mark.parametrize("patch", [16, 32])  # vit_b_16, vit_b_32: the same class
def test_torchvision_vit_probabilities_geometry_and_outputs(patch: int) -> None:
    """torchvision's ``VisionTransformer`` (``vit_b_16`` / ``vit_b_32`` at tiny width, random
    init) captured through the API: its ``nn.MultiheadAttention`` keeps the fused path
    (outputs bit-identical), the maps equal the module's own per-head weights
    (``need_weights=True, average_attn_weights=False`` on the same input), the geometry is
    inferred: class token + the ``image_size / patch_size`` grid at ``patch_size`` px."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=96, patch_size=patch, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
    ).eval()
    x = torch.randn(2, 3, 96, 96)
    inputs: dict[str, torch.Tensor] = {}
    attention = hooks.find_attention(model)
    assert list(attention) == [
        "encoder.layers.encoder_layer_0.self_attention",
        "encoder.layers.encoder_layer_1.self_attention",
    ]

    def keep(name: str) -> Callable[[nn.Module, tuple], None]:
        def hook(module: nn.Module, args: tuple) -> None:
            inputs.setdefault(name, args[0].detach())

        return hook

    handles = [module.register_forward_pre_hook(keep(name)) for name, module in attention.items()]
    seen: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        plain = model(x)
        with hooks.capture(model, on_attention=lambda n, p: seen.setdefault(n, p)) as cap:
            out = model(x)
        for handle in handles:
            handle.remove()
        expected = {
            name: module(inputs[name], inputs[name], inputs[name], need_weights=True,
                         average_attn_weights=False)[1]
            for name, module in attention.items()
        }  # fmt: skip
    assert torch.equal(out, plain), "the capture changed the outputs"
    side = 96 // patch
    for name in attention:
        torch.testing.assert_close(seen[name], expected[name], atol=1e-6, rtol=0)
        geometry = cap.attention[name].geometry
        assert (geometry.kind, geometry.prefix, geometry.grid, geometry.stride) == (
            "global", 1, (side, side), (float(patch), float(patch)),
        )  # fmt: skip
    assert seen[name].shape == (2, 2, 1 + side * side, 1 + side * side)


def _needs_64px() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 8, stride=8), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))


def test_a_model_rejecting_the_input_size_is_one_line_naming_the_option(tmp_path: Path) -> None:
    from inspector import analyze
    from inspector._errors import InspectorError

    with pytest.raises(InspectorError) as caught:
        analyze(_needs_64px(), "builtin", out=tmp_path, limit=1, report=False, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert "rejected its input of 224×224 px" in message and "--input-size" in message


def test_input_size_mean_std_interpolation_reach_the_images(tmp_path: Path) -> None:
    from inspector import analyze

    run = analyze(
        _needs_64px(), "builtin", out=tmp_path, limit=2, report=False, progress=False,
        analyses=("channel_redundancy",), input_size=64, mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25), interpolation="bicubic", name="tiny-64",
    )  # fmt: skip
    assert run.meta["model"] == "tiny-64"
    config = run.meta["data_config"]
    assert list(config["input_size"]) == [3, 64, 64] and list(run.meta["input_size"]) == [3, 64, 64]
    assert list(config["mean"]) == [0.5] * 3 and list(config["std"]) == [0.25] * 3
    assert config["interpolation"] == "bicubic"
    assert len(run.sample_ids) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input-size", "big"], "--input-size 'big' must be N or HEIGHTxWIDTH"),
        (["--input-size", "4"], "must be one or two whole numbers of pixels >= 8"),
        (["--mean", "0.5,0.5"], "must be three numbers"),
        (["--std", "1,0,1"], "--std (1.0, 0.0, 1.0) must be positive"),
    ],
)
def test_bad_input_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from inspector.cli import main

    assert main(["analyze", "test_vit", *argv]) == 2
    assert message in capsys.readouterr().err


class _PlainMlp(nn.Module):
    """A transformer-ish model whose MLP is ``nn.Sequential`` (no fc1/fc2 names)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 16, stride=16)
        self.mlp = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head((t + self.mlp(t)).mean(1))


def test_layers_glob_selects_any_linear_as_a_channel_layer(tmp_path: Path) -> None:
    from inspector import analyze

    sites = hooks.find_channels(_PlainMlp())
    assert sites["mlp.0"].kind == "linear" and sites["mlp.0"].channel_axis == -1
    run = analyze(
        _PlainMlp(), "builtin", out=tmp_path, limit=2, report=False, progress=False,
        analyses=("channel_redundancy",), layers=("embed", "mlp.0"), input_size=64,
    )  # fmt: skip
    assert {layer.name for layer in run.channel_layers()} == {"embed", "mlp.0"}
    assert run.layers["mlp.0"].attrs["channels"] == 32
    default = hooks.capture(_PlainMlp())
    assert set(default.channels) == {"embed"}  # auto: convolutions and MLP hidden layers only


class _MhaViT(nn.Module):
    """A custom ViT on ``nn.MultiheadAttention``: class token + 4×4 patches of 16 px."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 16, stride=16)
        self.cls = nn.Parameter(torch.zeros(1, 1, 16))
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        return self.head(self.attn(t, t, t, need_weights=False)[0][:, 0])


def test_attention_without_geometry_warns_with_the_exact_geometry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from inspector import analyze

    with caplog.at_level("WARNING", logger="inspector"):
        analyze(
            _MhaViT(), "builtin", out=tmp_path / "a", limit=1, report=False, progress=False,
            analyses=("attention_distance",), input_size=64,
        )  # fmt: skip
    expected = (
        "pass geometry={'attn': hooks.TokenGeometry(kind=\"global\", prefix=1, grid=(4, 4), "
        "stride=(16.0, 16.0))}"
    )
    assert "attention attn has no token geometry" in caplog.text and expected in caplog.text
    geometry = {
        "attn": hooks.TokenGeometry(kind="global", prefix=1, grid=(4, 4), stride=(16.0, 16.0))
    }
    caplog.clear()
    with caplog.at_level("WARNING", logger="inspector"):
        run = analyze(
            _MhaViT(), "builtin", out=tmp_path / "b", limit=1, report=False, progress=False,
            analyses=("attention_distance",), input_size=64, geometry=geometry,
        )  # fmt: skip
    assert "no token geometry" not in caplog.text
    assert run.result("attention_distance").layers["attn"].mean.shape == (2,)
