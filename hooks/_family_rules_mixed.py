"""Geometry rules of ViT variants and hybrid convolution-attention models (registered into
``hooks._families.FAMILY_RULES`` like ``hooks._family_rules``).
"""

from __future__ import annotations

import re

from torch import nn

from ._families import (
    Context,
    _Unknown,
    block_stride,
    conv_grid,
    fstride,
    grid_of,
    info_stride,
    map_geometry,
    pair,
    pooled,
    rule,
    stage_stride,
    window_geometry,
)
from ._geometry import TokenGeometry

__all__: list[str] = []


def _byob_stage_stride(context: Context, stage: int) -> int:
    """Stride of ``stages.{stage}`` (the last stage is reported as ``final_conv``)."""
    try:
        return info_stride(context, f"stages.{stage}")
    except _Unknown:
        if stage != len(context.model.stages) - 1:
            raise
        return info_stride(context, "final_conv")


@rule("byobnet")
def _byobnet(context: Context) -> TokenGeometry:
    """Models built by ``byobnet``: MobileViT (a transformer over unfolded patches, one
    sequence per position inside the patch — tokens ``patch_size`` apart spread over the
    map) and BoTNet (bottleneck attention over the block's input map)."""
    if type(context.module).__name__ == "BottleneckAttn":
        stage = int(context.match(r"stages\.(\d+)\.\d+\.self_attn").group(1))
        stride = _byob_stage_stride(context, stage)
        if type(context.module.pool).__name__ == "AvgPool2d":  # attends, then pools by 2
            stride //= 2
        grid = grid_of(context.size, stride)
        embed = context.module.pos_embed
        if (embed.height, embed.width) != grid:
            raise _Unknown(f"feat_size {(embed.height, embed.width)} differs from the {grid} map")
        return TokenGeometry(
            kind="global", grid=grid, stride=fstride(stride), reason="BoTNet bottleneck attention"
        )
    if type(context.module).__name__ == "HaloAttn":
        raise _Unknown("halo attention: query blocks attend to larger overlapping key windows")
    found = context.match(r"stages\.(\d+)\.\d+\.transformer\.\d+\.attn")
    block = context.parent(3)
    if type(block).__name__ != "MobileVitBlock":
        raise _Unknown(f"{type(block).__name__} attention has no geometry rule")
    stride = _byob_stage_stride(context, int(found.group(1)))
    grid = grid_of(context.size, stride)
    patch = pair(block.patch_size)
    if grid[0] % patch[0] or grid[1] % patch[1]:
        raise _Unknown(f"map {grid} is interpolated to a multiple of the patch {patch}")
    return TokenGeometry(
        kind="dilated",
        grid=grid,
        stride=fstride(stride),
        window=(grid[0] // patch[0], grid[1] // patch[1]),
        dilation=patch,
        reason="MobileViT: one sequence per in-patch position, tokens patch_size apart",
    )


@rule("vision_transformer_sam")
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


@rule("tnt")
def _tnt(context: Context) -> TokenGeometry:
    """TNT: inner attention among the pixel tokens of one patch (a window), outer attention
    over the class token and the patches."""
    model = context.model
    embed = model.pixel_embed
    patches = grid_of(context.size, embed.patch_size)
    if context.name.endswith(".attn_out"):
        context.match(r"blocks\.\d+\.attn_out")
        return TokenGeometry(
            kind="global",
            prefix=int(model.num_prefix_tokens),
            grid=patches,
            stride=fstride(embed.patch_size),
            reason="TNT outer attention over the patches",
        )
    context.match(r"blocks\.\d+\.attn_in")
    inner, step = pair(embed.new_patch_size), pair(embed.proj.stride)
    if (inner[0] * step[0], inner[1] * step[1]) != pair(embed.patch_size):
        raise _Unknown("pixel tokens do not tile the patch exactly")
    return TokenGeometry(
        kind="windowed",
        grid=(patches[0] * inner[0], patches[1] * inner[1]),
        stride=fstride(step),
        window=inner,
        reason="TNT inner attention among the pixel tokens of one patch",
    )


@rule("crossvit")
def _crossvit(context: Context) -> TokenGeometry:
    """CrossViT: two branches on rescaled copies of the input; the fusion is class
    attention of one branch's class token over the other branch's patches."""
    model = context.model
    found = re.fullmatch(r"blocks\.\d+\.(?:blocks\.(\d+)\.\d+|fusion\.(\d+))\.attn", context.name)
    if found is None:
        raise _Unknown(f"{context.name} is not where this family's rule expects attention")
    if context.size != pair(model.img_size) or getattr(model, "crop_scale", False):
        raise _Unknown(f"input {context.size} is not the model's img_size {model.img_size}")
    fusion = found.group(2) is not None
    branch = int(found.group(2) if fusion else found.group(1))
    if fusion:
        branch = (branch + 1) % int(model.num_branches)  # keys: the other branch's patches
    scaled, patch = pair(model.img_size_scaled[branch]), pair(model.patch_embed[branch].patch_size)
    grid = grid_of(scaled, patch)
    # the branch sees the input resized to ``scaled``: its patches tile the input evenly
    stride = (context.size[0] / grid[0], context.size[1] / grid[1])
    if fusion:
        return TokenGeometry(
            kind="class-attention",
            prefix=1,
            key_grid=grid,
            key_stride=stride,
            reason="CrossViT fusion: a class token attends to the other branch",
        )
    return TokenGeometry(
        kind="global", prefix=1, grid=grid, stride=stride, reason=f"CrossViT branch {branch}"
    )


@rule("gcvit")
def _gcvit(context: Context) -> TokenGeometry:
    """GCViT: local window attention; blocks with global queries are unknown (the queries summarise
    the whole map)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.attn").group(1))
    if context.module.use_global:
        raise _Unknown("global query tokens summarise the whole map: they have no position")
    note = "GCViT local window attention"
    return window_geometry(
        context, stage_stride(context.model, stage), context.module.window_size, note
    )


@rule("volo")
def _volo(context: Context) -> TokenGeometry:
    """VOLO: transformer stages global over the stage map; class attention; outlook attention is
    unknown (overlapping k×k windows)."""
    if type(context.module).__name__ == "OutlookAttention":
        raise _Unknown("outlook attention: overlapping k×k windows, one per (pooled) position")
    if context.name.startswith("post_network."):
        context.match(r"post_network\.\d+\.attn")
        last = max(i for i, m in enumerate(context.model.network) if hasattr(m, "__len__"))
        grid = grid_of(context.size, info_stride(context, f"network.{last}"))
        stride = fstride(info_stride(context, f"network.{last}"))
        return TokenGeometry(
            kind="class-attention", prefix=1, key_grid=grid, key_stride=stride,
            reason="VOLO class attention",
        )  # fmt: skip
    stage = context.match(r"(network\.\d+)\.\d+\.attn").group(1)
    return map_geometry(context, info_stride(context, stage), "VOLO attention over the stage map")


@rule("csatv2")
def _csatv2(context: Context) -> TokenGeometry:
    """CSATv2: attention over the pooled stage map."""
    stage = context.match(r"(stages\.\d+)\.\d+\.attn").group(1)
    if type(context.parent()).__name__ != "TransformerBlock":
        raise _Unknown(f"{type(context.parent()).__name__} attention has no geometry rule")
    return map_geometry(context, info_stride(context, stage), "CSATv2 attention over the stage map")


@rule("hieradet_sam2")
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
        raise _Unknown("query pooling other than non-overlapping q_stride blocks")
    if key_window[0] % step[0] or key_window[1] % step[1]:
        raise _Unknown(f"key window {key_window} is not a multiple of q_stride {step}")
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
        key_window=key_window,
        key_stride=fstride(key_stride),
        key_origin=key_origin,
        reason="SAM2 Hiera stage change: queries max-pooled inside each key window",
    )


@rule("lowformer", "cpubone")
def _conv_attention(context: Context) -> TokenGeometry:
    """LowFormer, CPUBone: global attention on the stage map downsampled by the module's
    strided depthwise convolution (positions from its kernel, stride and padding)."""
    stage = int(context.match(r"stages\.(\d+)\..*").group(1))
    stride = info_stride(context, f"stages.{stage}")
    grid, fs, origin = conv_grid(
        grid_of(context.size, stride), stride, context.module.conv_proj.conv, "conv_proj"
    )
    return TokenGeometry(
        kind="global", grid=grid, stride=fs, origin=origin, reason="conv-downsampled attention"
    )


@rule("mobilenetv3", "mobilenetv5")
def _multi_query_2d(context: Context) -> TokenGeometry:
    """MobileNetV4 / V5 multi-query attention: queries on the stage map (avg-pooled by
    query_strides), one key / value head on the map or its strided depthwise convolution."""
    stage = int(context.match(r"blocks\.(\d+)\.\d+\.attn").group(1))
    module = context.module
    if type(module).__name__ != "MultiQueryAttention2d":
        raise _Unknown(f"{type(module).__name__} has no geometry rule")
    stride = block_stride(context.model, stage)
    grid = grid_of(context.size, stride)
    queries = (grid, fstride(stride), (stride / 2, stride / 2))
    if module.has_query_strides:
        queries = conv_grid(grid, stride, module.query.down_pool, "query pooling")
    keys = queries if module.kv_stride == 1 else (grid, fstride(stride), (stride / 2,) * 2)
    if module.kv_stride > 1:
        keys = conv_grid(grid, stride, module.key.down_conv, "key downsampling")
    return TokenGeometry(
        kind="global",
        grid=queries[0],
        stride=queries[1],
        origin=queries[2],  # type: ignore[arg-type]
        key_grid=keys[0],
        key_stride=keys[1],
        key_origin=keys[2],  # type: ignore[arg-type]
        reason="multi-query attention (one shared key / value head)",
    )
