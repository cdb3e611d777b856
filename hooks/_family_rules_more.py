"""Geometry rules of hierarchical vision transformers (registered into
``hooks._families.FAMILY_RULES`` like ``hooks._family_rules``).
"""

from __future__ import annotations

from ._families import (
    Context,
    _Unknown,
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

_CHANNELS = "channel attention: queries and keys are channels"


@rule("davit")
def _davit(context: Context) -> TokenGeometry:
    """DaViT: window attention (block window_size) and channel attention (no distance)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.\d+\.attn").group(1))
    if type(context.module).__name__.startswith("ChannelAttention"):
        return TokenGeometry(kind="channel-attention", reason=f"DaViT {_CHANNELS}")
    stride = stage_stride(context.model, stage)
    note = "DaViT window attention (zero-padded windows at the border)"
    return window_geometry(context, stride, context.parent().window_size, note)


@rule("edgenext")
def _edgenext(context: Context) -> TokenGeometry:
    """EdgeNeXt: cross-covariance (channel) attention — no distance."""
    context.match(r"stages\.\d+\.blocks\.\d+\.xca")
    return TokenGeometry(kind="channel-attention", reason=f"EdgeNeXt cross-covariance {_CHANNELS}")


@rule("efficientformer", "fastvit", "metaformer")
def _token_mixer(context: Context) -> TokenGeometry:
    """EfficientFormer, FastViT, MetaFormer (CAFormer): attention token mixers global over the
    stage map."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.token_mixer").group(1))
    return map_geometry(context, stage_stride(context.model, stage), "attention over the stage map")


@rule("efficientformer_v2")
def _efficientformer_v2(context: Context) -> TokenGeometry:
    """EfficientFormerV2: global over the (stride-2 conv) stage map; the downsampling attention's
    queries on the strided grid over full-resolution keys."""
    found = context.match(r"stages\.(\d+)\.(?:blocks\.\d+\.token_mixer|downsample\.attn)")
    stage, module = int(found.group(1)), context.module
    if type(module).__name__ == "Attention2dDownsample":  # keys: the previous stage's map
        key_stride = stage_stride(context.model, stage - 1)
        keys = grid_of(context.size, key_stride)
        if keys != pair(module.resolution):
            raise _Unknown(f"resolution {module.resolution} differs from the {keys} key map")
        local = module.q.local  # queries: stride-2 3×3 conv (+ [::2] pooling), token 0 kept
        grid, offset = pooled(keys, local.kernel_size, local.stride, local.padding)
        if offset != (0.0, 0.0) or grid != pair(module.resolution2):
            raise _Unknown("query pooling does not keep token 0 in place")
        origin = (key_stride / 2, key_stride / 2)
        step = pair(local.stride)
        return TokenGeometry(
            kind="global",
            grid=grid,
            stride=(float(key_stride * step[0]), float(key_stride * step[1])),
            origin=origin,
            key_grid=keys,
            key_stride=fstride(key_stride),
            key_origin=origin,
            reason="EfficientFormerV2 downsampling attention: queries on the strided map",
        )
    stride = stage_stride(context.model, stage)
    grid = grid_of(context.size, stride)
    conv = getattr(module.stride_conv, "conv", None) if module.stride_conv is not None else None
    if conv is not None:  # attention runs on a 3×3 strided copy of the map, token 0 kept
        grid, offset = pooled(grid, conv.kernel_size, conv.stride, conv.padding)
        if offset != (0.0, 0.0):
            raise _Unknown("the strided attention map does not keep token 0 in place")
        stride *= pair(conv.stride)[0]
    if grid != pair(module.resolution):
        raise _Unknown(f"resolution {module.resolution} differs from the {grid} map")
    origin = (stage_stride(context.model, stage) / 2,) * 2
    return TokenGeometry(
        kind="global",
        grid=grid,
        stride=fstride(stride),
        origin=origin,  # type: ignore[arg-type]
        reason="EfficientFormerV2 attention over the (strided) stage map",
    )


