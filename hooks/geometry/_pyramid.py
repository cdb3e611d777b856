"""Geometry rules of stage maps with spatially reduced, pooled or subsampled keys or queries:
PVT v2, Twins, MViTv2, LeViT, PiT, Next-ViT, Visformer, VOLO.

Each rule names the attention paths it understands; any other path of the model is
``unknown`` rather than guessed.
"""

from __future__ import annotations

import math

from torch import nn

from ._helpers import (
    fstride,
    grid_of,
    info_stride,
    map_geometry,
    pair,
    pooled,
    reduced_keys,
    stage_stride,
)
from ._registry import RULES, Context, TinyConfig, Unknown
from ._token import TokenGeometry

__all__: list[str] = []

_MVIT = dict(depths=(1, 2, 1, 1), embed_dim=24, num_heads=1)


@RULES.register(
    "pvt_v2",
    attention="pyramid",
    configs=[
        TinyConfig("pvt-v2", "pvt_v2_b0", dict(depths=(1, 1, 1, 1)), 64),
        TinyConfig(
            "pvt-v2-linear",
            "pvt_v2_b0",
            dict(depths=(1, 1, 1, 1), linear=True, embed_dims=(16, 32, 80, 128)),
            224,
        ),
    ],
)
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
            raise Unknown(
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


@RULES.register(
    "twins",
    attention="pyramid",
    configs=[
        TinyConfig(
            "twins",
            "twins_svt_small",
            dict(depths=(2, 2, 2, 2), embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8)),
            224,
            frozenset({"global", "windowed"}),
        ),
    ],
)
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


def _pool_args(pool: nn.Module) -> tuple[object, object, object]:
    return pool.kernel_size, pool.stride, pool.padding  # type: ignore[return-value]


@RULES.register(
    "mvitv2",
    attention="pyramid",
    configs=[
        TinyConfig("mvitv2", "mvitv2:MultiScaleVit", dict(cfg=_MVIT, img_size=64), 64),
        TinyConfig(
            "mvitv2-cls",
            "mvitv2:MultiScaleVit",
            dict(cfg=dict(_MVIT, use_cls_token=True), img_size=64),
            64,
        ),
    ],
)
def _mvitv2(context: Context) -> TokenGeometry:
    """MViTv2: pooling attention with query and key grids from the pooling arithmetic (stride,
    kernel, padding: positions of pooled tokens exact)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.attn").group(1))
    module = context.module
    q_step = pair(_pool_args(module.pool_q)[1]) if module.pool_q is not None else (1, 1)
    out_stride = stage_stride(context.model, stage)
    if out_stride % q_step[0] or out_stride % q_step[1]:
        raise Unknown(f"stage stride {out_stride} is not a multiple of the query pooling")
    in_stride = (out_stride // q_step[0], out_stride // q_step[1])
    in_grid = grid_of(context.size, in_stride)
    base = stage_stride(context.model, 0)
    origin = (base / 2, base / 2)
    for other in context.model.modules():  # query pooling must keep token 0 in place
        pool = getattr(other, "pool_q", None)
        if isinstance(pool, nn.Module) and pooled((1, 1), *_pool_args(pool))[1] != (0.0, 0.0):
            raise Unknown("a query pooling moves token 0: stage grids are offset")

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


@RULES.register(
    "levit",
    attention="pyramid",
    configs=[
        TinyConfig("levit", "levit_128s", dict(img_size=112), 112),
    ],
)
def _levit(context: Context) -> TokenGeometry:
    """LeViT: global over the fixed stage resolution; the downsampling attention's queries
    subsample the key grid [::2]."""
    found = context.match(r"stages\.(\d+)\.(?:blocks\.\d+\.attn|downsample\.attn_downsample)")
    stage = int(found.group(1))
    model, module = context.model, context.module
    base = stage_stride(model, 0)
    first = next(m for m in model.stages[0].modules() if hasattr(m, "resolution"))
    if grid_of(context.size, base) != pair(first.resolution):
        raise Unknown(
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
        raise Unknown("downsampling attention stride does not match feature_info")
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


@RULES.register(
    "pit",
    attention="pyramid",
    configs=[
        TinyConfig("pit", "pit_ti_224", dict(depth=(1, 1, 1)), 224),
    ],
)
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
            raise Unknown("a PiT pooling moves token 0: stage grids are offset")
        stride *= pair(pool.stride)[0]
    return TokenGeometry(
        kind="global",
        prefix=int(model.num_tokens),
        grid=pair(grid),
        stride=fstride(stride),
        reason="PiT stage grid from the patch conv and pooling arithmetic",
    )


@RULES.register(
    "nextvit",
    attention="pyramid",
    configs=[
        TinyConfig(
            "nextvit",
            "nextvit_small",
            dict(depths=(1, 1, 5, 1)),
            64,
            frozenset({"global", "unknown"}),
        ),
    ],
)
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
        raise Unknown(
            f"keys average runs of {ratio} row-major tokens that wrap across rows of {grid[1]}"
        )
    return map_geometry(
        context,
        stride,
        "Next-ViT attention; keys average runs of N_ratio tokens along each row",
        key_grid=(grid[0], grid[1] // ratio),
        key_stride=(float(stride), float(stride * ratio)),
    )


@RULES.register(
    "visformer",
    attention="pyramid",
    configs=[
        TinyConfig("visformer", "visformer_tiny", dict(depth=(1, 1, 1)), 224),
    ],
)
def _visformer(context: Context) -> TokenGeometry:
    """Visformer: global over the stage map."""
    stage = context.match(r"(stage\d)\.\d+\.attn").group(1)
    return map_geometry(
        context, info_stride(context, stage), "Visformer attention over the stage map"
    )


@RULES.register(
    "volo",
    attention="pyramid",
    configs=[
        TinyConfig(
            "volo",
            "volo:VOLO",  # volo_* fix their widths: build the class
            dict(
                layers=(1, 1, 1, 1),
                embed_dims=(32, 64, 64, 64),
                num_heads=(1, 2, 2, 2),
                img_size=64,
            ),
            64,
            frozenset({"global", "class-attention", "unknown"}),
        ),
    ],
)
def _volo(context: Context) -> TokenGeometry:
    """VOLO: transformer stages global over the stage map; class attention; outlook attention is
    unknown (overlapping k×k windows)."""
    if type(context.module).__name__ == "OutlookAttention":
        raise Unknown("outlook attention: overlapping k×k windows, one per (pooled) position")
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
