"""Geometry rules of ViT-like global attention over one patch grid: ViT / DeiT / BEiT / EVA,
CaiT and XCiT (class and channel attention), ConViT, TNT, CrossViT.

Each rule names the attention paths it understands; any other path of the model is
``unknown`` rather than guessed.
"""

from __future__ import annotations

import re

from ._helpers import (
    fstride,
    grid_of,
    pair,
)
from ._registry import RULES, VIT_LIKE, Context, TinyConfig, Unknown
from ._token import TokenGeometry

__all__: list[str] = []


def _patch_grid(context: Context) -> tuple[tuple[int, int], tuple[float, float]]:
    """Grid and pixel stride of ``model.patch_embed`` at the input size."""
    model = context.model
    embed = getattr(model, "patch_embed", None)
    grid = getattr(embed, "grid_size", None)
    patch = getattr(embed, "patch_size", None)
    if embed is None or grid is None or patch is None:
        raise Unknown(f"{type(model).__name__} has no patch_embed grid")
    ratio = getattr(embed, "feat_ratio", None)
    stride = pair(ratio(as_scalar=False)) if callable(ratio) else pair(patch)
    if getattr(model, "dynamic_img_size", False):
        feat = getattr(embed, "dynamic_feat_size", None)
        if feat is None:
            raise Unknown("dynamic image size without patch_embed.dynamic_feat_size")
        grid = feat(tuple(context.size))
    elif getattr(embed, "img_size", None) is not None and pair(embed.img_size) != context.size:
        raise Unknown(
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


@RULES.register(
    "vision_transformer",
    "deit",
    "beit",
    "eva",
    "vision_transformer_relpos",
    "vision_transformer_hybrid",
    VIT_LIKE,
    attention="plain",
    configs=[
        TinyConfig("vit", "test_vit"),
        TinyConfig("vit-registers", "test_vit2"),
        TinyConfig(
            "deit-distilled", "deit_tiny_distilled_patch16_224", dict(depth=2, img_size=64), 64
        ),
        TinyConfig(
            "beit",
            "beit_base_patch16_224",
            dict(depth=2, embed_dim=64, num_heads=2, img_size=64),
            64,
        ),
        TinyConfig("eva-rope", "eva02_tiny_patch14_224", dict(depth=2, img_size=56), 56),
        TinyConfig("vit-relpos", "test_vit_relpos"),
    ],
)
def _vit(context: Context) -> TokenGeometry:
    """ViT / DeiT / BEiT / EVA: global over num_prefix_tokens (class, distillation, registers) +
    the patch_embed grid at its pixel stride (feat_ratio; hybrid stems included)."""
    context.match(r"blocks\.\d+(\.attn)?")
    prefix = int(getattr(context.model, "num_prefix_tokens", 0) or 0)
    return _global(context, prefix, "patch_embed grid and num_prefix_tokens")


@RULES.register(
    "cait",
    attention="plain",
    configs=[
        TinyConfig(
            "cait",
            "cait_xxs24_224",
            dict(depth=2, img_size=64),
            64,
            frozenset({"global", "class-attention"}),
        ),
    ],
)
def _cait(context: Context) -> TokenGeometry:
    """CaiT: self-attention over the patches only (prefix 0); class attention (class token queries
    the patch grid)."""
    if context.name.startswith("blocks_token_only."):
        context.match(r"blocks_token_only\.\d+\.attn")
        return _class_attention(context, 1, "CaiT class attention: the class token queries")
    context.match(r"blocks\.\d+\.attn")
    return _global(context, 0, "CaiT self-attention over the patches (class token joins later)")


@RULES.register(
    "convit",
    attention="plain",
    configs=[
        TinyConfig("convit", "convit_tiny", dict(depth=4, local_up_to_layer=2, img_size=64), 64),
    ],
)
def _convit(context: Context) -> TokenGeometry:
    """ConViT: GPSA blocks over the patches (the gated patch/positional mixture is captured), MHSA
    blocks over class token + patches."""
    index = int(context.match(r"blocks\.(\d+)\.attn").group(1))
    local = int(context.model.local_up_to_layer)
    gpsa = type(context.module).__name__ == "GPSA"
    if gpsa != (index < local):
        raise Unknown(f"block {index} attention {type(context.module).__name__} does not "
                       f"match local_up_to_layer={local}")  # fmt: skip
    if gpsa:
        return _global(context, 0, "ConViT GPSA over the patches (gated mixture captured)")
    return _global(context, 1, "ConViT MHSA over class token and patches")


@RULES.register(
    "xcit",
    attention="plain",
    configs=[
        TinyConfig(
            "xcit",
            "xcit_nano_12_p16_224",
            dict(depth=2, img_size=64),
            64,
            frozenset({"channel-attention", "class-attention"}),
        ),
    ],
)
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


@RULES.register(
    "tnt",
    attention="plain",
    configs=[
        TinyConfig(
            "tnt", "tnt_s_patch16_224", dict(depth=2), 224, frozenset({"global", "windowed"})
        ),
    ],
)
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
        raise Unknown("pixel tokens do not tile the patch exactly")
    return TokenGeometry(
        kind="windowed",
        grid=(patches[0] * inner[0], patches[1] * inner[1]),
        stride=fstride(step),
        window=inner,
        reason="TNT inner attention among the pixel tokens of one patch",
    )


@RULES.register(
    "crossvit",
    attention="plain",
    configs=[
        TinyConfig(
            "crossvit",
            "crossvit_tiny_240",
            dict(embed_dim=(24, 48), num_heads=(1, 2), depth=((1, 1, 0), (1, 1, 0), (1, 1, 0))),
            240,
            frozenset({"global", "class-attention"}),
        ),
    ],
)
def _crossvit(context: Context) -> TokenGeometry:
    """CrossViT: two branches on rescaled copies of the input; the fusion is class
    attention of one branch's class token over the other branch's patches."""
    model = context.model
    found = re.fullmatch(r"blocks\.\d+\.(?:blocks\.(\d+)\.\d+|fusion\.(\d+))\.attn", context.name)
    if found is None:
        raise Unknown(f"{context.name} is not where this family's rule expects attention")
    if context.size != pair(model.img_size) or getattr(model, "crop_scale", False):
        raise Unknown(f"input {context.size} is not the model's img_size {model.img_size}")
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


@RULES.register(
    "torchvision.models.vision_transformer",
    attention="plain",
    configs=[
        TinyConfig(
            "torchvision-vit",
            "torchvision.models.vision_transformer:VisionTransformer",
            dict(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32,
                 mlp_dim=64),
            64,
        ),
    ],
)  # fmt: skip
def _torchvision_vit(context: Context) -> TokenGeometry:
    """torchvision ViT (``vit_b_16``, ``vit_b_32``, ...; ``nn.MultiheadAttention``): global
    over the class token + the ``image_size / patch_size`` grid at ``patch_size`` px."""
    context.match(r"encoder\.layers\.encoder_layer_\d+\.self_attention")
    model = context.model
    patch, image = int(model.patch_size), int(model.image_size)
    if context.size != (image, image):
        raise Unknown(f"input {context.size} differs from the model's image_size {image}")
    grid = grid_of(context.size, patch)
    return TokenGeometry(
        kind="global", prefix=1, grid=grid, stride=fstride(patch), reason="torchvision ViT"
    )


def _hf(model_module: str, model: str, **config: object) -> TinyConfig:
    return TinyConfig(
        f"hf-{model_module.split('.')[2]}",
        f"{model_module}:{model}",
        dict(config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         **config)),
        32,
    )  # fmt: skip


