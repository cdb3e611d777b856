"""Attention rollout (Abnar & Zuidema 2020; METRICS.md §6), an optional view.

Each layer's attention, averaged over heads, is mixed with the identity for the residual
path and renormalised by rows: ``Ã = (mean_h A + I) / rowsum``. Rollout is the product
``R = Ã_L … Ã_1``; row ``q`` of ``R`` is how much each input token reaches output ``q``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["attention_rollout"]


def attention_rollout(attentions: Sequence[np.ndarray]) -> np.ndarray:
    """Roll attention out through the layers, first layer first.

    Args:
        attentions: One ``[..., head, query, key]`` array per layer (``query == key``,
            all tokens, same shape for every layer), in forward order.

    Returns:
        ``[..., query, key]`` rollout ``Ã_L … Ã_1``; rows sum to 1.
    """
    if len(attentions) == 0:
        raise ValueError("attention_rollout needs at least one layer")
    shape = np.shape(attentions[0])
    if len(shape) < 3 or shape[-1] != shape[-2]:
        raise ValueError(f"each layer must be [..., head, token, token], got {shape}")
    identity = np.eye(shape[-1])
    rollout = identity
    for index, attention in enumerate(attentions):
        attention = np.asarray(attention, dtype=np.float64)
        if attention.shape != shape:
            raise ValueError(f"layer {index} has shape {attention.shape}, layer 0 {shape}")
        mixed = attention.mean(-3) + identity
        mixed = mixed / mixed.sum(-1, keepdims=True)
        # The later layer multiplies from the left: R_l = Ã_l R_{l-1}.
        rollout = mixed @ rollout
    return rollout
