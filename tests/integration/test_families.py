"""Integration tier: tiny models of every attention family (``-m families`` selects it).

The models are the tiny timm configs each geometry rule of ``hooks.geometry.RULES``
declares (a rule without one fails ``test_every_rule_declares_a_tiny_config``). Each
(ViT with class / distillation / register tokens, BEiT, EVA with rope, Swin v1 / v2 /
v2-cr, PVT v2 incl. linear, Twins, MaxViT, CoAtNet, MViTv2 with and without class token,
LeViT, CaiT, ConViT, XCiT, DaViT, TinyViT, EfficientFormer and V2, EfficientViT-MSRA,
MobileViT, NesT, PiT, TNT, CrossViT, Visformer, SAM2 Hiera, SAM ViT, GCViT, VOLO,
Next-ViT, EdgeNeXt, CSATv2, LowFormer, CPUBone, MobileNetV4 hybrid) checks that
the captured probabilities are probabilities (rows sum to 1), equal the model's own
unfused computation where it has one (``fused_attn=False``, ``attn_drop`` input) on the
fused and the unfused path, leave the outputs bit-identical, that the inferred geometry
fits the query, key and window counts seen with the values the model defines, and — for
models with relative-position tables — that the query-key offsets from ``centres()`` are
the ones the model's own table is indexed by. Known-answer tests plant a uniform Swin head
and check the distance from the captured maps against the analytic in-window distance
(shifted windows included), and check windowed / dilated layouts against timm's own
partition functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import nn

import hooks
from hooks.geometry import RULES, Rule, TinyConfig
from inspector.metrics import distance_matrix, mean_attention_distance

pytestmark = pytest.mark.families


# Known values of some layers' geometry, by tiny config id (the configs themselves, and the
# geometry kinds each must give, are declared with the rules in ``hooks.geometry``).
EXPECT: dict[str, dict[str, dict[str, Any]]] = {
    "vit": {"blocks.0.attn": dict(prefix=1, grid=(10, 10))},
    "vit-registers": {"blocks.0.attn": dict(prefix=1)},
    "deit-distilled": {"blocks.1.attn": dict(prefix=2, grid=(4, 4), stride=(16.0, 16.0))},
    "eva-rope": {"blocks.0.attn": dict(prefix=1, grid=(4, 4), stride=(14.0, 14.0))},
    "swin": {
        "layers.0.blocks.1.attn": dict(
            grid=(14, 14), stride=(4.0, 4.0), window=(7, 7), shift=(3, 3)
        ),
        "layers.1.blocks.1.attn": dict(grid=(7, 7), stride=(8.0, 8.0), shift=None),
    },
    "pvt-v2": {
        "stages.0.blocks.0.attn": dict(grid=(16, 16), key_grid=(2, 2), key_stride=(32.0, 32.0))
    },
    "pvt-v2-linear": {
        "stages.1.blocks.0.attn": dict(grid=(28, 28), key_grid=(7, 7), key_stride=(32.0, 32.0))
    },
    "twins": {
        "blocks.0.0.attn": dict(kind="windowed", grid=(56, 56), window=(7, 7)),
        "blocks.0.1.attn": dict(kind="global", key_grid=(7, 7), key_stride=(32.0, 32.0)),
    },
    "mvitv2": {
        # 16×16 map at 4 px; keys pooled by a 3×3 / stride-4 / pad-1 conv: key j sits
        # over query 4j, i.e. at 2 + 16 j px, not at the 8 + 16 j a fresh grid would give.
        "stages.0.blocks.0.attn": dict(
            grid=(16, 16),
            origin=(2.0, 2.0),
            key_grid=(4, 4),
            key_stride=(16.0, 16.0),
            key_origin=(2.0, 2.0),
        ),
    },
    "mvitv2-cls": {"stages.1.blocks.1.attn": dict(prefix=1)},
    "levit": {
        "stages.1.downsample.attn_downsample": dict(
            grid=(4, 4),
            stride=(32.0, 32.0),
            key_grid=(7, 7),
            key_stride=(16.0, 16.0),
            origin=(8.0, 8.0),
        )
    },
    "cait": {
        "blocks.0.attn": dict(prefix=0),
        "blocks_token_only.0.attn": dict(kind="class-attention", prefix=1),
    },
    "convit": {"blocks.1.attn": dict(prefix=0), "blocks.2.attn": dict(prefix=1)},
    "tiny-vit": {"stages.1.blocks.0.attn": dict(grid=(28, 28), window=(7, 7), stride=(8.0, 8.0))},
    "efficientformer-v2": {
        "stages.3.downsample.attn": dict(
            grid=(7, 7), stride=(32.0, 32.0), key_grid=(14, 14), key_stride=(16.0, 16.0)
        )
    },
    "mobilevit": {"stages.2.1.transformer.0.attn": dict(window=(8, 8), dilation=(2, 2))},
    "nest": {"levels.0.transformer_encoder.0.attn": dict(grid=(56, 56), window=(14, 14))},
    "pit": {"transformers.0.blocks.0.attn": dict(prefix=1, grid=(27, 27), stride=(8.0, 8.0))},
    "tnt": {"blocks.0.attn_in": dict(grid=(56, 56), window=(4, 4), stride=(4.0, 4.0))},
    "crossvit": {"blocks.0.blocks.1.0.attn": dict(grid=(14, 14), stride=(240 / 14, 240 / 14))},
    "samvit": {
        "blocks.0.attn": dict(kind="windowed", grid=(4, 4), stride=(16.0, 16.0), window=(2, 2)),
        "blocks.1.attn": dict(kind="global", grid=(4, 4), stride=(16.0, 16.0)),
    },
    "gcvit": {
        "stages.1.blocks.1.attn": dict(kind="unknown"),  # global queries: no position
        "stages.2.blocks.0.attn": dict(grid=(14, 14), window=(14, 14), stride=(16.0, 16.0)),
    },
    "volo": {
        "network.0.0.attn": dict(kind="unknown"),  # outlook attention
        "post_network.0.attn": dict(kind="class-attention", key_grid=(4, 4)),
    },
    "nextvit": {
        "stages.1.blocks.0.e_mhsa": dict(kind="unknown"),  # runs of 16 keys wrap rows of 8
        "stages.2.blocks.4.e_mhsa": dict(  # runs of 4 keys along rows of 4
            grid=(4, 4), key_grid=(4, 1), key_stride=(16.0, 64.0)
        ),
    },
    "lowformer": {  # 8×8 map at 16 px through a 3×3 / stride-2 / pad-1 conv: token i over 2i
        "stages.2.1.attn.main.1": dict(grid=(4, 4), stride=(32.0, 32.0), origin=(8.0, 8.0))
    },
    "mobilenetv4-hybrid": {  # keys: 3×3 / stride-2 / pad-1 depthwise conv of the 4×4 map
        "blocks.2.4.attn": dict(
            grid=(4, 4),
            stride=(16.0, 16.0),
            key_grid=(2, 2),
            key_stride=(32.0, 32.0),
            key_origin=(8.0, 8.0),
        )
    },
    "shvit": {  # 14×14 at 16 px, then 3×3 / stride-2 / pad-1 merges: 7×7, 4×4 (ceil)
        "stages.1.blocks.0.mixer.m": dict(grid=(7, 7), stride=(32.0, 32.0), origin=(8.0, 8.0)),
        "stages.2.blocks.0.mixer.m": dict(grid=(4, 4), stride=(64.0, 64.0), origin=(8.0, 8.0)),
    },
    "iformer": {
        "stages.2.blocks.7.mixer.module": dict(grid=(14, 14), stride=(16.0, 16.0)),
        "stages.3.blocks.1.mixer.module": dict(grid=(7, 7), stride=(32.0, 32.0)),
    },
    "hiera": {"blocks.0.attn": dict(kind="unknown")},
    "sam2-hiera": {
        "blocks.1.attn": dict(  # stage change: 2×2 max-pooled queries in 8×8 key windows
            grid=(16, 16),
            window=(4, 4),
            stride=(8.0, 8.0),
            origin=(4.0, 4.0),
            key_window=(8, 8),
            key_stride=(4.0, 4.0),
            key_origin=(2.0, 2.0),
        )
    },
}


def build(config: TinyConfig) -> tuple[nn.Module, torch.Tensor]:
    """The tiny model of ``config`` (random weights, seed 0) and a batch of 2 images."""
    torch.manual_seed(0)
    kwargs = dict(config.kwargs)
    if ":" in config.model:  # a class of a timm module, built directly
        where, name = config.model.split(":")
        if where.startswith("transformers."):
            pytest.importorskip("transformers", reason="the transformers test extra")
        module = importlib.import_module(where if "." in where else f"timm.models.{where}")
        if isinstance(kwargs.get("cfg"), Mapping):
            kwargs["cfg"] = getattr(module, f"{name}Cfg")(**kwargs["cfg"])
        if isinstance(kwargs.get("config"), Mapping):  # Hugging Face: Model(Config(...))
            kwargs["config"] = getattr(module, name).config_class(**kwargs["config"])
        model = getattr(module, name)(**kwargs)
    else:
        model = timm.create_model(config.model, pretrained=False, **kwargs)
    size = config.size or model.pretrained_cfg["input_size"][-1]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    return model.eval(), x


@dataclass(frozen=True)
class Family:
    """A tiny configuration of one family, the rule it tests and what its geometry must be."""

    config: TinyConfig
    rule: Rule
    expect: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> geometry fields

    @property
    def kinds(self) -> frozenset[str]:
        return self.config.kinds

    def build(self) -> tuple[nn.Module, torch.Tensor]:
        return build(self.config)


FAMILIES: dict[str, Family] = {
    config.id: Family(config, rule, EXPECT.get(config.id, {}))
    for rule in RULES
    for config in rule.configs
}


def test_every_rule_declares_a_tiny_config() -> None:
    """A rule is tested by the tier below only through the tiny configs it declares."""
    untested = [rule.name for rule in RULES if not rule.configs]
    assert not untested, f"geometry rules without a tiny timm config: {untested}"
    assert set(EXPECT) <= set(FAMILIES), "expectations for configs no rule declares"


def unfused_reference(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's own probabilities: ``fused_attn=False``, the input of each ``attn_drop``."""
    found: dict[str, torch.Tensor] = {}
    handles, saved = [], {}
    for name, module in hooks.find_attention(model).items():
        if hasattr(module, "fused_attn"):
            saved[name] = module.fused_attn
            module.fused_attn = False
        if isinstance(getattr(module, "attn_drop", None), nn.Module):

            def keep(m: nn.Module, args: tuple, name: str = name) -> None:
                found.setdefault(name, args[0].detach().clone())

            handles.append(module.attn_drop.register_forward_pre_hook(keep))
    modules = dict(model.named_modules())
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for name, value in saved.items():
            modules[name].fused_attn = value
    return found