@rule("tiny_vit")
def _tiny_vit(context: Context) -> TokenGeometry:
    """TinyViT: window attention with the block window_size (zero-padded at the border)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.attn").group(1))
    note = "TinyViT window attention (zero-padded windows at the border)"
    return window_geometry(
        context, stage_stride(context.model, stage), context.parent().window_size, note
    )


@rule("efficientvit_msra")
def _efficientvit_msra(context: Context) -> TokenGeometry:
    """EfficientViT-MSRA: windows over the stage map; maps after the first come from 3×3 /
    stride-2 / pad-1
    convolutions (``ceil`` sizes, token 0 kept in place), as the model's ``resolution``."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.mixer\.m\.attn").group(1))
    first = next(m for m in context.model.modules() if type(m).__name__ == "LocalWindowAttention")
    if grid_of(context.size, stage_stride(context.model, 0)) != pair(first.resolution):
        raise _Unknown(
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


@rule("visformer")
def _visformer(context: Context) -> TokenGeometry:
    """Visformer: global over the stage map."""
    stage = context.match(r"(stage\d)\.\d+\.attn").group(1)
    return map_geometry(
        context, info_stride(context, stage), "Visformer attention over the stage map"
    )


@rule("nextvit")
def _nextvit(context: Context) -> TokenGeometry:
    """Next-ViT: global; keys averaged over runs of N_ratio row-major tokens — known only when the
    runs stay within rows."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.e_mhsa").group(1))
    stride = stage_stride(context.model, stage)
    grid = grid_of(context.size, stride)
    ratio = int(context.module.N_ratio) if context.module.sr is not None else 1
    if ratio == 1:
        return map_geometry(context, stride, "Next-ViT attention over the stage map")
    if grid[1] % ratio:  # the 1-D pooling runs along rows and would wrap across them
        raise _Unknown(
            f"keys average runs of {ratio} row-major tokens that wrap across rows of {grid[1]}"
        )
    return map_geometry(
        context,
        stride,
        "Next-ViT attention; keys average runs of N_ratio tokens along each row",
        key_grid=(grid[0], grid[1] // ratio),
        key_stride=(float(stride), float(stride * ratio)),
    )


@rule("nest")
def _nest(context: Context) -> TokenGeometry:
    """NesT: attention within the level's non-overlapping blocks (windows)."""
    level = context.match(r"(levels\.\d+)\.transformer_encoder\.\d+\.attn").group(1)
    block = int(context.modules[level].block_size)
    note = "NesT attention within non-overlapping blocks"
    return window_geometry(context, info_stride(context, level), block, note)


@rule("pit")
def _pit(context: Context) -> TokenGeometry:
    """PiT: global over class token(s) + the stage grid from the patch-conv and pooling
    arithmetic."""
    stage = int(context.match(r"transformers\.(\d+)\.blocks\.\d+\.attn").group(1))
    model = context.model
    conv = model.patch_embed.conv
    kernel, step, padding = pair(conv.kernel_size), pair(conv.stride), pair(conv.padding)
    size = context.size
    grid = tuple((size[i] + 2 * padding[i] - kernel[i]) // step[i] + 1 for i in (0, 1))
    stride = step[0]
    for index in range(1, stage + 1):  # each later stage starts with a strided conv pooling
        pool = model.transformers[index].pool.conv
        grid, offset = pooled(grid, pool.kernel_size, pool.stride, pool.padding)  # type: ignore[arg-type]
        if offset != (0.0, 0.0):
            raise _Unknown("a PiT pooling moves token 0: stage grids are offset")
        stride *= pair(pool.stride)[0]
    return TokenGeometry(
        kind="global",
        prefix=int(model.num_tokens),
        grid=pair(grid),
        stride=fstride(stride),
        reason="PiT stage grid from the patch conv and pooling arithmetic",
    )
