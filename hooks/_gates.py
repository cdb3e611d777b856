"""Gates: multiply heads or channels by given factors while a model runs.

A gate of ones changes nothing but makes ``∂L/∂gate`` the unit's importance
(Michel et al. 2019); zeros remove units (pruning curves).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from ._discovery import find_attention, find_channels, head_count, match_names
from ._errors import CaptureError
from ._taps import AttentionTap, ChannelTap

__all__ = ["gates"]


@contextmanager
def gates(
    model: nn.Module,
    *,
    heads: Mapping[str, torch.Tensor] | None = None,
    channels: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[None]:
    """Multiply each named attention module's heads and channel layer's channels.

    Args:
        model: The model.
        heads: Attention path → gate ``[head]`` or ``[sample, head]``.
        channels: Channel-layer path → gate ``[channel]`` or ``[sample, channel]``.

    Raises:
        SelectionError: A path is not an attention module / channel layer of ``model``.
        CaptureError: A gate's length does not match the layer.
    """
    modules = dict(model.named_modules())
    handles = []
    try:
        if heads:
            attention = find_attention(model)
            match_names(attention, list(heads), what="attention")
            for name, gate in heads.items():
                module = attention[name]
                if gate.shape[-1] != head_count(module) or gate.dim() > 2:
                    raise CaptureError(
                        f"{name}: head gate of shape {tuple(gate.shape)}, the module has "
                        f"{head_count(module)} heads"
                    )
                handles.extend(AttentionTap(module, gate=gate).attach())
        if channels:
            sites = find_channels(model)
            match_names(sites, list(channels), what="channel")
            for name, gate in channels.items():
                site = sites[name]
                handles.extend(
                    ChannelTap(modules[name], site.point, site.channel_axis, gate=gate).attach()
                )
        yield
    finally:
        for handle in handles:
            handle.remove()
