"""The capture engine on tiny real timm models, a plain CNN and nn.MultiheadAttention."""

from __future__ import annotations

import pytest
import torch
from support import MHANet, model_input, sequential_cnn, tiny_model
from torch import nn

import hooks

VITS = ["test_vit", "test_vit2", "test_vit3"]


def unfused_probabilities(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """timm's own attention: fused_attn off, probabilities read from attn_drop (softmax out)."""
    found, handles, saved = {}, [], {}
    for name, module in model.named_modules():
        if hasattr(module, "fused_attn") and hasattr(module, "attn_drop"):
            saved[name] = module.fused_attn
            module.fused_attn = False
            handles.append(
                module.attn_drop.register_forward_hook(
                    lambda m, i, o, name=name: found.__setitem__(name, o.detach().clone())
                )
            )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        modules = dict(model.named_modules())
        for name, value in saved.items():
            modules[name].fused_attn = value
    return found


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize("name", VITS)
def test_probabilities_equal_timm_unfused_attention(name: str) -> None:
    model = tiny_model(name)
    x = model_input(model)
    assert all(getattr(m, "fused_attn", True) for m in model.modules())
    seen: dict[str, torch.Tensor] = {}
    with (
        torch.no_grad(),
        hooks.capture(
            model, channels=None, on_attention=lambda n, p: seen.__setitem__(n, p.clone())
        ),
    ):
        model(x)
    reference = unfused_probabilities(model, x)
    assert set(reference) <= set(seen) and len(reference) >= 2
    for layer, expected in reference.items():
        got = seen[layer]
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.sum(-1), torch.ones(got.shape[:-1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "make", [*(lambda n=n: tiny_model(n) for n in [*VITS, "test_convnext", "test_resnet"])]
)
def test_outputs_identical_with_and_without_capture(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    x = model_input(model)
    with torch.no_grad():
        reference = model(x)
        opts = hooks.CaptureOptions(
            attention="*" if hooks.find_attention(model) else None, keep_maps=2
        )
        with hooks.capture(model, opts) as cap:
            captured = model(x)
    assert torch.equal(reference, captured)
    assert cap.images == 2
    assert cap.channels and all(r.moments is not None for r in cap.channels.values())


@pytest.mark.parametrize("name", VITS)
def test_inexact_outputs_compute_attention_once_and_equal_the_unfused_model(name: str) -> None:
    """``exact_outputs=False`` answers the fused call with ``probs @ v``: the outputs are
    timm's unfused computation (to float32 rounding) and the kernel is not called; with
    autograd on, the kernel runs as with ``exact_outputs=True``."""
    model = tiny_model(name)
    x = model_input(model)
    calls: list[int] = []
    real = hooks._taps._SDPA

    class Counting(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func is real:
                calls.append(1)
            return func(*args, **(kwargs or {}))

    opts = hooks.CaptureOptions(channels=None, keep_maps=2, exact_outputs=False)
    with torch.no_grad():
        fused = model(x)
        with hooks.capture(model, opts) as cap, Counting():
            cheap = model(x)
    blocks = len(cap.attention)
    assert blocks >= 2 and calls == []  # the mode below ours never sees the kernel call
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    with torch.no_grad():
        unfused = model(x)
    torch.testing.assert_close(cheap, unfused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cheap, fused, atol=1e-5, rtol=1e-5)
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = True
    with hooks.capture(model, opts), Counting():
        exact = model(x)  # autograd on: outputs must carry the kernel's gradient
    assert len(calls) == blocks
    assert torch.equal(exact.detach(), fused)


def test_sequential_cnn_channels_equal_numpy_covariance() -> None:
    model = sequential_cnn()
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    model = model.double()
    with torch.no_grad(), hooks.capture(model, attention=None, positions=None) as cap:
        out = model(x)
    assert set(cap.channels) == {"0", "3"}
    with torch.no_grad():
        act = model[0](x)  # [3, 8, 12, 12]
    rows = act.movedim(1, -1).reshape(-1, 8).numpy()
    import numpy as np

    np.testing.assert_allclose(cap.channels["0"].moments.covariance(), np.cov(rows.T), atol=1e-10)
    assert out.shape == (3, 4)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_probabilities_and_outputs(batch_first: bool) -> None:
    torch.manual_seed(0)
    model = MHANet(batch_first=batch_first).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference = model(x)
        tokens = model.embed(x).flatten(2).transpose(1, 2)
        if not batch_first:
            tokens = tokens.transpose(0, 1)
        _, expected = model.attn(
            tokens, tokens, tokens, need_weights=True, average_attn_weights=False
        )
        with hooks.capture(model, keep_maps=2, positions=None) as cap:
            captured = model(x)
    torch.testing.assert_close(captured, reference, atol=1e-6, rtol=1e-5)
    record = cap.attention["attn"]
    maps = torch.from_numpy(record.maps_array()).float()
    assert maps.shape == (2, 4, 16, 16)
    torch.testing.assert_close(maps, expected, atol=1e-3, rtol=0)  # float16 storage
    assert record.geometry.kind == "unknown"
    assert record.moments is not None and record.moments.count == 2 * 16


def test_multihead_attention_caller_choice_restored() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    q = torch.randn(1, 5, 8)
    with torch.no_grad(), hooks.capture(mha, channels=None):
        _, weights = mha(q, q, q, need_weights=False)
        _, averaged = mha(q, q, q)
    assert weights is None
    assert averaged is not None and averaged.shape == (1, 5, 5)


def test_no_hook_left_and_fused_restored_after_success_and_exception() -> None:
    model = tiny_model("test_vit")
    x = model_input(model)
    before = hook_count(model)
    fused = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    with torch.no_grad(), hooks.capture(model):
        model(x)
    assert hook_count(model) == before

    class Boom(RuntimeError):
        pass

    def explode(module: nn.Module, args: tuple) -> None:
        raise Boom("inside the forward")

    # Raise inside block 1's attention, while the capture's torch-function mode is open.
    handle = model.blocks[1].attn.proj.register_forward_pre_hook(explode)
    try:
        with pytest.raises(Boom), torch.no_grad(), hooks.capture(model):
            model(x)
    finally:
        handle.remove()
    assert hook_count(model) == before
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == fused
    assert torch._C._len_torch_function_stack() == 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


def test_selection_error_lists_nearest_names() -> None:
    model = tiny_model("test_vit")
    with pytest.raises(hooks.SelectionError, match=r"blocks\.0\.attn"):
        hooks.capture(model, attention="block.0.attn")
    with pytest.raises(hooks.SelectionError, match="nearest"):
        hooks.capture(model, attention="blocks.*.attn", channels="blocks.*.mlp.fc9")


def test_geometry_of_vits_as_models_define_it() -> None:
    expectations = {
        "test_vit": (1, (10, 10), (16.0, 16.0)),  # class token
        "test_vit2": (1, (10, 10), (16.0, 16.0)),  # one register token, no class token
        "deit_small_patch16_224": (1, (14, 14), (16.0, 16.0)),
    }
    for name, (prefix, grid, stride) in expectations.items():
        model = tiny_model(name)
        cap = hooks.capture(model, channels=None)
        geometry = cap.attention["blocks.0.attn"].geometry
        assert (geometry.kind, geometry.prefix, geometry.grid, geometry.stride) == (
            "global",
            prefix,
            grid,
            stride,
        ), name
        assert geometry.prefix == model.num_prefix_tokens
    v2 = tiny_model("test_vit2")
    assert v2.cls_token is None and v2.reg_token.shape[1] == 1
    v3 = tiny_model("test_vit3")
    assert hooks.capture(v3, channels=None).attention["attn_pool"].geometry.kind == "unknown"


def test_geometry_mismatch_at_runtime_becomes_unknown() -> None:
    model = tiny_model("test_vit")
    wrong = hooks.TokenGeometry(kind="global", prefix=0, grid=(10, 10), stride=(16.0, 16.0))
    with torch.no_grad(), hooks.capture(model, geometry={"blocks.0.*": wrong}) as cap:
        model(model_input(model))
    assert cap.attention["blocks.0.attn"].geometry.kind == "unknown"
    assert "101 query tokens" in cap.attention["blocks.0.attn"].geometry.reason
    assert cap.attention["blocks.1.attn"].geometry.kind == "global"


def test_first_k_maps_only_and_summaries_per_image() -> None:
    model = tiny_model("test_vit")
    x = model_input(model, batch=3)
    calls = []

    def max_prob(probs: torch.Tensor, geometry: hooks.TokenGeometry) -> torch.Tensor:
        calls.append(geometry.kind)
        return probs.amax(dim=(-1, -2))

    with torch.no_grad(), hooks.capture(model, keep_maps=4, summaries={"max": max_prob}) as cap:
        model(x)
        model(x)
    record = cap.attention["blocks.0.attn"]
    assert record.maps_array().shape == (4, record.heads, 101, 101)
    assert record.summary("max").shape == (6, record.heads)
    assert record.images == 6 and set(calls) == {"global"}


def test_head_gates_ones_change_nothing_and_zero_removes_a_head() -> None:
    model = tiny_model("test_vit")
    x = model_input(model)
    with torch.no_grad():
        reference = model(x)
        ones = {"blocks.0.attn": torch.ones(model.blocks[0].attn.num_heads)}
        with hooks.gates(model, heads=ones):
            same = model(x)
    torch.testing.assert_close(same, reference)

    heads = model.blocks[0].attn.num_heads
    width = model.blocks[0].attn.proj.in_features // heads
    gate = torch.ones(heads)
    gate[1] = 0

    def zero_head(module: nn.Module, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., width : 2 * width] = 0
        return (x,)

    handle = model.blocks[0].attn.proj.register_forward_pre_hook(zero_head)
    with torch.no_grad():
        expected = model(x)
    handle.remove()
    with torch.no_grad(), hooks.gates(model, heads={"blocks.0.attn": gate}):
        gated = model(x)
    torch.testing.assert_close(gated, expected)
    assert not torch.allclose(gated, reference)
    assert hook_count(model) == 0


def test_channel_gate_gradient_is_unit_importance() -> None:
    model = sequential_cnn()
    x = torch.randn(2, 3, 8, 8)
    gate = torch.ones(8, requires_grad=True)
    with hooks.gates(model, channels={"0": gate}):
        model(x).sum().backward()
    # |dL/dgate_c| = |Σ z ∂L/∂z| over the channel's activations (METRICS.md §5).
    act = model[0](x).detach().requires_grad_(True)
    rest = nn.Sequential(*list(model)[1:])
    rest(act).sum().backward()
    expected = (act * act.grad).sum(dim=(0, 2, 3))
    torch.testing.assert_close(gate.grad, expected, rtol=1e-5, atol=1e-6)


def test_non_finite_batches_are_counted() -> None:
    model = sequential_cnn()
    x = torch.randn(2, 3, 12, 12)
    spiked = x.clone()
    spiked[1, 0, 5, 7] = float("inf")
    with torch.no_grad(), hooks.capture(model, attention=None) as cap:
        model(x)
        model(torch.full_like(x, float("nan")))
        model(spiked)
    assert cap.channels["0"].nonfinite == 2
    model = tiny_model("test_vit")
    x = model_input(model)
    with torch.no_grad(), hooks.capture(model, channels=None) as cap:
        model(x)
        model(torch.full_like(x, float("nan")))
    assert {r.nonfinite for r in cap.attention.values()} == {1}


def test_conv_mlp_hidden_layer_is_read_after_the_nonlinearity() -> None:
    """ConvNeXt with ``conv_mlp``: fc1/fc2 are 1x1 convolutions. The hidden layer (4x the
    block width) is the site ``mlp.fc2``, read at its input after the GELU: neither fc2's
    output nor fc1's pre-activation output replaces it (design decision 8)."""
    import numpy as np
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_convnext", conv_mlp=True).eval().double()
    name = "stages.0.blocks.0.mlp"
    mlp = dict(model.named_modules())[name]
    sites = hooks.find_channels(model)
    assert sites[f"{name}.fc2"].kind == "mlp" and sites[f"{name}.fc2"].point == "input"
    assert f"{name}.fc1" not in sites
    seen: list[torch.Tensor] = []
    handle = mlp.act.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    x = model_input(model, batch=2).double()
    try:
        with (
            torch.no_grad(),
            hooks.capture(model, attention=None, channels=f"{name}.fc2", positions=None) as cap,
        ):
            model(x)
    finally:
        handle.remove()
    hidden = mlp.fc1.out_channels
    assert hidden == 4 * mlp.fc2.out_channels
    rows = seen[0].movedim(1, -1).reshape(-1, hidden).numpy()
    got = cap.channels[f"{name}.fc2"].moments.covariance()
    assert got.shape == (hidden, hidden)
    np.testing.assert_allclose(got, np.cov(rows.T), atol=1e-8)