def captured(
    model: nn.Module, x: torch.Tensor, **options: Any
) -> tuple[hooks.Capture, dict, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    with (
        torch.no_grad(),
        hooks.capture(
            model, on_attention=lambda n, p: seen.setdefault(n, p.clone()), **options
        ) as cap,
    ):
        out = hooks.first_tensor(model(x))  # Hugging Face models return a tuple
    return cap, seen, out


def as_sequences(probs: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``[sequence, head, query, key]`` as the capture reports it."""
    from hooks._discovery import head_count
    from hooks._taps import _as_sequences

    out = _as_sequences(probs, head_count(module), module)
    assert out is not None, f"reference of shape {tuple(probs.shape)} has no head axis"
    return out


# Families whose attention adds a bias looked up by the query-key offset; ``abs``: the
# model indexes by absolute offsets.
BIAS_TABLES = {
    "swin": ("relative_position_index", False),
    "swinv2": ("relative_position_index", False),
    "maxvit": ("rel_pos.relative_position_index", False),
    "levit": ("attention_bias_idxs", True),
    "efficientformer-v2": ("attention_bias_idxs", True),
    "tiny-vit": ("attention_bias_idxs", True),
    "efficientvit-msra": ("attention_bias_idxs", True),
}


def check_position_table(family: str, model: nn.Module, cap: hooks.Capture) -> None:
    """The model's relative-position bias index is a function of the query-key offset it
    was built from; the offsets from ``centres()`` must induce the very same partition of
    query-key pairs (same offset ⇔ same index), including strided queries (LeViT,
    EfficientFormerV2) and grid attention (MaxViT)."""
    buffer, absolute = BIAS_TABLES[family]
    modules = dict(model.named_modules())
    checked = 0
    for name, record in cap.attention.items():
        index = dict(modules[name].named_buffers()).get(buffer)
        geometry = record.geometry
        if index is None or not geometry.known:
            continue
        queries, keys = geometry.centres()
        unit = np.array(geometry.key_stride or geometry.stride) * np.array(
            geometry.dilation or (1, 1)
        )
        offsets = (queries[:, None, :] - keys[None, :, :]) / unit
        np.testing.assert_allclose(offsets, offsets.round(), atol=1e-9)  # on the key lattice
        offsets = offsets.round().astype(int)
        if absolute:
            offsets = np.abs(offsets)
        index = index.reshape(len(queries), len(keys)).numpy()
        by_offset: dict[tuple[int, int], int] = {}
        by_index: dict[int, tuple[int, int]] = {}
        for offset, idx in zip(map(tuple, offsets.reshape(-1, 2)), index.ravel(), strict=True):
            assert by_offset.setdefault(offset, int(idx)) == idx, (name, offset)
            assert by_index.setdefault(int(idx), offset) == offset, (name, idx)
        checked += 1
    assert checked, f"no {buffer} checked"


@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_family_probabilities_outputs_and_geometry(family: str) -> None:
    spec = FAMILIES[family]
    model, x = spec.build()
    with torch.no_grad():
        plain = hooks.first_tensor(model(x))
    family_of_model = type(model).__module__.removeprefix("timm.models.")
    assert RULES.lookup(family_of_model) is spec.rule, (
        f"{spec.config.model} is not {spec.rule.name}'s"
    )
    cap, seen, out = captured(model, x, keep_maps=1, positions=8)
    assert torch.equal(out, plain), "the capture changed the outputs"
    assert cap.attention and set(seen) == set(cap.attention), "attention layers without maps"
    reference = unfused_reference(model, x)
    attention = hooks.find_attention(model)
    fused_off = [m for m in attention.values() if getattr(m, "fused_attn", True) is False]
    for module in fused_off:
        module.fused_attn = True  # the SDPA path, with masks and biases as attn_mask
    try:
        _, seen_fused, _ = captured(model, x, channels=None)
    finally:
        for module in fused_off:
            module.fused_attn = False
    compared = 0
    for name, record in cap.attention.items():
        probs = seen[name]
        sequences, _, queries, keys = probs.shape
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
        assert (probs >= 0).all()
        expected = reference.get(name)
        if expected is not None and bool(((expected.sum(-1) - 1).abs() < 1e-4).all()):
            torch.testing.assert_close(
                probs, as_sequences(expected, attention[name]), atol=1e-4, rtol=0
            )
            torch.testing.assert_close(
                seen_fused[name], as_sequences(expected, attention[name]), atol=1e-4, rtol=0
            )
            compared += 1
        geometry = record.geometry
        assert geometry.kind in spec.kinds, f"{name}: {geometry.kind} ({geometry.reason})"
        assert geometry.mismatch(sequences // x.shape[0], queries, keys) is None
        if geometry.known:
            q_centres, k_centres = geometry.centres()
            assert (len(q_centres) + geometry.prefix, len(k_centres) + geometry.prefix) == (
                queries,
                keys,
            )
            assert geometry.sequences == sequences // x.shape[0]
        for key, value in spec.expect.get(name, {}).items():
            assert getattr(geometry, key) == value, (
                f"{name}.{key}: {getattr(geometry, key)} != {value}"
            )
    assert set(spec.expect) <= set(cap.attention)
    if any(hasattr(m, "attn_drop") for m in attention.values()):
        assert compared, "no layer compared with the unfused computation"
    assert cap.channels and all(r.moments is not None for r in cap.channels.values())
    if family in BIAS_TABLES:
        check_position_table(family, model, cap)


# -- known answers ------------------------------------------------------------------------


def _window_centres(window: int, stride: float) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
    return np.stack([ys.ravel() * stride, xs.ravel() * stride], axis=1).astype(float)


def _swin_regions(size: int, window: int, shift: int) -> np.ndarray:
    """Region label of every token of every shifted window ``[window index, token]``, as
    Swin builds its mask: tokens of different regions may not attend to each other."""
    labels = np.zeros((size, size), dtype=int)
    cuts = ((0, -window), (-window, -shift), (-shift, None))
    count = 0
    for h in cuts:
        for w in cuts:
            labels[h[0] : h[1], w[0] : w[1]] = count
            count += 1
    blocks = labels.reshape(size // window, window, size // window, window).transpose(0, 2, 1, 3)
    return blocks.reshape(-1, window * window)


def test_planted_uniform_swin_head_gives_the_analytic_window_distance() -> None:
    """A Swin head with q = 0 and no relative position bias attends uniformly within its
    window (within its region of a shifted window): the distance from the captured maps is
    the mean pairwise distance of the window grid, self pairs included."""
    model, x = FAMILIES["swin"].build()
    for block in model.layers[0].blocks:
        attn = block.attn
        with torch.no_grad():  # one head in stage 0: its q rows are the first third of qkv
            dim = attn.qkv.in_features
            attn.qkv.weight[:dim] = 0
            attn.qkv.bias[:dim] = 0
            attn.relative_position_bias_table.zero_()
    for fused in (False, True):
        for block in model.layers[0].blocks:
            block.attn.fused_attn = fused
        cap, seen, _ = captured(model, x, channels=None)
        window, stride = 7, 4.0
        d = distance_matrix(_window_centres(window, stride), _window_centres(window, stride))
        for index, shift in ((0, 0), (1, 3)):
            name = f"layers.0.blocks.{index}.attn"
            probs = seen[name].double().numpy()  # [2 images × 4 windows, 1 head, 49, 49]
            geometry = cap.attention[name].geometry
            assert (geometry.kind, geometry.window, geometry.stride) == ("windowed", (7, 7), (4, 4))
            assert geometry.shift == ((shift, shift) if shift else None)
            q, k = geometry.centres()
            got = mean_attention_distance(probs, distance_matrix(q, k), 0).renormalised
            if shift == 0:
                expected = np.full(probs.shape[:2], d.mean())  # unshifted: the whole window
            else:
                regions = _swin_regions(14, window, shift)
                same = regions[:, :, None] == regions[:, None, :]
                per_window = ((d * same).sum(-1) / same.sum(-1)).mean(-1)
                expected = np.tile(per_window, 2)[:, None]
            np.testing.assert_allclose(got, expected, atol=1e-4)
    assert d.mean() == pytest.approx(115.502894 / 8, abs=1e-5)  # METRICS.md: 7×7 at 32 px


def _positions(rows: int, cols: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    return torch.stack([ys, xs], dim=-1).float()[None]  # [1, rows, cols, 2] token indices


@pytest.mark.parametrize("block", [True, False], ids=["block-windows", "grid-dilated"])
def test_maxvit_partitions_match_the_geometry_layout(block: bool) -> None:
    """Every sequence timm's partition builds holds tokens laid out as ``centres()`` says
    (up to a translation), for MaxViT block (windowed) and grid (dilated) attention."""
    from timm.models.maxxvit import grid_partition, window_partition

    model, _ = FAMILIES["maxvit"].build()
    cap = hooks.capture(model, channels=None)  # geometry at the configured input size
    leaf = "attn_block" if block else "attn_grid"
    name = next(n for n in cap.attention if f".{leaf}." in n)
    geometry = cap.attention[name].geometry
    assert geometry.kind == ("windowed" if block else "dilated")
    partition = window_partition if block else grid_partition
    sequences = partition(_positions(*geometry.grid), list(geometry.window))
    queries, _ = geometry.centres()
    layout = sequences.reshape(sequences.shape[0], -1, 2).numpy() * np.array(geometry.stride)
    assert len(sequences) == geometry.sequences
    for sequence in layout:
        np.testing.assert_allclose(sequence - sequence[0], queries - queries[0])


def test_swin_windows_match_timm_partition() -> None:
    from timm.models.swin_transformer import window_partition

    model, _ = FAMILIES["swin"].build()
    geometry = hooks.capture(model, channels=None).attention["layers.0.blocks.0.attn"].geometry
    windows = window_partition(_positions(*geometry.grid), geometry.window)
    queries, _ = geometry.centres()
    for sequence in windows.reshape(len(windows), -1, 2).numpy() * np.array(geometry.stride):
        np.testing.assert_allclose(sequence - sequence[0], queries - queries[0])
    assert len(windows) == geometry.sequences == 4


def test_mvitv2_pooled_key_centres_sit_over_their_pooling_windows() -> None:
    """Pooled keys of MViTv2 sit over the input token their 3×3 / stride-s / pad-1 kernel is
    centred on, so the distance from a query to the key pooled around it is zero."""
    model, _ = FAMILIES["mvitv2"].build()
    name = "stages.0.blocks.0.attn"
    geometry = hooks.infer_geometry(model, name, dict(model.named_modules())[name], (64, 64))
    queries, keys = geometry.centres()
    d = distance_matrix(queries, keys)
    for j, key in enumerate(keys):
        row, col = divmod(j, geometry.key_grid[1])
        query = (4 * row) * geometry.grid[1] + 4 * col  # the input token the kernel centres on
        assert d[query, j] == 0.0, (j, key, queries[query])


def test_unregistered_family_is_unknown_not_guessed() -> None:
    model = timm.create_model("test_vit", pretrained=False).eval()
    module = model.blocks[0].attn

    class Renamed(type(model)):  # type: ignore[misc]
        __module__ = "timm.models.some_new_family"

    model.__class__ = Renamed
    geometry = hooks.infer_geometry(model, "blocks.0.attn", module)
    assert geometry.kind == "unknown" and "some_new_family" in geometry.reason


def test_geometry_kinds_count_tokens_and_round_trip() -> None:
    """Per-sequence counts, centres and the file round trip of every geometry kind."""
    g = hooks.TokenGeometry
    cases = [
        # (geometry, queries, keys, sequences per image)
        (g("global", prefix=1, grid=(4, 6), stride=(16.0, 16.0)), 25, 25, 1),
        (
            g("global", grid=(8, 8), stride=(4.0, 4.0), key_grid=(2, 2), key_stride=(16.0, 16.0)),
            64,
            4,
            1,
        ),
        (g("windowed", grid=(14, 14), stride=(4.0, 4.0), window=(7, 7), shift=(3, 3)), 49, 49, 4),
        (g("windowed", grid=(15, 15), stride=(4.0, 4.0), window=(7, 7)), 49, 49, 9),  # padded
        (
            g("dilated", grid=(16, 16), stride=(8.0, 8.0), window=(4, 4), dilation=(4, 4)),
            16,
            16,
            16,
        ),
        (g("class-attention", prefix=1, key_grid=(14, 14), key_stride=(16.0, 16.0)), 1, 197, 1),
        (g("channel-attention", reason="channels"), None, None, None),
    ]
    for geometry, queries, keys, sequences in cases:
        assert (geometry.tokens, geometry.key_tokens, geometry.sequences) == (
            queries,
            keys,
            sequences,
        )
        assert hooks.TokenGeometry.from_dict(geometry.to_dict()) == geometry
        if geometry.known:
            q, k = geometry.centres()
            assert len(q) + geometry.prefix == queries and len(k) + geometry.prefix == keys
            assert geometry.mismatch(sequences, queries, keys) is None
            assert "query tokens" in (geometry.mismatch(sequences, queries + 1, keys) or "")
            assert "sequences" in (geometry.mismatch(sequences + 1, queries, keys) or "")
        else:
            with pytest.raises(ValueError):
                geometry.centres()
    dilated = cases[4][0].centres()[0]
    assert np.allclose(np.diff(dilated[:4, 1]), 32.0)  # 8 px × dilation 4 between sequence tokens
    with pytest.raises(ValueError, match="window"):
        g("dilated", grid=(16, 16), stride=(8.0, 8.0), window=(4, 4), dilation=(3, 3))
    old = {"kind": "global", "prefix": 1, "grid": [2, 2], "stride": [16.0, 16.0], "reason": ""}
    assert hooks.TokenGeometry.from_dict(old).origin is None  # files written before the new fields


@pytest.mark.parametrize("family", list(FAMILIES), ids=list(FAMILIES))
def test_family_per_sample_gates_equal_each_sample_gated_alone(family: str) -> None:
    """A ``[sample, unit]`` gate on a batch gives each sample the output it gets alone under
    its own ``[unit]`` gate — on windowed (``sample · window`` sequences), reduced-key,
    pooled and class-attention layers alike."""
    model, x = FAMILIES[family].build()
    features = getattr(model, "forward_features", model)  # heads of some tiny models are 0

    def forward(x: torch.Tensor) -> torch.Tensor:
        return hooks.first_tensor(features(x))

    generator = torch.Generator().manual_seed(2)
    heads = {
        n: torch.rand(len(x), h, generator=generator)
        for n, h in hooks.gateable_heads(model).items()
    }
    with torch.no_grad(), hooks.gates(model, heads=heads):
        batch = forward(x)
    for i in range(len(x)):
        with (
            torch.no_grad(),
            hooks.gates(model, heads={n: g[i] for n, g in heads.items()}),
        ):
            alone = forward(x[i : i + 1])
        torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-4, rtol=1e-4)
    if heads:  # the gates reach the output projections (some tiny models zero their branches)
        modules = dict(model.named_modules())
        seen: dict[str, list[torch.Tensor]] = {}
        handles = [
            hooks.output_projection(modules[n]).register_forward_hook(
                lambda m, a, o, n=n: seen.setdefault(n, []).append(o)
            )
            for n in heads
        ]
        try:
            with torch.no_grad():
                forward(x)
                with hooks.gates(model, heads=heads):
                    forward(x)
        finally:
            for handle in handles:
                handle.remove()
        assert any(len(outs) == 2 and not torch.equal(*outs) for outs in seen.values())
