"""Geometry rules of the timm families (registered into ``hooks._families.FAMILY_RULES``).

Each rule names the attention paths it understands; any other path of the model is
``unknown`` rather than guessed.
"""

from __future__ import annotations

import math

from torch import nn

from ._families import (
    Context,
    _Unknown,
    fstride,
    grid_of,
    grid_padded,
    pair,
    pooled,
    reduced_keys,
    rule,
    stage_stride,
)
from ._geometry import TokenGeometry

__all__: list[str] = []


# -- plain ViTs: class / distillation / register tokens + one patch grid -------------------


def _patch_grid(context: Context) -> tuple[tuple[int, int], tuple[float, float]]:
    """Grid and pixel stride of ``model.patch_embed`` at the input size."""
    model = context.model
    embed = getattr(model, "patch_embed", None)
    grid = getattr(embed, "grid_size", None)
    patch = getattr(embed, "patch_size", None)
    if embed is None or grid is None or patch is None:
        raise _Unknown(f"{type(model).__name__} has no patch_embed grid")
    ratio = getattr(embed, "feat_ratio", None)
    stride = pair(ratio(as_scalar=False)) if callable(ratio) else pair(patch)
    if getattr(model, "dynamic_img_size", False):
        feat = getattr(embed, "dynamic_feat_size", None)
        if feat is None:
            raise _Unknown("dynamic image size without patch_embed.dynamic_feat_size")
        grid = feat(tuple(context.size))
    elif getattr(embed, "img_size", None) is not None and pair(embed.img_size) != context.size:
        raise _Unknown(
            f"input {context.size} differs from the fixed patch_embed.img_size {embed.img_size}"
        )
    return pair(grid), fstride(stride)


def _global(context: Context, prefix: int, note: str) -> TokenGeometry:
    grid, stride = _patch_grid(context)
    return TokenGeometry(kind="global", prefix=prefix, grid=grid, stride=stride, reason=note)


def _class_attention(context: Context, prefix: int, note: str) -> TokenGeometry:
    grid, stride = _patch_grid(context)
    return TokenGeometry(
        kind="class-attention", prefix=prefix, key_grid=grid, key_stride=stride, reason=note
    )


@rule(
    "vision_transformer",
    "deit",
    "beit",
    "eva",
    "vision_transformer_relpos",
    "vision_transformer_hybrid",
    "<vit-like>",
)
def _vit(context: Context) -> TokenGeometry:
    """ViT / DeiT / BEiT / EVA: global over num_prefix_tokens (class, distillation, registers) +
    the patch_embed grid at its pixel stride (feat_ratio; hybrid stems included)."""
    context.match(r"blocks\.\d+(\.attn)?")
    prefix = int(getattr(context.model, "num_prefix_tokens", 0) or 0)
    return _global(context, prefix, "patch_embed grid and num_prefix_tokens")


@rule("cait")
def _cait(context: Context) -> TokenGeometry:
    """CaiT: self-attention over the patches only (prefix 0); class attention (class token queries
    the patch grid)."""
    if context.name.startswith("blocks_token_only."):
        context.match(r"blocks_token_only\.\d+\.attn")
        return _class_attention(context, 1, "CaiT class attention: the class token queries")
    context.match(r"blocks\.\d+\.attn")
    return _global(context, 0, "CaiT self-attention over the patches (class token joins later)")


@rule("convit")
def _convit(context: Context) -> TokenGeometry:
    """ConViT: GPSA blocks over the patches (the gated patch/positional mixture is captured), MHSA
    blocks over class token + patches."""
    index = int(context.match(r"blocks\.(\d+)\.attn").group(1))
    local = int(context.model.local_up_to_layer)
    gpsa = type(context.module).__name__ == "GPSA"
    if gpsa != (index < local):
        raise _Unknown(f"block {index} attention {type(context.module).__name__} does not "
                       f"match local_up_to_layer={local}")  # fmt: skip
    if gpsa:
        return _global(context, 0, "ConViT GPSA over the patches (gated mixture captured)")
    return _global(context, 1, "ConViT MHSA over class token and patches")


