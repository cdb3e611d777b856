"""Analyzers and model passes end to end, against known answers (METRICS.md §1-3, §5).

Planted attention through the public API, the ERF of linear convolution stacks, ERF maps
against direct autograd, gate gradients against true ablation, and pruning curves
against independent weight surgery. The trained-model checks are in
``test_analyzers_trained.py``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import model_input, tiny_model
from torch import nn

import hooks
from inspector import AnalyzeOptions, analyze
from inspector.analyzers import (
    REGISTRY,
    AnalysisInputs,
    EntropyLayer,
    EntropyResult,
    LayerInput,
    PruningInput,
    ResultSchemaError,
)
from inspector.images import model_transform, open_images
from inspector.metrics import erf_axis_std, largest_prunable_fraction, spearman
from inspector.pipeline import erf_layers, erf_pass, importance_pass

UNIFORM_14x14_PX = 116.492227  # METRICS.md §1: uniform over 196 patches of 16 px


def quiet(**fields: Any) -> AnalyzeOptions:
    return AnalyzeOptions(report=False, progress=False, **fields)


# -- 1. planted attention (Cordonnier et al. 2020) -----------------------------------------

GRID, PATCH = 14, 16
# Head h attends to the patch at offset δ_h = (rows, cols); None is uniform over all keys.
OFFSETS: list[tuple[int, int] | None] = [(0, 0), (0, 1), (1, 0), (1, 1), (2, -3), None]
ALPHA = 50.0  # logits −α‖δ − δ_h‖²: the runner-up key is e^-50 behind


def planted_logits() -> torch.Tensor:
    """``[head, query, key]`` logits over a class token and the 14×14 patches."""
    rows, cols = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    position = np.stack([rows.ravel(), cols.ravel()], 1).astype(np.float64)
    delta = position[None, :, :] - position[:, None, :]  # [query, key, 2]: key − query
    tokens = GRID * GRID + 1
    logits = np.zeros((len(OFFSETS), tokens, tokens))
    for h, offset in enumerate(OFFSETS):
        if offset is not None:
            logits[h, 1:, 1:] = -ALPHA * ((delta - np.asarray(offset)) ** 2).sum(-1)
            logits[h, 1:, 0] = -np.inf  # patches ignore the class token
    return torch.tensor(logits, dtype=torch.float32)


class PlantedAttention(nn.Module):
    """Attention whose probabilities are fixed: zero queries and keys plus a float mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("logits", planted_logits())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        v = self.v(x).reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)
        zeros = torch.zeros_like(v)
        out = F.scaled_dot_product_attention(zeros, zeros, v, attn_mask=self.logits)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class PlantedNet(nn.Module):
    """16-px patches of a 224-px image, a class token, one planted attention layer."""

    def __init__(self) -> None:
        super().__init__()
        dim = 4 * len(OFFSETS)
        self.patches = nn.Conv2d(3, dim, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn = PlantedAttention(dim, len(OFFSETS))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], 1)
        return self.head(self.attn(tokens)[:, 0])


def analytic_distance(offset: tuple[int, int]) -> float:
    """Renormalised MAD of a head that attends to the key nearest ``query + offset``.

    Queries with the target patch on the grid send all their mass there; a boundary query
    sends it to the existing key nearest the target (unique for these offsets), which is
    where −α‖δ − δ_h‖² peaks.
    """
    rows, cols = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    position = np.stack([rows.ravel(), cols.ravel()], 1).astype(np.float64)
    target = position + np.asarray(offset)
    squared = ((target[:, None, :] - position[None, :, :]) ** 2).sum(-1)
    nearest = squared.argmin(1)
    assert ((squared == squared.min(1, keepdims=True)).sum(1) == 1).all(), "ties"
    return float(PATCH * np.linalg.norm(position[nearest] - position, axis=1).mean())


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.manual_seed(0)
    geometry = hooks.TokenGeometry(
        kind="global", prefix=1, grid=(GRID, GRID), stride=(PATCH, PATCH)
    )
    options = quiet(
        geometry={"attn": geometry}, analyses=("attention_distance", "attention_entropy")
    )
    return analyze(PlantedNet(), "builtin", out=tmp_path_factory.mktemp("planted"), options=options)


