"""The registry of geometry rules: one object, filled by the ``@RULES.register`` decorator.

A rule reads what the model declares — ``patch_embed`` grids, ``feature_info``
reductions, window / shift / partition sizes, pooling and spatial-reduction layers,
``num_prefix_tokens`` — and the input size, and returns a :class:`TokenGeometry`. It
never guesses: anything it cannot read exactly (an input that is not a multiple of a
stage stride, an unregistered family) raises :class:`Unknown` with the reason, and the
layer's geometry is ``unknown``. The capture then checks every geometry against the
query, key and sequence counts it sees.

Rules are keyed by timm family: the module that defines the model class
(``type(model).__module__`` without ``timm.models.``). Dispatch is one dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from torch import nn

from .._errors import HookError
from ._token import GeometryKind, TokenGeometry

__all__ = [
    "ATTENTION_KINDS",
    "RULES",
    "VIT_LIKE",
    "AttentionKind",
    "Context",
    "DuplicateRuleError",
    "Rule",
    "RuleFunction",
    "RuleRegistry",
    "TinyConfig",
    "Unknown",
]

Pair = tuple[int, int]

AttentionKind = Literal["plain", "windowed", "pyramid", "hybrid"]
"""How a family attends, which is also the module its rule lives in
(``hooks/geometry/_{kind}.py``): ``plain`` — ViT-like global attention over one patch grid
(class and channel attention included); ``windowed`` — windows, grids and blocks of the map;
``pyramid`` — stage maps with spatially reduced, pooled or subsampled keys or queries;
``hybrid`` — attention inside convolutional networks."""

ATTENTION_KINDS: tuple[str, ...] = get_args(AttentionKind)

VIT_LIKE = "<vit-like>"
"""The family of models not defined by timm: they get the rule registered for it (a ViT's)."""


class Unknown(Exception):
    """Raised inside a rule: the geometry cannot be read exactly (the message says why).

    :func:`hooks.geometry.infer_geometry` turns it into ``TokenGeometry.unknown(message)``.
    """


class DuplicateRuleError(HookError, ValueError):
    """A rule name or a family was registered twice."""


@dataclass(frozen=True)
class Context:
    """What a rule sees.

    Attributes:
        model: The whole model.
        name: The attention module's path.
        module: The attention module.
        size: Input ``(height, width)`` in pixels.
        modules: ``model.named_modules()`` as a dict.
    """

    model: nn.Module
    name: str
    module: nn.Module
    size: Pair
    modules: dict[str, nn.Module]

    def parent(self, up: int = 1) -> nn.Module:
        """The module ``up`` levels above the attention module (the model at the top)."""
        path = self.name.rsplit(".", up)[0] if self.name.count(".") >= up else ""
        return self.modules[path]

    def match(self, pattern: str) -> re.Match[str]:
        """Match the attention path against ``pattern`` (whole path).

        Raises:
            Unknown: The path is not one the rule understands.
        """
        found = re.fullmatch(pattern, self.name)
        if found is None:
            raise Unknown(f"{self.name} is not where this family's rule expects attention")
        return found


RuleFunction = Callable[[Context], TokenGeometry]


@dataclass(frozen=True)
class TinyConfig:
    """A tiny, randomly initialised timm model that exercises a rule (the families test tier).

    Attributes:
        id: Test id, unique over all rules (``swin``, ``pvt-v2-linear``).
        model: A timm model name for ``timm.create_model(model, pretrained=False, **kwargs)``,
            or ``"module:Class"`` for a class of ``timm.models.<module>`` built directly as
            ``Class(**kwargs)`` (a ``cfg`` dict becomes that module's ``<Class>Cfg``).
        kwargs: Keyword arguments that make the model tiny.
        size: Input side in pixels; ``None``: the model's ``pretrained_cfg`` input size.
        kinds: Geometry kinds every attention layer of this model must get.
    """

    id: str
    model: str
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    size: int | None = None
    kinds: frozenset[GeometryKind] = frozenset({"global"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "kinds", frozenset(self.kinds))
        unknown = set(self.kinds) - set(get_args(GeometryKind))
        if unknown:
            raise ValueError(f"tiny config {self.id}: unknown geometry kinds {sorted(unknown)}")


@dataclass(frozen=True)
class Rule:
    """One registered geometry rule and what it covers.

    Attributes:
        name: The rule's name (unique; its function's name without leading underscores).
        families: timm families (modules defining the model class) it is dispatched for.
        attention: The kind of attention it reads (see :data:`AttentionKind`).
        configs: Tiny timm configurations that test it.
        infer: The rule itself.
    """

    name: str
    families: tuple[str, ...]
    attention: AttentionKind
    configs: tuple[TinyConfig, ...]
    infer: RuleFunction = field(repr=False)

    @property
    def summary(self) -> str:
        """The rule's docstring on one line."""
        return " ".join((self.infer.__doc__ or self.name).split())

    @property
    def kinds(self) -> frozenset[GeometryKind]:
        """Geometry kinds its tiny configs exercise."""
        return frozenset().union(*(config.kinds for config in self.configs))

    def __call__(self, context: Context) -> TokenGeometry:
        return self.infer(context)


class RuleRegistry:
    """Geometry rules by name and by the timm family they are dispatched for.

    Register with the decorator :meth:`register` (or :meth:`add`); a name or family
    registered twice raises :class:`DuplicateRuleError`. Iterating yields the
    :class:`Rule` objects in registration order; :meth:`lookup` is the dispatch.

    Example:
        >>> @RULES.register("my_family", attention="plain", configs=[TinyConfig("mine", "my_vit")])
        ... def _my_family(context: Context) -> TokenGeometry: ...
    """

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        self._families: dict[str, Rule] = {}

    def add(self, rule: Rule) -> Rule:
        """Add ``rule``.

        Raises:
            DuplicateRuleError: Its name or one of its families is already registered.
        """
        if rule.name in self._rules:
            raise DuplicateRuleError(
                f"a geometry rule named {rule.name!r} is already registered; "
                "give the new rule another name"
            )
        for family in rule.families:
            if family in self._families:
                raise DuplicateRuleError(
                    f"two geometry rules for the family {family!r}: "
                    f"{self._families[family].name!r} and {rule.name!r}; extend the existing "
                    "rule instead"
                )
        if not rule.families:
            raise ValueError(f"rule {rule.name!r} names no family")
        if len(set(rule.families)) != len(rule.families):
            raise DuplicateRuleError(f"rule {rule.name!r} names a family twice: {rule.families}")
        if rule.attention not in ATTENTION_KINDS:
            raise ValueError(
                f"rule {rule.name!r}: attention {rule.attention!r} is not one of {ATTENTION_KINDS}"
            )
        ids = {config.id for other in self._rules.values() for config in other.configs}
        for config in rule.configs:
            if config.id in ids:
                raise DuplicateRuleError(
                    f"rule {rule.name!r}: tiny config id {config.id!r} is taken"
                )
            ids.add(config.id)
        self._rules[rule.name] = rule
        for family in rule.families:
            self._families[family] = rule
        return rule

    def register(
        self,
        *families: str,
        attention: AttentionKind,
        configs: Sequence[TinyConfig] = (),
        name: str | None = None,
    ) -> Callable[[RuleFunction], RuleFunction]:
        """Decorator: register the decorated function as the rule of ``families``.

        Args:
            families: timm families (``type(model).__module__`` without ``timm.models.``).
            attention: The kind of attention the rule reads.
            configs: Tiny timm configurations that test it (the families tier requires one).
            name: The rule's name; default: the function's name without leading underscores.
        """

        def decorate(fn: RuleFunction) -> RuleFunction:
            rule_name = name or getattr(fn, "__name__", "").lstrip("_")
            self.add(Rule(rule_name, tuple(families), attention, tuple(configs), fn))
            return fn

        return decorate

    def lookup(self, family: str) -> Rule | None:
        """The rule dispatched for ``family``, or ``None``."""
        return self._families.get(family)

    def __getitem__(self, name: str) -> Rule:
        """The rule named ``name``."""
        try:
            return self._rules[name]
        except KeyError:
            raise KeyError(
                f"no geometry rule named {name!r}; rules: {sorted(self._rules)}"
            ) from None

    @property
    def families(self) -> Mapping[str, Rule]:
        """Family → rule (read-only)."""
        return MappingProxyType(self._families)

    def __iter__(self) -> Iterator[Rule]:
        return iter(list(self._rules.values()))

    def __len__(self) -> int:
        return len(self._rules)

    def __contains__(self, name: object) -> bool:
        return name in self._rules

    def __repr__(self) -> str:
        return f"RuleRegistry({len(self._rules)} rules, {len(self._families)} families)"


RULES = RuleRegistry()
"""The geometry rules :func:`hooks.geometry.infer_geometry` dispatches to."""
