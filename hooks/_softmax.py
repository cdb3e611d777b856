"""Which modules compute attention: a softmax over keys, or a fused SDPA call, seen in
one forward — to tell a model without attention from attention discovery missed."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["softmax_modules"]

_SOFTMAX = (torch.softmax, torch.Tensor.softmax, F.softmax)
_SDPA = torch._C._nn.scaled_dot_product_attention


class _Seen(TorchFunctionMode):
    def __init__(self, stack: list[str], found: dict[str, str]) -> None:
        super().__init__()
        self.stack, self.found = stack, found

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.stack:
            return out
        if func is _SDPA:
            self.found.setdefault(self.stack[-1], "scaled_dot_product_attention")
        elif func in _SOFTMAX and isinstance(out, torch.Tensor) and out.dim() >= 3:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            square = out.shape[-1] > 1 and out.shape[-2] > 1  # [..., query, key]
            if dim in (-1, out.dim() - 1) and square:
                self.found.setdefault(self.stack[-1], "softmax over keys")
        return out


def softmax_modules(model: nn.Module, *args: Any, **kwargs: Any) -> dict[str, str]:
    """The innermost modules of ``model`` whose own forward computes attention in a forward
    on ``args`` (a softmax over the last axis of a ``[..., query, key]`` tensor, or
    ``F.scaled_dot_product_attention``), with what they call. Hooks and the mode are
    removed afterwards, also when the forward raises."""
    stack: list[str] = []
    found: dict[str, str] = {}
    names = {m: n for n, m in model.named_modules() if n}
    handles = []

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        # always_call: also runs when an earlier pre-hook raised before ``enter`` did
        if stack and stack[-1] == names[module]:
            stack.pop()

    for module, name in names.items():

        def enter(module: nn.Module, args: Any, name: str = name) -> None:
            stack.append(name)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))
    mode = _Seen(stack, found)
    try:
        with torch.no_grad(), mode:
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return found
