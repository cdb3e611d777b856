"""Model-name resolution and weights loading (fast tier, no network needed)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import huggingface_hub.constants as hf_constants
import pytest
import safetensors.torch
import timm
import torch
from support import REPO
from timm.models import is_model_pretrained

from inspector import ModelNotFoundError, WeightsError, _models
from inspector._models import (
    Resolution,
    WeightsInfo,
    create_model,
    load_weights_file,
    resolve_model_name,
)
from inspector.images import builtin_images_dir, model_transform, open_images

SHARED_VIT_TINY = REPO.parent / "shared" / "weights" / "vit_tiny_patch16_224.safetensors"
OFFLINE_DECISION_S = 10.0


class NotAStateDict:
    """A custom class: pickling an instance must be refused by weights_only loading."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty weights cache and a hub endpoint that never resolves (.invalid, RFC 6761)."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    return cache


def _no_probe(host: str) -> str | None:
    raise AssertionError(f"the hub {host} must not be probed here")


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)


def _seeded_test_vit(seed: int = 0, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("test_vit", **kwargs)


# ----------------------------------------------------------------------- names


def test_exact_name_wins() -> None:
    assert resolve_model_name("deit_small_patch16_224") == Resolution(
        "deit_small_patch16_224", "deit_small_patch16_224", "exact", ()
    )


def test_alias_is_shortest_extension_and_lists_alternatives() -> None:
    resolution = resolve_model_name("deit_small")
    assert resolution.how == "alias"
    assert resolution.name == "deit_small_patch16_224"
    assert resolution.alternatives == ("deit_small_distilled_patch16_224",)


@pytest.mark.parametrize(
    ("alias", "chosen", "tied"),
    [
        ("beit_base", "beit_base_patch16_224", ("beit_base_patch16_384",)),
        # the family's canonical line first (tiny, small, base), then the shortest others
        ("convnext", "convnext_tiny", ("convnext_tiny_hnf", "convnext_small", "convnext_base")),
        ("swin", "swin_tiny_patch4_window7_224", ("swin_small_patch4_window7_224",)),
    ],
)
def test_alias_tie_is_broken_alphabetically_whatever_the_registry_order(
    monkeypatch: pytest.MonkeyPatch, alias: str, chosen: str, tied: tuple[str, ...]
) -> None:
    first = resolve_model_name(alias)
    original = timm.list_models
    monkeypatch.setattr(timm, "list_models", lambda *a, **k: list(reversed(original(*a, **k))))
    assert resolve_model_name(alias) == first
    assert first.name == chosen
    assert first.alternatives[: len(tied)] == tied
    rest = [n for n in (first.name, *first.alternatives) if n.split("_")[1] not in SIZES]
    assert [len(n) for n in rest] == sorted(len(n) for n in rest)


SIZES = ("tiny", "small", "base")


def test_case_and_hyphens_normalise_as_an_alias() -> None:
    resolution = resolve_model_name("DeiT-Small")
    assert (resolution.name, resolution.how) == ("deit_small_patch16_224", "alias")
    assert resolve_model_name("Test_ViT") == Resolution("Test_ViT", "test_vit", "alias", ())


def test_pretrained_tag_is_kept_and_checked() -> None:
    resolution = resolve_model_name("vit_tiny_patch16_224.augreg_in21k")
    assert (resolution.name, resolution.how) == ("vit_tiny_patch16_224.augreg_in21k", "exact")
    with pytest.raises(ModelNotFoundError, match="augreg_in21k_ft_in1k") as info:
        resolve_model_name("vit_tiny_patch16_224.nope")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("typo", "suggested"),
    [("deit_smal", "deit_small_patch16_224"), ("resnt50", "resnet50")],
)
def test_unknown_name_suggests_close_matches(typo: str, suggested: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_name(typo)
    message = str(info.value)
    assert typo in message
    assert suggested in message.split("Did you mean:")[1]
    assert "\n" not in message


def test_unknown_name_without_neighbours_still_explains() -> None:
    with pytest.raises(ModelNotFoundError, match="Unknown model 'qqqqzzzz'") as info:
        resolve_model_name("qqqqzzzz")
    assert "Did you mean" not in str(info.value)
    with pytest.raises(ModelNotFoundError, match="is empty"):
        resolve_model_name(" ")


# --------------------------------------------------------------------- weights


def test_random_weights_never_try_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_models, "_unreachable", _no_probe)
    model, info = create_model("test_vit", "random")
    assert info == WeightsInfo("random", "random initialisation requested", None, None)
    assert not model.training


def test_auto_without_registered_weights_is_random_with_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = "efficientnet_b0_gn"
    assert not is_model_pretrained(name)
    monkeypatch.setattr(_models, "_unreachable", _no_probe)
    with caplog.at_level(logging.WARNING, logger="inspector"):
        model, info = create_model(name, "auto")
    assert info.source == "random"
    assert "no pretrained weights" in info.reason
    assert "RANDOM" in info.reason
    assert any("RANDOM" in r.getMessage() for r in caplog.records)
    assert not model.training