def test_planted_offsets_give_analytic_distances(planted_run: Any) -> None:
    # Closed forms: a right (down) neighbour exists for 13 of 14 columns (rows), the last
    # column falls back to itself; (1, 1) has 13² diagonal queries, 2·13 edge queries that
    # fall back to the straight neighbour and one corner that falls back to itself.
    assert analytic_distance((0, 1)) == pytest.approx(PATCH * 13 / 14, rel=1e-12)
    diagonal = (13**2 * PATCH * math.sqrt(2) + 2 * 13 * PATCH) / GRID**2
    assert analytic_distance((1, 1)) == pytest.approx(diagonal, rel=1e-12)
    layer = planted_run.analysis["attention_distance"]["layers"]["attn"]
    expected = [UNIFORM_14x14_PX if o is None else analytic_distance(o) for o in OFFSETS]
    np.testing.assert_allclose(layer["mean"], expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(layer["std"], 0, atol=1e-4)  # the same for every image
    assert layer["images"] == 9
    assert layer["uniform"] == pytest.approx(UNIFORM_14x14_PX, abs=1e-6)
    # Only the uniform head sends mass (1/197) to the class token: raw = renormalised·196/197.
    np.testing.assert_allclose(layer["prefix_mass"], [0, 0, 0, 0, 0, 1 / 197], atol=1e-6)
    np.testing.assert_allclose(layer["raw_mean"][:-1], expected[:-1], atol=1e-4)
    assert layer["raw_mean"][-1] == pytest.approx(UNIFORM_14x14_PX * 196 / 197, abs=1e-4)


def test_planted_entropy_one_hot_and_uniform(planted_run: Any) -> None:
    layer = planted_run.analysis["attention_entropy"]["layers"]["attn"]
    np.testing.assert_allclose(layer["mean"][:-1], 0, atol=1e-6)
    assert layer["mean"][-1] == pytest.approx(math.log(197), abs=1e-5)  # 5.283204
    assert layer["normalised"][-1] == pytest.approx(1, abs=1e-6)


def test_planted_attention_without_geometry_is_a_note_not_a_guess(tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = quiet(analyses=("attention_distance",), limit=1)
    run = analyze(PlantedNet(), "builtin", out=tmp_path, options=options)
    result = run.analysis["attention_distance"]
    assert "attn" not in result["layers"]
    assert result["notes"]["attn"].startswith("unknown")


def test_dilated_geometry_gets_distances() -> None:
    """MaxViT grid attention (``dilated``): the hook measures it, so the analyzer reports it."""
    geometry = hooks.TokenGeometry(
        kind="dilated", grid=(8, 8), stride=(4, 4), window=(2, 2), dilation=(4, 4)
    )
    queries, keys = geometry.centres()
    distances = np.sqrt(((queries[:, None] - keys[None]) ** 2).sum(-1))
    summaries = {
        name: np.full((3, 2), 10.0) for name in ("distance", "distance_raw", "prefix_mass")
    }
    layer = LayerInput(
        name="grid.attn",
        kind="attention",
        attrs={"geometry": geometry.to_dict(), "heads": 2},
        summaries=summaries,
        distances=distances,
    )
    result = REGISTRY["attention_distance"]().compute(AnalysisInputs({"grid.attn": layer}))
    values = result.layers["grid.attn"]
    np.testing.assert_allclose(values.mean, [10.0, 10.0])
    # 2×2 tokens 16 px apart: 4 self pairs at 0, 8 at 16, 4 at 16√2.
    assert values.uniform == pytest.approx((8 * 16 + 4 * 16 * math.sqrt(2)) / 16)
    assert values.windowed is False


# -- 2. effective receptive field ---------------------------------------------------------


def uniform_conv_stack(n: int, k: int = 3) -> nn.Sequential:
    convs = [nn.Conv2d(3 if i == 0 else 1, 1, k, padding=k // 2, bias=False) for i in range(n)]
    for conv in convs:
        nn.init.constant_(conv.weight, 1 / k**2)
    return nn.Sequential(*convs).eval()


def box_power_mean_distance(n: int, k: int = 3) -> float:
    """Mean distance from the centre of the n-fold convolution of a k×k box, exactly."""
    profile = np.ones(1)
    for _ in range(n):
        profile = np.convolve(profile, np.ones(k) / k)
    offsets = np.arange(profile.size) - profile.size // 2
    weights = profile[:, None] * profile[None, :]
    return float((weights * np.hypot(offsets[:, None], offsets[None, :])).sum())


def test_erf_of_uniform_conv_stack_is_the_box_power(tmp_path: Path) -> None:
    """n linear 3×3 box convolutions: per-axis variance n(k²−1)/12, support 1 + n(k−1)."""
    n, k = 10, 3
    options = quiet(analyses=("receptive_field",), erf_images=2)
    run = analyze(uniform_conv_stack(n, k), "builtin", out=tmp_path, options=options)
    layers = run.analysis["receptive_field"]["layers"]
    assert list(layers) == [str(i) for i in range(n)]
    for i, values in layers.items():
        depth = int(i) + 1
        erf_map, centre = values["map"], values["centre"]
        assert erf_map.shape == (224, 224)
        np.testing.assert_array_equal(centre, [112.0, 112.0])
        std_y, std_x = erf_axis_std(erf_map, centre)
        variance = depth * (k**2 - 1) / 12
        assert std_y**2 == pytest.approx(variance, rel=1e-5)
        assert std_x**2 == pytest.approx(variance, rel=1e-5)
        side = 1 + depth * (k - 1)
        rows, cols = np.nonzero(erf_map)
        low, high = 112 - side // 2, 112 + side // 2
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (low, high, low, high)
        exact = box_power_mean_distance(depth, k)
        assert values["mean_distance"] == pytest.approx(exact, rel=1e-5)
    assert std_y == pytest.approx(2.5820, abs=5e-5)  # METRICS.md §3 for n = 10


def direct_erf(model: nn.Module, x: torch.Tensor, layer: str, select: Any) -> np.ndarray:
    """``mean_images Σ_colour |∂ s/∂x|`` with ``s = select(output of layer)``, by autograd."""
    kept: dict[str, torch.Tensor] = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, out: kept.__setitem__("y", out))
    inputs = x.clone().requires_grad_(True)
    try:
        model(inputs)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(select(kept["y"]).sum(), inputs)
    return grad.abs().sum(1).mean(0).double().numpy()


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_erf_pass_equals_direct_autograd(name: str) -> None:
    model = tiny_model(name)
    x = model_input(model, batch=2)
    height, width = x.shape[-2:]
    geometry: dict[str, hooks.TokenGeometry] = {}
    if hooks.find_attention(model):
        with torch.no_grad(), hooks.capture(model, channels=None) as cap:
            model(x)
        geometry = {n: r.geometry for n, r in cap.attention.items()}
    layers = erf_layers(model, list(geometry), list(hooks.find_channels(model)))
    results, skipped = erf_pass(model, x, layers, geometry, progress=False)
    assert not skipped and list(results) == [n for n, _ in layers] and len(layers) >= 4
    for layer, branch in layers:
        got = results[layer]
        assert got["branch"] == branch
        if name == "test_vit":
            # The centre token from the model's own grid, prefix tokens first.
            rows, cols = model.patch_embed.grid_size
            r, c = rows // 2, cols // 2
            token = model.num_prefix_tokens + r * cols + c
            stride = model.patch_embed.patch_size
            centre = ((r + 0.5) * stride[0] - 0.5, (c + 0.5) * stride[1] - 0.5)
            assert f"token {token} " in got["note"]

            def select(y: torch.Tensor, token: int = token) -> torch.Tensor:
                return y[:, token, :].sum(-1)
        else:
            rows, cols = model_output_grid(model, x, layer)
            r, c = rows // 2, cols // 2
            # timm's ResNets pad every convolution and pool by k // 2: unit r of total
            # stride S is centred on input pixel r·S (erf_pass traces this arithmetic).
            centre = (r * height / rows, c * width / cols)

            def select(y: torch.Tensor, r: int = r, c: int = c) -> torch.Tensor:
                return y[:, :, r, c].sum(-1)

        np.testing.assert_allclose(got["centre"], centre)
        expected = direct_erf(model, x, layer, select)
        assert expected.sum() > 0
        np.testing.assert_allclose(got["map"], expected, rtol=1e-6, atol=1e-6 * expected.max())


def model_output_grid(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[int, int]:
    shapes: list[torch.Size] = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, out: shapes.append(out.shape))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    return int(shapes[0][-2]), int(shapes[0][-1])


def test_erf_pass_reads_a_layer_before_later_in_place_ops() -> None:
    """A ReLU(inplace=True) after the layer rewrites its output (and autograd history)
    silently: the ERF must still be that of the layer's own output."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3, padding=1)
    ).eval()
    x = torch.randn(4, 3, 16, 16)
    results, _ = erf_pass(model, x, [("0", "conv"), ("2", "conv")], {}, progress=False)
    conv = model[0]
    inputs = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(conv(inputs)[:, :, 8, 8].sum(), inputs)
    expected = grad.abs().sum(1).mean(0).double().numpy()
    np.testing.assert_allclose(results["0"]["map"], expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "stride_layers",
    [
        pytest.param((4, 2, 2), id="patchify"),
        pytest.param((2, 2, 2), id="same-padded"),
    ],
)
def test_erf_centre_is_the_centre_of_the_receptive_field(stride_layers: tuple[int, ...]) -> None:
    """Uniform kernels make the ERF symmetric about the unit's true input position."""
    convs = []
    for i, stride in enumerate(stride_layers):
        # Patchify: kernel = stride, no padding; same-padded: 3×3, stride 2, padding 1.
        k, pad = (stride, 0) if stride_layers[0] == 4 else (3, 1)
        conv = nn.Conv2d(3 if i == 0 else 1, 1, k, stride=stride, padding=pad, bias=False)
        nn.init.constant_(conv.weight, 1.0)
        convs.append(conv)
    model = nn.Sequential(*convs).eval()
    x = torch.randn(1, 3, 64, 64)
    results, _ = erf_pass(model, x, [(str(len(convs) - 1), "conv")], {}, progress=False)
    (got,) = results.values()
    erf_map = got["map"]
    ys, xs = np.indices(erf_map.shape)
    centroid = ((erf_map * ys).sum() / erf_map.sum(), (erf_map * xs).sum() / erf_map.sum())
    np.testing.assert_allclose(got["centre"], centroid, atol=1e-6)


# -- 3. gate-gradient importance ----------------------------------------------------------


def builtin_batch(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch ``inspector analyze`` gives its gradient passes (the 9 builtin images)."""
    transform, _ = model_transform(model)
    x, _, labels = next(open_images("builtin", transform).batches(16))
    return x, labels


def head_units(model: nn.Module) -> dict[str, int]:
    return {n: int(m.num_heads) for n, m in hooks.find_attention(model).items()}


def test_gate_gradient_ranks_heads_like_true_ablation() -> None:
    """Spearman(mean |∂L/∂ξ|, mean |ΔL|) over all 12 heads of a near-linear test_vit.

    Scaling every output projection by 0.03 makes each head's share of the residual
    stream small, so L is close to linear in each gate over [0, 1] and first-order Taylor
    gives ΔL_i ≈ −∂L_i/∂ξ per image (asserted: the residual is under 10 % of the gradient
    for every head). Two heads can then swap ranks only if their gradients lie within
    ~20 % (1.1 / 0.9) of each other; an adjacent swap costs 6·2 / (n(n² − 1)) = 0.007 in ρ
    at n = 12, so ρ ≥ 0.9 still allows 14 such swaps while a broken gate (wrong head,
    wrong sample axis, gate not applied) gives ρ near 0. Measured: ρ = 1.0.
    """
    model = tiny_model("test_vit")
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.mul_(0.03)
    x, labels = builtin_batch(model)
    units = head_units(model)
    assert sum(units.values()) == 12
    result = importance_pass(model, x, {"heads": units}, labels, ablate=12)["heads"]
    ablation = result["ablation"]
    gradient, delta = ablation["gradient"], ablation["delta"]
    assert len(gradient) == 12 and (gradient > 0).all()
    relative = np.abs(delta - gradient) / gradient
    rho = spearman(gradient, delta)
    print(f"heads of scaled test_vit: Spearman {rho:.4f}, Taylor residual ≤ {relative.max():.3f}")
    assert relative.max() < 0.1
    assert rho >= 0.9
    # The ablation rows are the pass's own gate gradients, unit by unit.
    # over the images the ablations ran on (the first 4 by default).
    seen = ablation["images"]
    assert seen == 4 < len(x)
    for path, unit, value in zip(ablation["layers"], ablation["units"], gradient, strict=True):
        assert value == pytest.approx(result["raw"][path][:seen, unit].mean(), rel=1e-12)
    # Units are picked at evenly spaced ranks of their gradient: here all 12, in order.
    assert (np.diff(gradient) >= 0).all()


def test_per_sample_gate_gradients_equal_activation_times_gradient() -> None:
    """|∂L_i/∂ξ_{i,u}| = |Σ z ∂L_i/∂z| over unit u's activations of image i (METRICS.md §5)."""
    model = tiny_model("test_vit")
    x = model_input(model, batch=3)
    heads = head_units(model)
    channels = {"patch_embed.proj": 64, "blocks.0.mlp.fc2": 192, "blocks.5.mlp.fc2": 192}
    result = importance_pass(model, x, {"heads": heads, "channels": channels}, ablate=0)
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, out: Any = None) -> None:
            z = args[0] if out is None else out
            z.retain_grad()
            seen[name] = z

        return hook

    handles = [modules[f"{p}.proj"].register_forward_pre_hook(keep(p)) for p in heads]
    handles += [
        modules[p].register_forward_hook(keep(p))
        if p == "patch_embed.proj"
        else modules[p].register_forward_pre_hook(keep(p))
        for p in channels
    ]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    F.cross_entropy(logits, logits.argmax(-1).detach(), reduction="sum").backward()
    for path, count in heads.items():
        z = seen[path]
        product = (z * z.grad).reshape(*z.shape[:-1], count, -1)  # [sample, token, head, dim]
        expected = product.sum((1, 3)).abs().detach().numpy()
        np.testing.assert_allclose(result["heads"]["raw"][path], expected, rtol=1e-4, atol=1e-9)
    for path in channels:
        z = seen[path]
        product = z * z.grad
        axes = (2, 3) if z.dim() == 4 else (1,)  # conv [sample, channel, y, x]; mlp [s, t, c]
        expected = product.sum(axes).abs().detach().numpy()
        assert result["channels"]["raw"][path].shape == expected.shape
        np.testing.assert_allclose(
            result["channels"]["raw"][path], expected, rtol=1e-4, atol=1e-6 * expected.max()
        )


# -- 4. pruning curve ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Any]:
    model = tiny_model("test_vit")
    run = analyze(
        model,
        "builtin",
        out=tmp_path_factory.mktemp("pruning"),
        options=quiet(analyses=("importance", "pruning_curve")),
    )
    return model, run


def remove_units(model: nn.Module, units: list[tuple[str, int]], kind: str) -> nn.Module:
    """A copy of ``model`` with ``units`` cut out of its weights (no hooks, no gates)."""
    surgery = copy.deepcopy(model)
    modules = dict(surgery.named_modules())
    with torch.no_grad():
        for path, unit in units:
            module = modules[path]
            if kind == "heads":  # the head's context columns of the output projection
                width = module.proj.in_features // module.num_heads
                module.proj.weight[:, unit * width : (unit + 1) * width] = 0
            elif isinstance(module, nn.Conv2d):  # a conv channel: its output map
                module.weight[unit] = 0
                if module.bias is not None:
                    module.bias[unit] = 0
            else:  # an MLP hidden unit, read at fc2's input
                module.weight[:, unit] = 0
    return surgery


def agreement_and_kl(model: nn.Module, pruned: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        full = model(x).log_softmax(-1)
        cut = pruned(x).log_softmax(-1)
    agreement = float((full.argmax(-1) == cut.argmax(-1)).float().mean())
    return agreement, float((full.exp() * (full - cut)).sum(-1).mean())


@pytest.mark.parametrize("kind", ["heads", "channels"])
def test_pruning_curve_matches_weight_surgery(pruned: tuple[nn.Module, Any], kind: str) -> None:
    model, run = pruned
    x, _ = builtin_batch(model)
    curve = run.analysis["pruning_curve"]["summary"][kind]
    # 9 builtin images: importance on the first 5, the curve on the held-out 4.
    assert (curve["importance_images"], curve["images"]) == (5, 4)
    x = x[5:]
    importance = run.analysis["importance"]["layers"]
    ranked = sorted(  # the default order: raw importance
        (float(v), path, unit)
        for path, values in importance.items()
        if values["kind"] == kind
        for unit, v in enumerate(values["raw"])
    )
    order = [(path, unit) for _, path, unit in ranked]
    expected_units = 12 if kind == "heads" else 64 + 6 * 192  # patch_embed.proj + 6 fc2
    assert curve["units"] == len(order) == expected_units
    np.testing.assert_allclose(curve["fractions"], np.linspace(0, 1, 11))
    # Nothing removed: the model itself.
    assert curve["agreement"][0] == 1.0
    assert abs(curve["kl"][0]) < 1e-7
    # 10 %, half, and every unit removed: the same as cutting them out of the weights.
    for step in (1, 5, 10):
        removed = order[: round(step / 10 * len(order))]
        agreement, kl = agreement_and_kl(model, remove_units(model, removed, kind), x)
        assert curve["agreement"][step] == pytest.approx(agreement, abs=1e-6)
        assert curve["kl"][step] == pytest.approx(kl, rel=1e-4, abs=1e-7)
    assert curve["kl"][10] > curve["kl"][1] > 0
    # The summary reads the interval: with 4 held-out images even 4 of 4 has a Wilson
    # lower bound of 4 / (4 + 1.96²) = 0.510 < 99 %, so nothing counts as removable.
    assert curve["agreement_low"][0] == pytest.approx(4 / (4 + 1.959964**2), rel=1e-5)
    assert curve["prunable_fraction"] == 0.0


def test_prunable_fraction_stops_at_the_first_step_below_threshold() -> None:
    fractions = np.linspace(0, 1, 11)
    agreement = np.array([1, 1, 0.995, 0.98, 1, 1, 1, 0.5, 0.2, 0.1, 0.0])
    curve = PruningInput(fractions, agreement, np.zeros(11), units=10)
    result = REGISTRY["pruning_curve"]().compute(AnalysisInputs({}, pruning={"heads": curve}))
    assert result.summary["heads"].prunable_fraction == pytest.approx(0.2)  # no image count
    assert largest_prunable_fraction(fractions, np.ones(11)) == 1.0
    assert largest_prunable_fraction(fractions, np.r_[0.9, np.ones(10)]) == 0.0


def test_erf_centre_of_a_token_layer_follows_its_geometry_origin() -> None:
    """The ERF centre of a token layer is the centre token's pixel position as the
    geometry places it (the origin of MViTv2/LeViT-like grids included), in the map's
    pixel-index coordinates; with the default origin, the patch convention."""
    from inspector.pipeline._gradients import _selector

    grid = hooks.TokenGeometry(kind="global", prefix=1, grid=(4, 6), stride=(16.0, 16.0))
    pick, centre, note = _selector((2, 25, 8), (64, 96), grid)
    assert centre == pytest.approx(((2 + 0.5) * 16 - 0.5, (3 + 0.5) * 16 - 0.5))
    assert "token 16" in note  # 1 prefix + row 2 · 6 columns + column 3
    y = torch.zeros(2, 25, 8)
    y[:, 16] = 1.0
    assert torch.equal(pick(y), torch.full((2,), 8.0))
    shifted = hooks.TokenGeometry(
        kind="global", prefix=1, grid=(4, 6), stride=(16.0, 16.0), origin=(3.0, 5.0)
    )
    _, centre, _ = _selector((2, 25, 8), (64, 96), shifted)
    assert centre == pytest.approx((3.0 + 2 * 16 - 0.5, 5.0 + 3 * 16 - 0.5))


def test_result_records_refuse_trees_that_do_not_match() -> None:
    layer = {"mean": np.ones(2), "std": np.ones(2), "normalised": np.ones(2)}
    assert EntropyLayer.from_tree(layer) == EntropyLayer(
        mean=np.ones(2), std=np.ones(2), normalised=np.ones(2)
    )
    for tree, message in (
        ({k: v for k, v in layer.items() if k != "std"}, "layers/a/std is missing"),
        ({**layer, "extra": 1.0}, "undeclared 'extra'"),
        ({**layer, "mean": "text"}, "expected an array"),
    ):
        with pytest.raises(ResultSchemaError, match=message):
            EntropyResult.from_tree({"layers": {"a": tree}}, {}, "1")
    with pytest.raises(ResultSchemaError, match="summary: attention_entropy stores none"):
        EntropyResult.from_tree({"summary": {"heads": {}}}, {}, "1")


def test_an_analyzer_must_name_its_result() -> None:
    registry = type(REGISTRY)()

    class Mislabelled:
        name = "entropy_again"
        version = "1"
        needs = frozenset({"summaries"})
        result = EntropyResult  # whose analyzer is attention_entropy

    with pytest.raises(ValueError, match="must name its result dataclass"):
        registry.register(Mislabelled)
    assert "entropy_again" not in registry
