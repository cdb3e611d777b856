"""Geometry rules of attention in windows, grids and blocks of the map: Swin, SAM ViT, MaxViT /
CoAtNet, GCViT, DaViT, TinyViT, EfficientViT-MSRA, NesT, SAM2 Hiera (Hiera: unknown).

Each rule names the attention paths it understands; any other path of the model is
``unknown`` rather than guessed.
"""

from __future__ import annotations

from torch import nn

from ._helpers import (
    block_stride,
    fstride,
    grid_of,
    grid_padded,
    info_stride,
    map_geometry,
    pair,
    pooled,
    stage_stride,
    window_geometry,
)
from ._registry import RULES, Context, TinyConfig, Unknown
from ._token import TokenGeometry

__all__: list[str] = []

_SWIN = dict(embed_dim=24, depths=(2, 2), num_heads=(1, 2))
_CHANNELS = "channel attention: queries and keys are channels"


@RULES.register(
    "swin_transformer",
    "swin_transformer_v2",
    "swin_transformer_v2_cr",
    attention="windowed",
    configs=[
        TinyConfig(
            "swin",
            "swin_tiny_patch4_window7_224",
            dict(img_size=56, **_SWIN),
            56,
            frozenset({"windowed"}),
        ),
        TinyConfig(
            "swinv2",
            "swinv2_tiny_window8_256",
            dict(img_size=64, **_SWIN),
            64,
            frozenset({"windowed"}),
        ),
        TinyConfig(
            "swinv2-cr",
            "swinv2_cr_tiny_224",
            dict(img_size=56, window_size=7, **_SWIN),
            56,
            frozenset({"windowed"}),
        ),
    ],
)
def _swin(context: Context) -> TokenGeometry:
    """Swin v1 / v2 / v2-cr: windows of the block's window_size with its shift, on the stage grid
    (feature_info stride; odd maps zero-padded at the end)."""
    stage = int(context.match(r"(?:layers|stages)\.(\d+)\.blocks\.\d+\.attn").group(1))
    block = context.parent()
    stride = stage_stride(context.model, stage)
    grid = grid_padded(context.size, stage_stride(context.model, 0), stride)
    window, shift = pair(block.window_size), pair(block.shift_size)
    return TokenGeometry(
        kind="windowed",
        grid=grid,
        stride=fstride(stride),
        window=window,
        shift=shift if any(shift) else None,
        reason="Swin block window_size / shift_size, feature_info stride",
    )


@RULES.register(
    "vision_transformer_sam",
    attention="windowed",
    configs=[
        TinyConfig(
            "samvit",
            "samvit_base_patch16_224",
            dict(
                depth=2,
                embed_dim=32,
                num_heads=2,
                img_size=64,
                window_size=2,
                global_attn_indexes=(1,),
            ),
            64,
            frozenset({"windowed", "global"}),
        ),
    ],
)
def _sam(context: Context) -> TokenGeometry:
    """SAM ViT: window blocks (window_size, zero-padded) and global blocks over the patch grid."""
    context.match(r"blocks\.\d+\.attn")
    model, block = context.model, context.parent()
    embed = model.patch_embed
    grid = grid_of(context.size, embed.patch_size)
    window = int(getattr(block, "window_size", 0) or 0)
    stride = fstride(embed.patch_size)
    if window:
        return TokenGeometry(
            kind="windowed",
            grid=grid,
            stride=stride,
            window=(window, window),
            reason="SAM ViT window block (zero-padded windows at the border)",
        )
    return TokenGeometry(kind="global", grid=grid, stride=stride, reason="SAM ViT global block")


