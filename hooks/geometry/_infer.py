"""The inference entry point: dispatch an attention module to its family's rule."""

from __future__ import annotations

from torch import nn

# The rule modules fill RULES when imported; importing them here, at the top, makes every
# rule registered before the first inference (and keeps the import graph acyclic).
from . import _hybrid, _plain, _pyramid, _windowed  # noqa: F401
from ._helpers import Pair, pair
from ._registry import RULES, VIT_LIKE, Context, Unknown
from ._token import TokenGeometry

__all__ = ["infer_geometry"]


def _default_size(model: nn.Module) -> Pair:
    embed = getattr(model, "patch_embed", None)
    img = getattr(embed, "img_size", None)
    if img is not None:
        return pair(img)
    image = getattr(model, "image_size", None)  # torchvision ViT
    if image is None:  # Hugging Face transformers
        image = getattr(getattr(model, "config", None), "image_size", None)
    if isinstance(image, (int, tuple, list)):
        return pair(image)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    if size:
        return (int(size[-2]), int(size[-1]))
    raise Unknown("no input size given and the model declares none")


def infer_geometry(
    model: nn.Module,
    name: str,
    module: nn.Module,
    input_size: tuple[int, int] | None = None,
) -> TokenGeometry:
    """Infer the geometry of attention module ``name`` of ``model`` from its attributes.

    Each timm family has a rule (:data:`hooks.geometry.RULES`): ViT-style models (DeiT,
    BEiT, EVA, registers), Swin v1/v2, PVT v2, Twins, MaxViT / CoAtNet, MViTv2, LeViT,
    CaiT, ConViT, XCiT and others. Anything else is ``unknown`` with the reason.

    Args:
        model: The whole model.
        name: The attention module's path in ``model``.
        module: The attention module.
        input_size: ``(height, width)`` of the input in pixels; defaults to the model's
            configured input size.
    """
    where = type(model).__module__
    if isinstance(module, nn.MultiheadAttention) and RULES.lookup(where) is None:
        return TokenGeometry.unknown(
            "nn.MultiheadAttention carries no token layout; pass geometry= explicitly"
        )
    if "AttentionPool" in type(module).__name__:
        return TokenGeometry.unknown(
            f"attention pooling ({type(module).__name__}): the pooling query has no position"
        )

    family = where.removeprefix("timm.models.")
    rule = RULES.lookup(family)
    if rule is None and not where.startswith("timm."):
        rule = RULES.lookup(VIT_LIKE)
    if rule is None:
        return TokenGeometry.unknown(
            f"no geometry rule for the timm family {family} ({type(module).__name__})"
        )
    try:
        size = pair(input_size) if input_size is not None else _default_size(model)
        context = Context(model, name, module, size, dict(model.named_modules()))
        return rule.infer(context)
    except Unknown as exc:
        return TokenGeometry.unknown(str(exc))
