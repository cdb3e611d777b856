"""Every entry point that registers hooks leaves none behind, after success and after an
exception inside the forward; the capture state merges and restores exactly; structure
queries (blocks, output projection, head width) answer from the module tree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import pytest
import torch
from support import model_input, tiny_model
from torch import nn

import hooks
from inspector import AnalyzeOptions
from inspector.pipeline import capture_options, erf_layers, erf_pass, importance_pass


def hook_state(model: nn.Module) -> tuple[int, ...]:
    """Every kind of hook registered on any module, and the torch-function mode stack."""
    counts = [0] * 5
    for m in model.modules():
        counts[0] += len(m._forward_hooks)
        counts[1] += len(m._forward_pre_hooks)
        counts[2] += len(m._backward_hooks) + len(m._backward_pre_hooks)
        counts[3] += len(m._forward_hooks_always_called) + len(m._forward_hooks_with_kwargs)
    counts[4] = torch._C._len_torch_function_stack()
    return tuple(counts)


class Boom(RuntimeError):
    pass


@contextmanager
def explode_in_block_1(model: nn.Module) -> Iterator[None]:
    """Raise inside block 1's attention projection while the model runs."""

    def explode(module: nn.Module, args: tuple) -> None:
        raise Boom("inside the forward")

    handle = model.blocks[1].attn.proj.register_forward_pre_hook(explode)
    try:
        yield
    finally:
        handle.remove()


def _capture(model: nn.Module) -> AbstractContextManager[object]:
    return hooks.capture(model)


def _gates(model: nn.Module) -> AbstractContextManager[object]:
    return hooks.gates(
        model,
        heads={"blocks.0.attn": torch.ones(model.blocks[0].attn.num_heads)},
        channels={"blocks.1.mlp.fc2": torch.ones(model.blocks[1].mlp.fc2.in_features)},
    )


def _probe(model: nn.Module) -> AbstractContextManager[object]:
    return hooks.probe(model, ["blocks.0", "blocks.1.attn"])