_HF_PREFIX = {"vit": 1, "deit": 2, "dinov2": 1}  # class (+ distillation) token


@RULES.register(
    "transformers.models.vit.modeling_vit",
    "transformers.models.deit.modeling_deit",
    "transformers.models.dinov2.modeling_dinov2",
    attention="plain",
    configs=[
        _hf("transformers.models.vit.modeling_vit", "ViTModel"),
        _hf("transformers.models.deit.modeling_deit", "DeiTModel"),
        _hf("transformers.models.dinov2.modeling_dinov2", "Dinov2Model"),
    ],
)
def _transformers_vit(context: Context) -> TokenGeometry:
    """Hugging Face ``transformers`` ViT / DeiT / DINOv2 (SDPA or eager attention): global
    over the class token (DeiT: + distillation token) + the ``patch_size`` grid of the
    input (DINOv2 interpolates its position embeddings to any multiple of the patch)."""
    model = context.model
    config = model.config
    family = type(model).__module__.split(".")[2]
    patch = int(config.patch_size)
    if family != "dinov2" and context.size != pair(config.image_size):
        raise Unknown(f"input {context.size} differs from config.image_size {config.image_size}")
    prefix = _HF_PREFIX[family]
    return TokenGeometry(
        kind="global",
        prefix=prefix,
        grid=grid_of(context.size, patch),
        stride=fstride(patch),
        reason=f"transformers {family}: config.patch_size grid and {prefix} prefix token(s)",
    )
