"""Find attention modules and channel layers in any module tree, and select them by glob.

One vocabulary: a layer is named by its ``named_modules()`` path (``blocks.3.attn``);
that path is the selector, the run-file group, the analyzer key and the report label.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ._errors import SelectionError

__all__ = [
    "ChannelSite",
    "find_attention",
    "find_blocks",
    "find_channels",
    "gateable_heads",
    "head_count",
    "head_width",
    "match_names",
    "output_projection",
]

ChannelKind = Literal["conv", "norm", "mlp", "linear"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM_FIRST = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)


@dataclass(frozen=True)
class ChannelSite:
    """Where a channel layer's activations are read.

    Attributes:
        name: The layer's path; for MLP hidden layers the MLP's second projection,
            whose *input* is the hidden activation (after the nonlinearity).
        kind: ``conv``, ``norm``, ``mlp`` (MLP hidden layer) or ``linear`` (any other
            ``nn.Linear``, read at its output; selected only by name, never by ``auto``).
        point: ``output`` or ``input`` of the module at ``name``.
        channel_axis: ``1`` for ``[batch, channel, ...]``, ``-1`` for ``[..., channel]``.
    """

    name: str
    kind: ChannelKind
    point: Literal["input", "output"]
    channel_axis: int


# Class names of attention modules: timm's *Attention*, *Attn* (Twins, CaiT), ConViT's
# GPSA / MHSA and XCiT's XCA. Lambda layers, SE / CBAM "attention" and blocks do not match
# (or have no ``num_heads`` / projection children).
_ATTENTION_NAME = re.compile(r"Attention|Attn|MHSA|GPSA|XCA")
_PROJECTIONS = (
    "qkv", "q", "k", "v", "kv", "qk", "proj", "out_proj", "o_proj", "q_proj", "k_proj",
    "v_proj", "qkv_proj", "to_qkv", "query", "key", "value",
)  # fmt: skip


# Single-head softmax attention with no head attribute: SHViT's SHSA, iFormer's SHMA.
_SINGLE_HEAD = re.compile(r"^(SHSA|SHMA)$")


def head_count(module: nn.Module) -> int:
    """Heads of an attention module: ``num_heads``, else ``heads`` (Hiera's
    ``MaskUnitAttention``), else ``num_attention_heads`` (Hugging Face), else 1 for the
    single-head classes (``SHSA``, ``SHMA``); 0 when none of these apply."""
    for attribute in ("num_heads", "heads", "num_attention_heads"):
        heads = getattr(module, attribute, None)
        if isinstance(heads, int) and not isinstance(heads, bool) and heads > 0:
            return heads
    return 1 if _SINGLE_HEAD.match(type(module).__name__) else 0


def _is_attention(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return True
    name = type(module).__name__
    if not head_count(module) or not (_ATTENTION_NAME.search(name) or _SINGLE_HEAD.match(name)):
        return False
    children = dict(module.named_children())
    return any(k in children for k in _PROJECTIONS)


def find_attention(model: nn.Module) -> dict[str, nn.Module]:
    """Attention modules of ``model`` by path: classes named like attention (``*Attention*``,
    ``*Attn*``, ``MHSA``, ``GPSA``, ``XCA``, ``SHSA``, ``SHMA``) with a head count
    (:func:`head_count`: ``num_heads``, ``heads``, single-head classes) and projection
    children (``qkv``, ``q``/``k``/``v``, ``proj``, ``o_proj``, ``query``, ...), and
    ``nn.MultiheadAttention``.
    Only the innermost such module is kept when they nest."""
    found = {name: m for name, m in model.named_modules() if _is_attention(m)}
    return {
        name: m
        for name, m in found.items()
        if not any(
            (other != name and other.startswith(name + ".")) or (not name and other)
            for other in found
        )
    }


# Residual blocks by class name: timm's ``*Block`` (ViT, Swin, ConvNeXt, ...), ResNet's
# ``Bottleneck`` / ``BasicBlock``, MobileNet/EfficientNet ``InvertedResidual`` and
# ``DepthwiseSeparableConv``.
_BLOCK_SUFFIXES = (
    "Block",
    "Bottleneck",
    "BasicBlock",
    "InvertedResidual",
    "DepthwiseSeparableConv",
)


def find_blocks(model: nn.Module) -> list[str]:
    """Paths of the outermost residual blocks of ``model``, in model order (classes named
    ``*Block``, ``*Bottleneck``, ``*BasicBlock``, ``*InvertedResidual``,
    ``*DepthwiseSeparableConv``); empty for a model without such blocks."""
    blocks = [
        n for n, m in model.named_modules() if n and type(m).__name__.endswith(_BLOCK_SUFFIXES)
    ]
    return [n for n in blocks if not any(n.startswith(b + ".") for b in blocks if b != n)]


def output_projection(module: nn.Module) -> nn.Linear | None:
    """The linear output projection of an attention module (``proj``, ``out_proj`` or
    ``o_proj``), whose input is the per-head context ``[..., head * head_dim]``."""
    for child in ("proj", "out_proj", "o_proj"):
        layer = getattr(module, child, None)
        if isinstance(layer, nn.Linear):
            return layer
    return None


def head_width(module: nn.Module) -> int | None:
    """Width of one head's context (``head_dim``): the output projection's input width
    divided by the number of heads; ``None`` when it has no such projection."""
    projection = output_projection(module)
    heads = head_count(module)
    if projection is None or heads < 1:
        return None
    width, rest = divmod(projection.in_features, heads)
    return width if rest == 0 else None


def gateable_heads(model: nn.Module) -> dict[str, int]:
    """Attention modules whose heads ``hooks.gates`` can scale, with their head counts:
    those with a linear output projection, except ``nn.MultiheadAttention`` (its
    projection runs inside ``F.multi_head_attention_forward``)."""
    return {
        name: head_count(module)
        for name, module in find_attention(model).items()
        if not isinstance(module, nn.MultiheadAttention) and output_projection(module) is not None
    }


def _channels_first_norm(module: nn.Module) -> bool:
    # timm's LayerNorm2d / LayerNormAct2d normalise [B, C, H, W] over C.
    return isinstance(module, _NORM_FIRST) or type(module).__name__.endswith("2d")


def find_channels(model: nn.Module) -> dict[str, ChannelSite]:
    """Channel layers of ``model`` by path: convolutions, normalisation layers, MLP
    hidden layers (modules with ``fc1`` and ``fc2`` children, read at ``fc2``'s input,
    after the nonlinearity, also when ``fc1``/``fc2`` are 1x1 convolutions) and every
    other ``nn.Linear`` (``linear``, its output; for MLPs named otherwise, chosen by glob
    with ``--layers``/``layers=``)."""
    sites: dict[str, ChannelSite] = {}
    hidden: dict[str, ChannelSite] = {}
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, _CONV):
            sites[name] = ChannelSite(name, "conv", "output", 1)
        elif isinstance(module, (nn.LayerNorm, *_NORM_FIRST)) or (
            "Norm" in type(module).__name__ and hasattr(module, "weight")
        ):
            axis = 1 if _channels_first_norm(module) else -1
            sites[name] = ChannelSite(name, "norm", "output", axis)
        children = dict(module.named_children())
        fc2 = children.get("fc2")
        if "fc1" in children or "fc1_g" in children:
            if isinstance(fc2, nn.Linear):
                hidden[name] = ChannelSite(f"{name}.fc2", "mlp", "input", -1)
            elif isinstance(fc2, nn.Conv2d):
                hidden[name] = ChannelSite(f"{name}.fc2", "mlp", "input", 1)
        if isinstance(module, nn.Linear) and name not in sites:  # fc2 becomes an MLP site
            sites[name] = ChannelSite(name, "linear", "output", -1)
    # The hidden layer of an MLP is read at fc2's input, after the nonlinearity; it
    # replaces fc2's own site. A conv MLP (ConvNeXt's conv_mlp, ...) has 1x1 convolutions
    # as fc1 and fc2: fc1's conv site (its pre-activation output) would duplicate the
    # hidden layer and goes (a linear fc1 stays a ``linear`` site, chosen only by name).
    for name, site in hidden.items():
        if name + ".fc1" in sites and sites[name + ".fc1"].kind == "conv":
            del sites[name + ".fc1"]
        sites[site.name] = site
    return sites


def _as_patterns(patterns: str | Sequence[str]) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def match_names(names: Iterable[str], patterns: str | Sequence[str], *, what: str) -> list[str]:
    """Names matching any of the glob ``patterns``, in the order given.

    Raises:
        SelectionError: A pattern matches none of ``names``; the message lists the
            nearest real names.
    """
    names = list(names)
    chosen: set[str] = set()
    for pattern in _as_patterns(patterns):
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            near = difflib.get_close_matches(pattern, names, n=5, cutoff=0.3) or names[:5]
            listed = ", ".join(near) if near else "none"
            raise SelectionError(
                f"{what} selection {pattern!r} matches none of the {len(names)} {what} "
                f"layers; nearest: {listed}"
            )
        chosen.update(hits)
    return [n for n in names if n in chosen]
