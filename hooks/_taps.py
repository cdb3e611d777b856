"""Per-module taps: read (and optionally gate) attention and channel tensors in hooks.

Attention is read inside a :class:`~torch.overrides.TorchFunctionMode` scoped to the
attention module's own forward. A fused ``F.scaled_dot_product_attention`` call is
answered by the real kernel (so outputs stay bit-identical) while the probabilities are
computed explicitly from the same ``q``, ``k``, mask, causal flag and scale. An
unfused module's probabilities are what it passes to its ``attn_drop`` when that is a
row-stochastic map (e.g. ConViT's gated mixture of patch and positional attention), else
its one ``softmax`` over keys (e.g. CaiT's talking heads, whose post-softmax head mixing
is not a probability map). A forward with several such calls and no single answer
reports a problem instead of a guess. The input of the output projection
(``proj`` / ``out_proj``, seen as an ``F.linear`` call with that weight) is the per-head
context ``[..., head * head_dim]``; head gates multiply it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from ._discovery import head_count, output_projection
from ._errors import CaptureError

__all__ = ["AttentionTap", "ChannelTap", "sdpa_probabilities"]

_SDPA = torch._C._nn.scaled_dot_product_attention
_LINEAR = torch._C._nn.linear
_SOFTMAX = (torch.softmax, torch.Tensor.softmax, F.softmax, torch.nn.functional.softmax)
_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)

ProbsFn = Callable[[torch.Tensor], None]
HeadsFn = Callable[[torch.Tensor], None]


def sdpa_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """The attention probabilities ``[..., head, query, key]`` that
    ``F.scaled_dot_product_attention`` uses for these arguments (before dropout)."""
    del value, dropout_p
    q = query if query.dtype in (torch.float32, torch.float64) else query.float()
    k = key.to(q.dtype)
    if enable_gqa and k.size(-3) != q.size(-3):
        k = k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
    factor = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    logits = (q * factor) @ k.transpose(-2, -1)
    if is_causal:
        keep = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask.to(logits.dtype)
    return logits.softmax(dim=-1)


_SDPA_ARGS = tuple(inspect.signature(sdpa_probabilities).parameters)


def _dropout(args: tuple, kwargs: dict) -> bool:
    bound = dict(zip(_SDPA_ARGS, args, strict=False)) | kwargs
    return bool(bound.get("dropout_p", 0.0))


def _apply(probs: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    """``probs @ value`` as ``scaled_dot_product_attention`` returns it (value's dtype,
    grouped-query values repeated over their query heads)."""
    bound = dict(zip(_SDPA_ARGS, args, strict=False)) | kwargs
    value = bound["value"]
    if probs.size(-3) != value.size(-3):  # enable_gqa
        value = value.repeat_interleave(probs.size(-3) // value.size(-3), dim=-3)
    return (probs @ value.to(probs.dtype)).to(value.dtype)


def _output_projection(module: nn.Module) -> torch.Tensor | None:
    layer = output_projection(module)
    return None if layer is None else layer.weight


def _row_stochastic(x: torch.Tensor) -> bool:
    """Non-negative rows summing to one (within the precision of ``x``)."""
    tol = 1e-3 if x.dtype in (torch.float32, torch.float64) else 2e-2
    return bool((x >= 0).all()) and bool(((x.float().sum(-1) - 1).abs() <= tol).all())


# Attention classes whose maps put the head axis right after the batch axis rather than
# just before ``[query, key]`` (NesT ``[batch, head, block, query, key]``, VOLO outlook
# ``[batch, head, position, query, key]``).
_HEAD_AFTER_BATCH = frozenset(
    {
        "timm.models.nest.Attention",
        "timm.models.volo.OutlookAttention",
        "timm.models.hiera.MaskUnitAttention",  # [batch, head, mask unit, query, key]
    }
)


def _as_sequences(
    probs: torch.Tensor, heads: int, module: nn.Module | None = None
) -> torch.Tensor | None:
    """``[sequence, head, query, key]`` from ``[batch, ..., head, query, key]`` (Twins
    ``[batch, window, head, ...]``; NesT ``[batch, head, block, ...]``, see
    ``_HEAD_AFTER_BATCH``); the other axes flatten batch-major into sequences. A map without
    an axis of ``heads`` entries there — or heads folded into the batch axis other than as
    ``[batch · head]`` — gives ``None``."""
    if probs.dim() == 3:
        if heads == 1:
            return probs.unsqueeze(1)
        # heads folded into the batch axis (SAM, BoTNet): ``reshape(B * heads, ...)`` of a
        # ``[B, heads, ...]`` tensor, batch-major.
        return probs.reshape(-1, heads, *probs.shape[1:]) if probs.shape[0] % heads == 0 else None
    if probs.dim() < 4:
        return None
    kind = f"{type(module).__module__}.{type(module).__qualname__}" if module is not None else ""
    axis = 1 if kind in _HEAD_AFTER_BATCH else probs.dim() - 3
    if probs.shape[axis] != heads:
        return None
    moved = probs.movedim(axis, -3)
    return moved.reshape(-1, *moved.shape[-3:])


class _Mode(TorchFunctionMode):
    def __init__(self, tap: AttentionTap) -> None:
        super().__init__()
        self.tap = tap
        self.saw_sdpa = False
        self.sdpa: list[torch.Tensor] = []
        self.softmaxes: list[torch.Tensor] = []
        self.dropped: torch.Tensor | None = None

    def result(self) -> tuple[torch.Tensor | None, str]:
        """``(probabilities, source)``, or ``(None, why none)``."""
        if self.sdpa:
            if len(self.sdpa) > 1:
                return None, (
                    f"{len(self.sdpa)} scaled_dot_product_attention calls in one forward: "
                    "no single probability map"
                )
            return self.sdpa[0], "sdpa"
        dropped = self.dropped
        if dropped is not None and any(dropped.shape == s.shape for s in self.softmaxes):
            if any(dropped.data_ptr() == s.data_ptr() for s in self.softmaxes):
                return dropped, "softmax"
            if _row_stochastic(dropped):  # post-processed, e.g. a gated mixture
                return dropped, "attn_drop"
            if len(self.softmaxes) == 1:  # e.g. talking heads: mixed after the softmax
                return self.softmaxes[0], "softmax (the map applied to values is mixed)"
        if len(self.softmaxes) == 1:
            return self.softmaxes[0], "softmax"
        heads = self.tap.heads
        if len(self.softmaxes) == heads > 1 and all(  # one softmax per head (cascaded heads)
            s.dim() == 3 and s.shape == self.softmaxes[0].shape for s in self.softmaxes
        ):
            return torch.stack(self.softmaxes, dim=1), "softmax per head"
        if self.softmaxes:
            return None, (
                f"{len(self.softmaxes)} softmax calls over keys in one forward and none "
                "passed to attn_drop as a probability map"
            )
        return None, (
            "no softmax over keys and no scaled_dot_product_attention in the forward "
            "(linear or factorised attention has no query × key probabilities)"
        )

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        tap = self.tap
        if func is _SDPA:
            self.saw_sdpa = True
            if tap.on_probs is None:
                return func(*args, **kwargs)
            with torch.no_grad():
                probs = sdpa_probabilities(*args, **kwargs).detach()
            self.sdpa.append(probs)
            if tap.exact_outputs or torch.is_grad_enabled() or _dropout(args, kwargs):
                return func(*args, **kwargs)
            return _apply(probs, args, kwargs)
        if func in _SOFTMAX and tap.on_probs is not None and not self.saw_sdpa:
            out = func(*args, **kwargs)
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            if isinstance(out, torch.Tensor) and out.dim() >= 3 and dim in (-1, out.dim() - 1):
                self.softmaxes.append(out)
            return out
        if func is _LINEAR and len(args) > 1 and args[1] is tap.proj_weight is not None:
            x = args[0]
            if tap.on_heads is not None:
                with torch.no_grad():
                    tap.on_heads(x.detach())
            if tap.gate is not None:
                x = tap.apply_gate(x)
            return func(x, *args[1:], **kwargs)
        return func(*args, **kwargs)


class AttentionTap:
    """Hooks on one attention module: probabilities, per-head context and head gates.

    Args:
        module: The attention module.
        on_probs: Called with detached probabilities ``[sequence, head, query, key]``.
        on_heads: Called with the detached output-projection input ``[..., head * head_dim]``.
        on_problem: Called with the reason when a forward yields no probability map.
        gate: Per-head multipliers ``[head]`` (or ``[sample, head]``) applied to the
            per-head context.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        on_probs: ProbsFn | None = None,
        on_heads: HeadsFn | None = None,
        gate: torch.Tensor | None = None,
        on_problem: Callable[[str], None] | None = None,
        exact_outputs: bool = True,
    ) -> None:
        self.module = module
        self.exact_outputs = exact_outputs
        self.on_probs = on_probs
        self.on_heads = on_heads
        self.on_problem = on_problem
        self.source = ""
        self.gate = gate
        self.heads = head_count(module)
        self.is_mha = isinstance(module, nn.MultiheadAttention)
        self.proj_weight = module.out_proj.weight if self.is_mha else _output_projection(module)
        self._modes: list[_Mode] = []
        self._mha_calls: list[tuple[bool, bool, torch.Tensor]] = []

    def apply_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Multiply the per-head context by the gate: ``[head]`` for every sample, or
        ``[sample, head]`` per sample (the context's first axis is the sample, or the
        sample-major ``sample · window`` of windowed attention)."""
        assert self.gate is not None
        shape = x.shape
        heads = self.gate.shape[-1]
        if self.gate.dim() == 1:
            split = x.reshape(*shape[:-1], heads, shape[-1] // heads)
            return (split * self.gate[:, None]).reshape(shape)
        gate = self.gate
        samples = gate.shape[0]
        if shape[0] != samples:
            # Windowed, blocked or grid attention runs on ``[sample · window, ...]``,
            # sample-major as every window partition lays it out (Swin, MaxViT, SAM, ...).
            if shape[0] % samples:
                raise CaptureError(
                    f"{type(self.module).__name__}: a per-sample head gate of "
                    f"{samples} samples cannot gate a context of {shape[0]} sequences "
                    "(not a multiple of the samples); use a gate of shape [head]"
                )
            gate = gate.repeat_interleave(shape[0] // samples, dim=0)
        split = x.reshape(shape[0], -1, heads, shape[-1] // heads)
        return (split * gate[:, None, :, None]).reshape(shape)

    def attach(self) -> list[RemovableHandle]:
        if self.is_mha and self.gate is not None:
            raise CaptureError(
                "head gates on nn.MultiheadAttention are not supported: its output "
                "projection runs inside F.multi_head_attention_forward"
            )
        if self.on_heads is not None and self.gate is None and self.proj_weight is None:
            self.on_heads = None  # reading only: go on without per-head outputs, and say so
            if self.on_problem is not None:
                self.on_problem(
                    f"{type(self.module).__name__} has no linear output projection "
                    "(proj/out_proj): per-head outputs are unavailable"
                )
        if (self.on_heads is not None or self.gate is not None) and self.proj_weight is None:
            raise CaptureError(
                f"{type(self.module).__name__} has no linear output projection "
                "(proj/out_proj): per-head outputs and head gates are unavailable"
            )
        handles = [
            self.module.register_forward_pre_hook(self._pre, with_kwargs=True),
            self.module.register_forward_hook(self._post, with_kwargs=True, always_call=True),
        ]
        drop = getattr(self.module, "attn_drop", None)
        if isinstance(drop, nn.Module) and self.on_probs is not None and not self.is_mha:
            handles.append(drop.register_forward_hook(self._dropped))
        return handles

    def _dropped(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._modes and isinstance(output, torch.Tensor) and output.dim() >= 3:
            self._modes[-1].dropped = output

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.is_mha and self.on_probs is not None:
            bound = _MHA_SIGNATURE.bind(module, *args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            params.pop("self")
            call = (params["need_weights"], params["average_attn_weights"], params["value"])
            self._mha_calls.append(call)
            params["need_weights"] = True
            params["average_attn_weights"] = False
            args, kwargs = (), params
        mode = _Mode(self)
        mode.__enter__()
        self._modes.append(mode)
        return args, kwargs

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        mode = self._modes.pop()
        mode.__exit__(None, None, None)
        call = self._mha_calls.pop() if self.is_mha and self.on_probs is not None else None
        if output is None or self.on_probs is None:  # the forward raised, or nothing to read
            return None
        if call is not None:
            out, weights = output
            need, average, value = call
            self.source = "need_weights"
            with torch.no_grad():
                self.on_probs(weights.detach())
                if self.on_heads is not None:
                    self.on_heads(_mha_context(module, weights.detach(), value.detach()))
            if not need:
                return out, None
            return out, (weights.mean(dim=1) if average else weights)
        probs, source = mode.result()
        if probs is not None:
            sequences = _as_sequences(probs.detach(), self.heads, self.module)
            if sequences is None:
                source = (
                    f"probabilities of shape {tuple(probs.shape)} from {source} do not read "
                    f"as [sequence, {self.heads} heads, query, key]"
                )
                probs = None
            else:
                self.source = source
                with torch.no_grad():
                    self.on_probs(sequences)
        if probs is None and self.on_problem is not None:
            self.on_problem(source)
        return None

    def unwind(self) -> None:
        """Leave any mode a forward left open (only possible if a hook itself raised)."""
        while self._modes:
            self._modes.pop().__exit__(None, None, None)
        self._mha_calls.clear()


def _mha_context(
    module: nn.MultiheadAttention, probs: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """Per-head context ``[batch, query, head * head_dim]`` of ``nn.MultiheadAttention``:
    its probabilities times its projected values (the input of ``out_proj``)."""
    if not module.batch_first and value.dim() == 3:
        value = value.transpose(0, 1)
    embed = module.embed_dim
    if module.in_proj_weight is not None:
        weight = module.in_proj_weight[2 * embed :]
    else:
        weight = module.v_proj_weight
    bias = module.in_proj_bias[2 * embed :] if module.in_proj_bias is not None else None
    v = F.linear(value, weight, bias)
    batch, keys = v.shape[0], v.shape[1]
    v = v.reshape(batch, keys, module.num_heads, -1).transpose(1, 2)
    context = probs.to(v.dtype) @ v  # [batch, head, query, head_dim]
    return context.transpose(1, 2).reshape(batch, probs.shape[-2], -1)


class ChannelTap:
    """A hook reading (and optionally gating) the channels at one site.

    Args:
        module: The module read.
        point: ``output`` (forward hook) or ``input`` (forward pre-hook, first argument).
        channel_axis: ``1`` or ``-1``.
        on_channels: Called with the detached activation.
        gate: Per-channel multipliers ``[channel]`` (or ``[sample, channel]``).
    """

    def __init__(
        self,
        module: nn.Module,
        point: str,
        channel_axis: int,
        *,
        on_channels: Callable[[torch.Tensor], None] | None = None,
        gate: torch.Tensor | None = None,
    ) -> None:
        self.module, self.point, self.axis = module, point, channel_axis
        self.on_channels, self.gate = on_channels, gate

    def _process(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.on_channels is not None:
            with torch.no_grad():
                self.on_channels(x.detach())
        if self.gate is None:
            return None
        shape = [1] * x.dim()
        shape[self.axis] = -1
        if self.gate.dim() == 2:  # [sample, channel]
            shape[0] = self.gate.shape[0]
        return x * self.gate.view(shape)

    def _pre(self, module: nn.Module, args: tuple) -> tuple | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        new = self._process(args[0])
        return None if new is None else (new, *args[1:])

    def _post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            return None
        return self._process(output)

    def attach(self) -> list[RemovableHandle]:
        if self.point == "input":
            return [self.module.register_forward_pre_hook(self._pre)]
        return [self.module.register_forward_hook(self._post)]