ENTRY_POINTS: dict[str, Callable[[nn.Module], AbstractContextManager[object]]] = {
    "capture": _capture,
    "gates": _gates,
    "probe": _probe,
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_no_hook_left_after_success_and_exception(entry: str) -> None:
    model = tiny_model("test_vit")
    x = model_input(model)
    before = hook_state(model)
    with torch.no_grad(), ENTRY_POINTS[entry](model):
        assert hook_state(model) != before  # it did register something
        model(x)
    assert hook_state(model) == before
    with (
        pytest.raises(Boom),
        explode_in_block_1(model),
        torch.no_grad(),
        ENTRY_POINTS[entry](model),
    ):
        model(x)
    assert hook_state(model) == before


@pytest.mark.parametrize("fails", [False, True])
def test_model_passes_leave_no_hook(fails: bool) -> None:
    """The ERF pass (probe, pixel maps) and the importance pass (gates)."""
    model = tiny_model("test_vit")
    x = model_input(model)
    before = hook_state(model)
    attention = hooks.find_attention(model)
    geometry = {n: hooks.infer_geometry(model, n, m) for n, m in attention.items()}
    layers = erf_layers(model, list(attention), [])
    units = {"heads": hooks.gateable_heads(model)}
    if fails:
        with explode_in_block_1(model):
            with pytest.raises(Boom):
                erf_pass(model, x, layers, geometry, progress=False)
            with pytest.raises(Boom):
                importance_pass(model, x, units)
    else:
        found, _ = erf_pass(model, x, layers, geometry, progress=False)
        assert set(found) == {n for n, _ in layers}
        importance_pass(model, x, units)
    assert hook_state(model) == before


def test_probe_keeps_the_first_output_and_sees_in_place_changes() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    x = torch.randn(2, 3)
    with hooks.probe(model, ["0", "1"]) as kept:
        out = model(x)
    assert torch.equal(kept.outputs["1"], out)
    assert kept.modified("0") and not kept.modified("1")  # ReLU rewrote Linear's output
    with pytest.raises(hooks.SelectionError, match="nearest"), hooks.probe(model, ["2"]):
        pass


# -- the capture state ----------------------------------------------------------------------


def _captured(model: nn.Module, x: torch.Tensor, keep: int = 3) -> hooks.Capture:
    options = capture_options(model, AnalyzeOptions(keep_maps=keep, positions=1000))
    with torch.no_grad(), hooks.capture(model, options) as cap:
        for part in x.split(2):
            model(part)
    return cap


def _assert_states_equal(a: hooks.CaptureState, b: hooks.CaptureState, rtol: float = 1e-9) -> None:
    assert list(a.layers) == list(b.layers)
    for name in a.layers:
        left, right = a.layers[name].to_tree(), b.layers[name].to_tree()
        assert left["attrs"] == right["attrs"], name
        for part in ("summaries", "moments", "groups"):
            for key, value in (left.get(part) or {}).items():
                scale = float(np.max(np.abs(value), initial=0.0)) or 1.0
                np.testing.assert_allclose(value, right[part][key], rtol=0, atol=rtol * scale)
        if left.get("maps") is not None:
            np.testing.assert_array_equal(left["maps"], right["maps"])


def test_merged_halves_equal_one_capture() -> None:
    """Two captures of halves of the images merge into the state of one capture of all
    (the ranks of a multi-process run; batches of 2 in both, so forwards are identical)."""
    model = tiny_model("test_vit")
    x = model_input(model, batch=6)
    whole = _captured(model, x).state()
    first, second = _captured(model, x[:4]).state(), _captured(model, x[4:]).state()
    merged = first.merge(second, keep_maps=3)
    # Chan's merge adds the same float32 rows in another order: equal to float32 rounding
    _assert_states_equal(merged, whole, rtol=1e-5)
    assert merged.layers["blocks.0.attn"].maps.shape[0] == 3
    assert merged.images() == 6


def test_state_round_trips_and_restores_into_a_capture_that_continues() -> None:
    model = tiny_model("test_vit")
    x = model_input(model, batch=6)
    whole = _captured(model, x).state()
    half = _captured(model, x[:4]).state()
    again = hooks.CaptureState.from_layers(half.layers.values())  # as a run file gives it
    _assert_states_equal(again, half)
    options = capture_options(model, AnalyzeOptions(keep_maps=3, positions=1000))
    cap = hooks.capture(model, options)
    cap.restore(again)
    with torch.no_grad(), cap:
        model(x[4:])
    _assert_states_equal(cap.state(), whole)


# -- structure queries ---------------------------------------------------------------------


class OProjAttention(nn.Module):
    """Attention whose output projection is named ``o_proj`` (Llama-style naming)."""

    def __init__(self, dim: int = 48, heads: int = 4) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, c))


class OProjBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = OProjAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x)


def test_structure_queries_answer_from_the_module_tree() -> None:
    model = nn.Sequential(OProjBlock(), OProjBlock())
    assert hooks.find_blocks(model) == ["0", "1"]
    assert hooks.output_projection(model[0].attn) is model[0].attn.o_proj
    assert hooks.head_width(model[0].attn) == 12
    assert hooks.gateable_heads(model) == {"0.attn": 4, "1.attn": 4}
    # channel groups as wide as the heads (like for like), also with ``o_proj``
    assert capture_options(model, AnalyzeOptions()).group_size == 12
    vit = tiny_model("test_vit")
    assert hooks.find_blocks(vit) == [f"blocks.{i}" for i in range(len(vit.blocks))]
    mha = nn.MultiheadAttention(8, 2)
    assert hooks.head_width(mha) == 4 and hooks.gateable_heads(nn.Sequential(mha)) == {}


@pytest.mark.filterwarnings("error::UserWarning")  # no silenced error in its own hooks
@pytest.mark.parametrize("fails", [False, True])
def test_softmax_probe_leaves_no_hook(fails: bool) -> None:
    """``hooks.softmax_modules`` (the missed-attention check) is an entry point too."""
    model = tiny_model("test_vit")
    x = model_input(model)
    before = hook_state(model)
    if fails:
        with explode_in_block_1(model), pytest.raises(Boom):
            hooks.softmax_modules(model, x)
    else:
        assert "blocks.0.attn" in hooks.softmax_modules(model, x)
    assert hook_state(model) == before