@RULES.register(
    "maxxvit",
    attention="windowed",
    configs=[
        TinyConfig("maxvit", "test_maxvit", kinds=frozenset({"windowed", "dilated"})),
        TinyConfig("coatnet", "test_coatnet"),
    ],
)
def _maxxvit(context: Context) -> TokenGeometry:
    """MaxViT / CoAtNet: block attention in windows; grid attention dilated (a window of tokens H/G
    apart); CoAtNet attention global over the stage map."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.\w+(?:\.\w+)?").group(1))
    stride = stage_stride(context.model, stage)
    grid, fs = grid_of(context.size, stride), fstride(stride)
    parent = context.parent()
    leaf = context.name.rsplit(".", 1)[-1]
    if hasattr(parent, "partition_block"):  # PartitionAttentionCl / PartitionAttention2d
        block = bool(parent.partition_block)
    elif type(parent).__name__ == "ParallelPartitionAttention":
        block = leaf == "attn_block"
    else:
        return TokenGeometry(
            kind="global", grid=grid, stride=fs, reason="CoAtNet / MaxxViT attention over the map"
        )
    window = pair(parent.partition_size)
    if block:
        return TokenGeometry(
            kind="windowed", grid=grid, stride=fs, window=window, reason="MaxViT block attention"
        )
    if grid[0] % window[0] or grid[1] % window[1]:
        raise Unknown(f"grid {grid} is not a multiple of the partition {window}")
    return TokenGeometry(
        kind="dilated",
        grid=grid,
        stride=fs,
        window=window,
        dilation=(grid[0] // window[0], grid[1] // window[1]),
        reason="MaxViT grid attention: a sequence is spread over the whole map",
    )


@RULES.register(
    "gcvit",
    attention="windowed",
    configs=[
        TinyConfig(
            "gcvit",
            "gcvit:GlobalContextVit",  # gcvit_* fix their depths: build the class
            dict(depths=(1, 2, 1, 1), embed_dim=16, num_heads=(1, 2, 4, 8), img_size=224),
            224,
            frozenset({"windowed", "unknown"}),
        ),
    ],
)
def _gcvit(context: Context) -> TokenGeometry:
    """GCViT: local window attention; blocks with global queries are unknown (the queries summarise
    the whole map)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.attn").group(1))
    if context.module.use_global:
        raise Unknown("global query tokens summarise the whole map: they have no position")
    note = "GCViT local window attention"
    return window_geometry(
        context, stage_stride(context.model, stage), context.module.window_size, note
    )


@RULES.register(
    "davit",
    attention="windowed",
    configs=[
        TinyConfig(
            "davit",
            "davit_tiny",
            dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8)),
            224,
            frozenset({"windowed", "channel-attention"}),
        ),
    ],
)
def _davit(context: Context) -> TokenGeometry:
    """DaViT: window attention (block window_size) and channel attention (no distance)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.\d+\.attn").group(1))
    if type(context.module).__name__.startswith("ChannelAttention"):
        return TokenGeometry(kind="channel-attention", reason=f"DaViT {_CHANNELS}")
    stride = stage_stride(context.model, stage)
    note = "DaViT window attention (zero-padded windows at the border)"
    return window_geometry(context, stride, context.parent().window_size, note)


@RULES.register(
    "tiny_vit",
    attention="windowed",
    configs=[
        TinyConfig(
            "tiny-vit",
            "tiny_vit_5m_224",
            dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8)),
            224,
            frozenset({"windowed"}),
        ),
    ],
)
def _tiny_vit(context: Context) -> TokenGeometry:
    """TinyViT: window attention with the block window_size (zero-padded at the border)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.attn").group(1))
    note = "TinyViT window attention (zero-padded windows at the border)"
    return window_geometry(
        context, stage_stride(context.model, stage), context.parent().window_size, note
    )


@RULES.register(
    "efficientvit_msra",
    attention="windowed",
    configs=[
        TinyConfig(
            "efficientvit-msra",
            "efficientvit_m0",
            dict(embed_dim=(32, 48, 64), depth=(1, 1, 1), num_heads=(2, 2, 2)),
            224,
            frozenset({"windowed"}),
        ),
    ],
)
def _efficientvit_msra(context: Context) -> TokenGeometry:
    """EfficientViT-MSRA: windows over the stage map; maps after the first come from 3×3 /
    stride-2 / pad-1
    convolutions (``ceil`` sizes, token 0 kept in place), as the model's ``resolution``."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.mixer\.m\.attn").group(1))
    first = next(m for m in context.model.modules() if type(m).__name__ == "LocalWindowAttention")
    if grid_of(context.size, stage_stride(context.model, 0)) != pair(first.resolution):
        raise Unknown(
            f"input {context.size} does not give the model's resolution {first.resolution}"
        )
    stride = stage_stride(context.model, stage)
    return TokenGeometry(
        kind="windowed",
        grid=pair(context.parent().resolution),
        stride=fstride(stride),
        window=pair(context.module.resolution),
        reason="EfficientViT cascaded-group attention in local windows (zero-padded at the border)",
    )


@RULES.register(
    "nest",
    attention="windowed",
    configs=[
        TinyConfig(
            "nest",
            "nest:Nest",  # nest_* fix their widths: build the class
            dict(img_size=224, embed_dims=(24, 48, 96), num_heads=(1, 2, 4), depths=(1, 1, 1)),
            224,
            frozenset({"windowed"}),
        ),
    ],
)
def _nest(context: Context) -> TokenGeometry:
    """NesT: attention within the level's non-overlapping blocks (windows)."""
    level = context.match(r"(levels\.\d+)\.transformer_encoder\.\d+\.attn").group(1)
    block = int(context.modules[level].block_size)
    note = "NesT attention within non-overlapping blocks"
    return window_geometry(context, info_stride(context, level), block, note)


