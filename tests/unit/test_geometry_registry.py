"""The geometry rule registry (``hooks.geometry``): registration, clashes, dispatch, metadata."""

from __future__ import annotations

import pytest
import timm
from torch import nn

import hooks
import hooks.geometry as geometry
from hooks.geometry import (
    RULES,
    Context,
    DuplicateRuleError,
    RuleRegistry,
    TinyConfig,
    TokenGeometry,
    Unknown,
)


def _fixed(context: Context) -> TokenGeometry:
    """A fixed 2×2 grid."""
    return TokenGeometry(kind="global", grid=(2, 2), stride=(16.0, 16.0))


def test_register_is_a_decorator_that_returns_the_rule_unchanged() -> None:
    registry = RuleRegistry()
    decorated = registry.register(
        "fam_a", "fam_b", attention="plain", configs=[TinyConfig("fam-a", "test_vit")]
    )(_fixed)
    assert decorated is _fixed
    rule = registry["fixed"]  # the function's name without leading underscores
    assert (rule.name, rule.families, rule.attention) == ("fixed", ("fam_a", "fam_b"), "plain")
    assert rule.configs == (TinyConfig("fam-a", "test_vit"),)
    assert rule.kinds == {"global"} and rule.summary == "A fixed 2×2 grid."
    assert registry.lookup("fam_a") is registry.lookup("fam_b") is rule
    assert registry.lookup("other") is None
    assert list(registry) == [rule] and len(registry) == 1 and "fixed" in registry
    assert dict(registry.families) == {"fam_a": rule, "fam_b": rule}


def test_registering_a_name_family_or_config_twice_raises() -> None:
    registry = RuleRegistry()
    registry.register("fam_a", attention="plain", configs=[TinyConfig("a", "test_vit")])(_fixed)
    with pytest.raises(DuplicateRuleError, match="named 'fixed' is already registered"):
        registry.register("fam_b", attention="plain")(_fixed)
    with pytest.raises(DuplicateRuleError, match="two geometry rules for the family 'fam_a'"):
        registry.register("fam_a", attention="plain", name="other")(_fixed)
    with pytest.raises(DuplicateRuleError, match="tiny config id 'a' is taken"):
        registry.register(
            "fam_c", attention="plain", name="third", configs=[TinyConfig("a", "test_vit2")]
        )(_fixed)
    with pytest.raises(DuplicateRuleError, match="names a family twice"):
        registry.register("fam_d", "fam_d", attention="plain", name="fourth")(_fixed)
    with pytest.raises(ValueError, match="attention 'dense'"):
        registry.register("fam_e", attention="dense", name="fifth")(_fixed)  # type: ignore[arg-type]
    assert [r.name for r in registry] == ["fixed"]  # a failed registration adds nothing
    assert issubclass(DuplicateRuleError, hooks.HookError)
    with pytest.raises(ValueError, match="unknown geometry kinds"):
        TinyConfig("bad", "test_vit", kinds=frozenset({"spherical"}))  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="no geometry rule named 'nope'"):
        registry["nope"]


def test_a_rule_is_called_with_a_context_and_may_raise_unknown() -> None:
    registry = RuleRegistry()

    @registry.register("fam", attention="plain")
    def _blocks_only(context: Context) -> TokenGeometry:
        context.match(r"blocks\.\d+\.attn")
        raise Unknown("no grid here")

    model = timm.create_model("test_vit", pretrained=False)
    modules = dict(model.named_modules())
    context = Context(model, "head", modules["head"], (160, 160), modules)
    with pytest.raises(Unknown, match="head is not where"):
        registry.lookup("fam")(context)  # type: ignore[misc]
    context = Context(model, "blocks.0.attn", modules["blocks.0.attn"], (160, 160), modules)
    with pytest.raises(Unknown, match="no grid here"):
        registry.lookup("fam")(context)  # type: ignore[misc]
    assert context.parent() is modules["blocks.0"] and context.parent(2) is modules["blocks"]


def test_the_registry_lists_every_rule_with_its_metadata() -> None:
    """Every rule: in the module of its kind of attention, with tiny configs (tested by the
    families tier), a docstring; every family dispatched to exactly one rule."""
    rules = list(RULES)
    assert len(rules) >= 30
    assert {r.attention for r in rules} == set(geometry.ATTENTION_KINDS)
    for rule in rules:
        assert rule.infer.__module__ == f"hooks.geometry._{rule.attention}", rule.name
        assert rule.configs and rule.infer.__doc__, rule.name
        for family in rule.families:
            assert RULES.lookup(family) is rule
    families = [f for r in rules for f in r.families]
    assert len(families) == len(set(families)) == len(RULES.families)
    assert {"vision_transformer", "swin_transformer", "pvt_v2", "byobnet"} <= set(families)
    assert geometry.VIT_LIKE in families


def test_hooks_keeps_exporting_the_geometry_entry_points() -> None:
    assert hooks.TokenGeometry is geometry.TokenGeometry
    assert hooks.infer_geometry is geometry.infer_geometry
    assert {"TokenGeometry", "infer_geometry"} <= set(hooks.__all__)
    for name in geometry.__all__:
        assert getattr(geometry, name) is not None


def test_a_model_outside_timm_uses_the_vit_like_rule() -> None:
    model = timm.create_model("test_vit", pretrained=False).eval()

    class Outside(type(model)):  # type: ignore[misc]
        __module__ = "my_project.models"

    model.__class__ = Outside
    found = hooks.infer_geometry(model, "blocks.0.attn", model.blocks[0].attn)
    assert (found.kind, found.prefix, found.grid) == ("global", 1, (10, 10))
    mha = nn.MultiheadAttention(8, 2)
    assert hooks.infer_geometry(model, "mha", mha).kind == "unknown"