@rule("xcit")
def _xcit(context: Context) -> TokenGeometry:
    """XCiT: cross-covariance attention is channel attention (no distance); class-attention blocks:
    the class token queries the patch grid."""
    if context.name.startswith("cls_attn_blocks."):
        context.match(r"cls_attn_blocks\.\d+\.attn")
        embed = context.model.patch_embed
        grid = grid_of(context.size, embed.patch_size)
        return TokenGeometry(
            kind="class-attention",
            prefix=1,
            key_grid=grid,
            key_stride=fstride(embed.patch_size),
            reason="XCiT class attention: the class token queries",
        )
    context.match(r"blocks\.\d+\.attn")
    return TokenGeometry(
        kind="channel-attention",
        reason="XCiT cross-covariance attention: queries and keys are channels",
    )


# -- windowed: Swin v1 / v2 / v2-cr ------------------------------------------------------


@rule("swin_transformer", "swin_transformer_v2", "swin_transformer_v2_cr")
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


# -- spatially reduced keys: PVT v2, Twins ------------------------------------------------


@rule("pvt_v2")
def _pvt_v2(context: Context) -> TokenGeometry:
    """PVT v2: global queries on the stage grid; keys on the sr×sr-reduced grid (or the 7×7
    adaptive pool of the linear variant, when it divides the grid)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.attn").group(1))
    stride = stage_stride(context.model, stage)
    grid, fs = grid_of(context.size, stride), fstride(stride)
    module = context.module
    keys: dict[str, object] = {}
    if getattr(module, "pool", None) is not None:  # linear SRA: adaptive pool to 7×7
        out = pair(module.pool.output_size)
        if grid[0] % out[0] or grid[1] % out[1]:
            raise _Unknown(
                f"adaptive pooling of a {grid} grid to {out}: uneven bins, keys have no "
                "regular grid"
            )
        step = (grid[0] // out[0], grid[1] // out[1])
        keys = {"key_grid": out, "key_stride": (fs[0] * step[0], fs[1] * step[1])}
    elif getattr(module, "sr", None) is not None:
        keys = reduced_keys(grid, fs, pair(module.sr.stride)[0])
    return TokenGeometry(
        kind="global", grid=grid, stride=fs, reason="PVT v2 spatial-reduction keys", **keys
    )  # type: ignore[arg-type]


@rule("twins")
def _twins(context: Context) -> TokenGeometry:
    """Twins: locally-grouped attention in ws×ws windows; global sub-sampled attention with
    keys reduced by sr."""
    stage = int(context.match(r"blocks\.(\d+)\.\d+\.attn").group(1))
    stride = stage_stride(context.model, stage)
    grid, fs = grid_of(context.size, stride), fstride(stride)
    module = context.module
    if type(module).__name__ == "LocallyGroupedAttn":
        return TokenGeometry(
            kind="windowed",
            grid=grid,
            stride=fs,
            window=pair(module.ws),
            reason="Twins locally-grouped attention (zero-padded windows at the border)",
        )
    return TokenGeometry(
        kind="global",
        grid=grid,
        stride=fs,
        reason="Twins global sub-sampled attention",
        **reduced_keys(grid, fs, int(module.sr_ratio)),  # type: ignore[arg-type]
    )


# -- MaxViT / CoAtNet: block (window) and grid (dilated) partitions -----------------------


@rule("maxxvit")
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
        raise _Unknown(f"grid {grid} is not a multiple of the partition {window}")
    return TokenGeometry(
        kind="dilated",
        grid=grid,
        stride=fs,
        window=window,
        dilation=(grid[0] // window[0], grid[1] // window[1]),
        reason="MaxViT grid attention: a sequence is spread over the whole map",
    )


# -- pooling attention: MViTv2 ------------------------------------------------------------


def _pool_args(pool: nn.Module) -> tuple[object, object, object]:
    return pool.kernel_size, pool.stride, pool.padding  # type: ignore[return-value]


@rule("mvitv2")
def _mvitv2(context: Context) -> TokenGeometry:
    """MViTv2: pooling attention with query and key grids from the pooling arithmetic (stride,
    kernel, padding: positions of pooled tokens exact)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.attn").group(1))
    module = context.module
    q_step = pair(_pool_args(module.pool_q)[1]) if module.pool_q is not None else (1, 1)
    out_stride = stage_stride(context.model, stage)
    if out_stride % q_step[0] or out_stride % q_step[1]:
        raise _Unknown(f"stage stride {out_stride} is not a multiple of the query pooling")
    in_stride = (out_stride // q_step[0], out_stride // q_step[1])
    in_grid = grid_of(context.size, in_stride)
    base = stage_stride(context.model, 0)
    origin = (base / 2, base / 2)
    for other in context.model.modules():  # query pooling must keep token 0 in place
        pool = getattr(other, "pool_q", None)
        if isinstance(pool, nn.Module) and pooled((1, 1), *_pool_args(pool))[1] != (0.0, 0.0):
            raise _Unknown("a query pooling moves token 0: stage grids are offset")

    def grid_at(pool: nn.Module | None) -> tuple[tuple[int, int], tuple[float, float], tuple]:
        if pool is None:
            return in_grid, (float(in_stride[0]), float(in_stride[1])), origin
        kernel, step, padding = _pool_args(pool)
        out, offset = pooled(in_grid, kernel, step, padding)
        s = pair(step)
        position = (origin[0] + offset[0] * in_stride[0], origin[1] + offset[1] * in_stride[1])
        return out, (float(in_stride[0] * s[0]), float(in_stride[1] * s[1])), position

    q_grid, q_stride, q_origin = grid_at(module.pool_q)
    k_grid, k_stride, k_origin = grid_at(module.pool_k)
    return TokenGeometry(
        kind="global",
        prefix=1 if module.has_cls_token else 0,
        grid=q_grid,
        stride=q_stride,
        origin=q_origin,
        key_grid=k_grid,
        key_stride=k_stride,
        key_origin=k_origin,
        reason="MViTv2 pooling attention: pooled query and key grids",
    )


# -- LeViT: fixed resolutions, subsampled queries in the downsampling attention -----------


@rule("levit")
def _levit(context: Context) -> TokenGeometry:
    """LeViT: global over the fixed stage resolution; the downsampling attention's queries
    subsample the key grid [::2]."""
    found = context.match(r"stages\.(\d+)\.(?:blocks\.\d+\.attn|downsample\.attn_downsample)")
    stage = int(found.group(1))
    model, module = context.model, context.module
    base = stage_stride(model, 0)
    first = next(m for m in model.stages[0].modules() if hasattr(m, "resolution"))
    if grid_of(context.size, base) != pair(first.resolution):
        raise _Unknown(
            f"input {context.size} does not give the model's fixed stage-0 resolution "
            f"{first.resolution}"
        )
    origin = (base / 2, base / 2)  # subsampling [::2] and 3×3 pooling keep token 0 in place
    resolution = pair(module.resolution)
    if type(module).__name__ != "AttentionDownsample":
        stride = fstride(stage_stride(model, stage))
        return TokenGeometry(
            kind="global",
            grid=resolution,
            stride=stride,
            origin=origin,
            reason="LeViT attention (resolution attribute, feature_info stride)",
        )
    step = int(module.stride)
    key_stride = stage_stride(model, stage - 1)
    if stage_stride(model, stage) != key_stride * step:
        raise _Unknown("downsampling attention stride does not match feature_info")
    return TokenGeometry(
        kind="global",
        grid=(math.ceil(resolution[0] / step), math.ceil(resolution[1] / step)),
        stride=fstride(key_stride * step),
        origin=origin,
        key_grid=resolution,
        key_stride=fstride(key_stride),
        key_origin=origin,
        reason="LeViT downsampling attention: queries subsampled [::stride]",
    )
