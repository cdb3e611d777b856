"""Geometry rules of attention inside convolutional networks: MobileViT / BoTNet (byobnet),
EdgeNeXt, EfficientFormer / FastViT / MetaFormer, EfficientFormerV2, CSATv2, LowFormer /
CPUBone, MobileNetV4 / V5, SHViT, iFormer.

Each rule names the attention paths it understands; any other path of the model is
``unknown`` rather than guessed.
"""

from __future__ import annotations

from ._helpers import (
    block_stride,
    conv_grid,
    fstride,
    grid_of,
    info_stride,
    map_geometry,
    pair,
    pooled,
    stage_stride,
)
from ._registry import RULES, Context, TinyConfig, Unknown
from ._token import TokenGeometry

__all__: list[str] = []

_CHANNELS = "channel attention: queries and keys are channels"


def _byob_stage_stride(context: Context, stage: int) -> int:
    """Stride of ``stages.{stage}`` (the last stage is reported as ``final_conv``)."""
    try:
        return info_stride(context, f"stages.{stage}")
    except Unknown:
        if stage != len(context.model.stages) - 1:
            raise
        return info_stride(context, "final_conv")


@RULES.register(
    "byobnet",
    attention="hybrid",
    configs=[
        TinyConfig("mobilevit", "mobilevit_xxs", size=128, kinds=frozenset({"dilated"})),
    ],
)
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
            raise Unknown(f"feat_size {(embed.height, embed.width)} differs from the {grid} map")
        return TokenGeometry(
            kind="global", grid=grid, stride=fstride(stride), reason="BoTNet bottleneck attention"
        )
    if type(context.module).__name__ == "HaloAttn":
        raise Unknown("halo attention: query blocks attend to larger overlapping key windows")
    found = context.match(r"stages\.(\d+)\.\d+\.transformer\.\d+\.attn")
    block = context.parent(3)
    if type(block).__name__ != "MobileVitBlock":
        raise Unknown(f"{type(block).__name__} attention has no geometry rule")
    stride = _byob_stage_stride(context, int(found.group(1)))
    grid = grid_of(context.size, stride)
    patch = pair(block.patch_size)
    if grid[0] % patch[0] or grid[1] % patch[1]:
        raise Unknown(f"map {grid} is interpolated to a multiple of the patch {patch}")
    return TokenGeometry(
        kind="dilated",
        grid=grid,
        stride=fstride(stride),
        window=(grid[0] // patch[0], grid[1] // patch[1]),
        dilation=patch,
        reason="MobileViT: one sequence per in-patch position, tokens patch_size apart",
    )


@RULES.register(
    "edgenext",
    attention="hybrid",
    configs=[
        TinyConfig(
            "edgenext",
            "edgenext_xx_small",
            dict(depths=(1, 1, 1, 1)),
            64,
            frozenset({"channel-attention"}),
        ),
    ],
)
def _edgenext(context: Context) -> TokenGeometry:
    """EdgeNeXt: cross-covariance (channel) attention — no distance."""
    context.match(r"stages\.\d+\.blocks\.\d+\.xca")
    return TokenGeometry(kind="channel-attention", reason=f"EdgeNeXt cross-covariance {_CHANNELS}")


@RULES.register(
    "efficientformer",
    "fastvit",
    "metaformer",
    attention="hybrid",
    configs=[
        TinyConfig(
            "efficientformer",
            "efficientformer_l1",
            dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 48, 64)),
            224,
        ),
    ],
)
def _token_mixer(context: Context) -> TokenGeometry:
    """EfficientFormer, FastViT, MetaFormer (CAFormer): attention token mixers global over the
    stage map."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.token_mixer").group(1))
    return map_geometry(context, stage_stride(context.model, stage), "attention over the stage map")


@RULES.register(
    "efficientformer_v2",
    attention="hybrid",
    configs=[
        TinyConfig(
            "efficientformer-v2",
            "efficientformerv2_s0",
            dict(depths=(1, 1, 2, 2), embed_dims=(16, 32, 48, 64)),
            224,
        ),
    ],
)
def _efficientformer_v2(context: Context) -> TokenGeometry:
    """EfficientFormerV2: global over the (stride-2 conv) stage map; the downsampling attention's
    queries on the strided grid over full-resolution keys."""
    found = context.match(r"stages\.(\d+)\.(?:blocks\.\d+\.token_mixer|downsample\.attn)")
    stage, module = int(found.group(1)), context.module
    if type(module).__name__ == "Attention2dDownsample":  # keys: the previous stage's map
        key_stride = stage_stride(context.model, stage - 1)
        keys = grid_of(context.size, key_stride)
        if keys != pair(module.resolution):
            raise Unknown(f"resolution {module.resolution} differs from the {keys} key map")
        local = module.q.local  # queries: stride-2 3×3 conv (+ [::2] pooling), token 0 kept
        grid, offset = pooled(keys, local.kernel_size, local.stride, local.padding)
        if offset != (0.0, 0.0) or grid != pair(module.resolution2):
            raise Unknown("query pooling does not keep token 0 in place")
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
            raise Unknown("the strided attention map does not keep token 0 in place")
        stride *= pair(conv.stride)[0]
    if grid != pair(module.resolution):
        raise Unknown(f"resolution {module.resolution} differs from the {grid} map")
    origin = (stage_stride(context.model, stage) / 2,) * 2
    return TokenGeometry(
        kind="global",
        grid=grid,
        stride=fstride(stride),
        origin=origin,  # type: ignore[arg-type]
        reason="EfficientFormerV2 attention over the (strided) stage map",
    )


@RULES.register(
    "csatv2",
    attention="hybrid",
    configs=[
        TinyConfig(
            "csatv2",
            "csatv2",
            dict(dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), transformer_depths=(0, 0, 1, 1)),
            128,
        ),
    ],
)
def _csatv2(context: Context) -> TokenGeometry:
    """CSATv2: attention over the pooled stage map."""
    stage = context.match(r"(stages\.\d+)\.\d+\.attn").group(1)
    if type(context.parent()).__name__ != "TransformerBlock":
        raise Unknown(f"{type(context.parent()).__name__} attention has no geometry rule")
    return map_geometry(context, info_stride(context, stage), "CSATv2 attention over the stage map")


@RULES.register(
    "lowformer",
    "cpubone",
    attention="hybrid",
    configs=[
        TinyConfig(
            "lowformer",
            "lowformer_b0",
            dict(width_list=(8, 16, 32, 64, 128), depth_list=(0, 1, 1, 1, 1)),
            128,
        ),
        TinyConfig("cpubone", "cpubone_nano", size=128, kinds=frozenset({"global", "unknown"})),
    ],
)
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


@RULES.register(
    "mobilenetv3",
    "mobilenetv5",
    attention="hybrid",
    configs=[
        TinyConfig("mobilenetv4-hybrid", "mobilenetv4_hybrid_medium_075", size=64),
    ],
)
def _multi_query_2d(context: Context) -> TokenGeometry:
    """MobileNetV4 / V5 multi-query attention: queries on the stage map (avg-pooled by
    query_strides), one key / value head on the map or its strided depthwise convolution."""
    stage = int(context.match(r"blocks\.(\d+)\.\d+\.attn").group(1))
    module = context.module
    if type(module).__name__ != "MultiQueryAttention2d":
        raise Unknown(f"{type(module).__name__} has no geometry rule")
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


@RULES.register(
    "shvit",
    attention="hybrid",
    configs=[
        TinyConfig(
            "shvit",
            "shvit_s1",
            dict(embed_dim=(32, 48, 64), partial_dim=(8, 12, 16), qk_dim=(8, 8, 8)),
            224,
        ),
    ],
)
def _shvit(context: Context) -> TokenGeometry:
    """SHViT: single-head attention over the whole stage map (a slice of the channels). The
    stem gives a 16-px map; each later stage halves it with the 3×3 / stride-2 / pad-1
    convolution of its PatchMerging (``ceil`` sizes, token 0 kept in place)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.mixer\.m").group(1))
    grid, stride, origin = grid_of(context.size, 16), 16.0, 8.0
    for index in range(1, stage + 1):
        merge = context.modules[f"stages.{index}.downsample.2"]
        if type(merge).__name__ != "PatchMerging":
            raise Unknown(f"stages.{index} does not downsample with a PatchMerging")
        conv = merge.conv2.c
        grid, offset = pooled(grid, conv.kernel_size, conv.stride, conv.padding)
        origin += offset[0] * stride
        stride *= pair(conv.stride)[0]
    return TokenGeometry(
        kind="global",
        grid=grid,
        stride=(stride, stride),
        origin=(origin, origin),
        reason="SHViT single-head attention over the stage map",
    )


@RULES.register(
    "iformer",
    attention="hybrid",
    configs=[
        TinyConfig(
            "iformer",
            "iformer_t",
            {},
            224,
        ),
    ],
)
def _iformer(context: Context) -> TokenGeometry:
    """iFormer: single-head modulation attention over the stage map, or in windows of its
    ``window_size`` (zero-padded at the border)."""
    stage = int(context.match(r"stages\.(\d+)\.blocks\.\d+\.mixer\.module").group(1))
    stride = stage_stride(context.model, stage)
    window = int(getattr(context.module, "window_size", 0) or 0)
    if window:
        grid = grid_of(context.size, stride)
        return TokenGeometry(
            kind="windowed",
            grid=grid,
            stride=fstride(stride),
            window=(window, window),
            reason="iFormer modulation attention in windows (zero-padded at the border)",
        )
    return map_geometry(context, stride, "iFormer single-head modulation attention over the map")