@pytest.mark.parametrize("name", ["test_vit", "deit_small_patch16_224"])
def test_auto_offline_falls_back_to_random_within_seconds(
    offline: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Both have hub weights registered in timm 1.0 (test_vit as test_vit.r160_in1k).
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="inspector"):
        model, info = create_model(name, "auto")
    elapsed = time.perf_counter() - started
    assert elapsed < OFFLINE_DECISION_S
    assert info.source == "random"
    assert info.tag is None
    assert "not cached" in info.reason
    assert "hub https://hub.invalid is unreachable" in info.reason
    assert "\n" not in info.reason
    assert [r.levelno for r in caplog.records if r.name == "inspector"] == [logging.WARNING]
    assert not model.training


def test_pretrained_offline_raises_quickly(offline: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(WeightsError, match="unreachable") as info:
        create_model("deit_small", "pretrained")
    assert time.perf_counter() - started < OFFLINE_DECISION_S
    assert "--weights" in str(info.value)


def test_pretrained_without_registered_weights_raises() -> None:
    with pytest.raises(WeightsError, match="no pretrained weights for 'efficientnet_b0_gn'"):
        create_model("efficientnet_b0_gn", "pretrained")


def test_a_hanging_probe_is_cut_at_its_deadline(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(30)

    monkeypatch.setattr(_models, "PROBE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(_models.urllib.request, "urlopen", hang)
    started = time.perf_counter()
    _, info = create_model("test_vit", "auto")
    assert time.perf_counter() - started < 3.0
    assert info.source == "random"
    assert "no answer within 0.5 s" in info.reason


def test_hf_hub_offline_is_honoured_without_probing(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(_models.urllib.request, "urlopen", lambda *a, **k: calls.append(a))
    _, info = create_model("test_vit", "auto")
    assert info.source == "random"
    assert "HF_HUB_OFFLINE" in info.reason
    assert calls == []


@pytest.mark.parametrize("mode", ["auto", "pretrained"])
def test_cached_hub_weights_load_without_network(
    offline: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    commit = "0" * 40
    repo = offline / "models--timm--test_vit.r160_in1k"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    expected = _state(_seeded_test_vit(7))
    safetensors.torch.save_file(expected, snapshot / "model.safetensors")
    monkeypatch.setattr(_models, "_unreachable", _no_probe)

    model, info = create_model("test_vit", mode)
    assert info.source == "pretrained"
    assert info.tag == "r160_in1k"
    assert info.path == str(snapshot / "model.safetensors")
    _assert_same_state(model, expected)
    assert not model.training


def test_safetensors_file_round_trip(tmp_path: Path) -> None:
    expected = _state(_seeded_test_vit(1))
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(expected, path)
    model, info = create_model("test_vit", path)
    assert info == WeightsInfo("file", f"weights loaded from {path}", str(path), None)
    _assert_same_state(model, expected)
    assert not model.training


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "state_dict-key", "model-key", "dataparallel-prefix"],
)
def test_torch_file_round_trip(tmp_path: Path, wrap: Any) -> None:
    expected = _state(_seeded_test_vit(2))
    path = tmp_path / "weights.pth"
    torch.save(wrap(expected), path)
    model = _seeded_test_vit(3)
    load_weights_file(model, str(path))
    _assert_same_state(model, expected)


def test_pickled_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save(NotAStateDict(), path)
    with pytest.raises(WeightsError, match="weights_only") as info:
        load_weights_file(_seeded_test_vit(), path)
    assert "NotAStateDict" in str(info.value)


def test_wrong_architecture_names_keys(tmp_path: Path) -> None:
    path = tmp_path / "convnext.safetensors"
    safetensors.torch.save_file(_state(timm.create_model("test_convnext")), path)
    with pytest.raises(WeightsError, match="does not fit model 'test_vit'") as info:
        create_model("test_vit", path)
    message = str(info.value)
    assert re.search(r"\d+ missing keys \(cls_token; pos_embed; ", message)
    assert re.search(r"\d+ unexpected keys \(head\.fc\.bias; ", message)  # safetensors sorts


def test_shape_mismatch_is_named_and_model_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "ten_classes.pth"
    torch.save(_state(_seeded_test_vit(4, num_classes=10)), path)
    model = _seeded_test_vit(5)
    before = _state(model)
    with pytest.raises(WeightsError, match=r"shape mismatches \(head\.weight: file \(10, "):
        load_weights_file(model, path)
    _assert_same_state(model, before)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("absent.safetensors", None, "does not exist"),
        ("weights.onnx", b"x", "unknown extension '.onnx'"),
        ("broken.safetensors", b"not really", "not a readable safetensors file"),
        ("tensorless.pt", {"lr": 0.1}, "not tensors"),
    ],
)
def test_bad_weights_files_give_clear_errors(
    tmp_path: Path, name: str, content: object, match: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(WeightsError, match=match) as info:
        create_model("test_vit", path)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(
    not SHARED_VIT_TINY.is_file(),
    reason=f"trained reference weights not present at {SHARED_VIT_TINY} (only on dev machines)",
)
def test_shared_trained_vit_tiny_classifies_chelsea() -> None:
    model, info = create_model("vit_tiny_patch16_224", SHARED_VIT_TINY)
    assert info.source == "file"
    transform, config = model_transform(model)
    assert config["mean"] == (0.5, 0.5, 0.5)
    images = open_images(builtin_images_dir() / "chelsea.jpg", transform)
    (batch, ids, _), *_ = images.batches(1)
    with torch.inference_mode():
        logits = model(batch)
    assert ids == ["chelsea.jpg"]
    assert int(logits.argmax(-1)) == 285