@RULES.register(
    "hieradet_sam2",
    attention="windowed",
    configs=[
        TinyConfig(
            "sam2-hiera",
            "hieradet_small",
            dict(embed_dim=16, num_heads=1),
            128,
            frozenset({"windowed", "global"}),
        ),
    ],
)
def _hieradet_sam2(context: Context) -> TokenGeometry:
    """SAM2 Hiera: window attention (the block's window_size, zero-padded at the border) or
    global attention on the stage map; at a stage change queries are max-pooled inside each
    window of the finer map (query window = key window / q_stride)."""
    index = int(context.match(r"blocks\.(\d+)\.attn").group(1))
    block = context.parent()
    stride = block_stride(context.model, index)
    if block.q_stride:
        return _hiera_pooled(context, block, stride)
    if not block.is_windowed:
        return map_geometry(context, stride, "SAM2 Hiera global attention over the stage map")
    note = "SAM2 Hiera window attention (zero-padded windows at the border)"
    return window_geometry(context, stride, block.window_size, note)


def _hiera_pooled(context: Context, block: nn.Module, stride: int) -> TokenGeometry:
    """Keys: windows of the finer map; queries: each window max-pooled by ``q_stride``."""
    step = pair(block.q_stride)
    key_stride = (stride // step[0], stride // step[1])
    keys = grid_of(context.size, key_stride)
    key_window = pair(block.window_size)
    pool = context.module.q_pool
    if not block.is_windowed or pair(pool.kernel_size) != step or pair(pool.stride) != step:
        raise Unknown("query pooling other than non-overlapping q_stride blocks")
    if key_window[0] % step[0] or key_window[1] % step[1]:
        raise Unknown(f"key window {key_window} is not a multiple of q_stride {step}")
    window, offset = pooled(key_window, pool.kernel_size, pool.stride, pool.padding)
    grid, _ = pooled(keys, pool.kernel_size, pool.stride, pool.padding)  # the real queries
    key_origin = (key_stride[0] / 2, key_stride[1] / 2)
    return TokenGeometry(
        kind="windowed",
        grid=grid,
        stride=fstride(stride),
        window=window,
        origin=(
            key_origin[0] + offset[0] * key_stride[0],
            key_origin[1] + offset[1] * key_stride[1],
        ),
        key_grid=keys,
        key_window=key_window,
        key_stride=fstride(key_stride),
        key_origin=key_origin,
        reason="SAM2 Hiera stage change: queries max-pooled inside each key window",
    )


@RULES.register(
    "hiera",
    attention="windowed",
    configs=[
        TinyConfig(
            "hiera",
            "hiera_tiny_224",
            dict(embed_dim=16, num_heads=1, stages=(1, 1, 1, 1)),
            224,
            frozenset({"unknown"}),
        ),
    ],
)
def _hiera(context: Context) -> TokenGeometry:
    """Hiera (``MaskUnitAttention``): unknown. Its tokens are unrolled (``Unroll``: the map
    reordered as ``(Sy, Sx, H / Sy, W / Sx)`` once per q_stride stage), mask-unit windows
    are strided over that sequence (token ``t`` in window ``t % windows``) and queries are
    max-pooled across the unrolled order: neither the row-major windows nor the grids of
    :class:`TokenGeometry` describe those positions."""
    context.match(r"blocks\.\d+\.attn")
    raise Unknown(
        "Hiera attends over unrolled tokens (Unroll reorders the map per q_stride stage; "
        "mask-unit windows are strided over that order, queries max-pooled across it): "
        "token positions are not row-major windows or grids, so they are not modelled"
    )
