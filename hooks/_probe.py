"""A scoped output probe: keep what named modules return during one forward."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._discovery import match_names

__all__ = ["Probe", "first_tensor", "probe"]


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module returned, or the first element of a returned tuple/list (or of a
    Hugging Face ``ModelOutput``)."""
    if isinstance(output, torch.Tensor):
        return output
    if callable(getattr(output, "to_tuple", None)):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


@dataclass
class Probe:
    """What a :func:`probe` kept.

    Attributes:
        outputs: Module path → the first tensor its *first* call returned (a module
            called twice in one forward keeps its first output).
        versions: Module path → that tensor's ``_version`` when it was kept; a later
            in-place operation on the tensor changes ``tensor._version``.
    """

    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    def modified(self, name: str) -> bool:
        """Whether an in-place operation rewrote ``name``'s output after it was kept."""
        return self.outputs[name]._version != self.versions[name]


@contextmanager
def probe(model: nn.Module, names: Sequence[str]) -> Iterator[Probe]:
    """Keep the outputs of the modules at ``names`` while ``model`` runs in the block.

    The forward hooks are registered on entry and removed on exit, also when the block
    raises. Outputs are kept as they are (not detached), so gradients can flow from them.

    Raises:
        SelectionError: A name is not a module path of ``model`` (nearest names listed).
    """
    modules = dict(model.named_modules())
    match_names([n for n in modules if n], list(names), what="module")
    kept = Probe()
    handles = []

    try:
        for name in names:

            def keep(module: nn.Module, args: tuple, output: Any, name: str = name) -> None:
                tensor = first_tensor(output)
                if tensor is not None and name not in kept.outputs:
                    kept.outputs[name] = tensor
                    kept.versions[name] = tensor._version

            handles.append(modules[name].register_forward_hook(keep))
        yield kept
    finally:
        for handle in handles:
            handle.remove()
