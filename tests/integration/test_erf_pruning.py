"""Receptive fields and pruning curves (METRICS.md §1 centre-query distance, §3, §5):
one pixel scale, theoretical receptive fields, degenerate ERFs, held-out pruning curves
with intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from support import SHARED
from torch import nn
from torch.utils.data import Dataset

import hooks
from inspector import AnalyzeOptions, analyze
from inspector._summaries import attention_summaries
from inspector.analyzers import AnalysisInputs, PruningInput, uniform_erf_distance, wilson_interval
from inspector.analyzers._attention import centre_uniform
from inspector.analyzers._erf import degenerate_erf, erf_mean_distance, replknet_area_ratios
from inspector.analyzers._gradients import PruningCurve
from inspector.pipeline import erf_pass
from inspector.pipeline._analyses import importance_split
from inspector.pipeline._pixel_map import receptive_fields

TRAINED_MOBILEONE = SHARED / "weights" / "mobileone_s0.safetensors"


def quiet(**fields: Any) -> AnalyzeOptions:
    return AnalyzeOptions(report=False, progress=False, **fields)


# -- one pixel scale: the uniform references of METRICS.md §1 and §3 -----------------------


def test_uniform_attention_centre_query_distance_is_86_018933_px() -> None:
    grid = hooks.TokenGeometry(kind="global", prefix=1, grid=(14, 14), stride=(16.0, 16.0))
    probs = torch.zeros(2, 3, 197, 197)
    probs[..., 1:] = 1 / 196  # uniform over the 196 patches, nothing on the class token
    summaries = attention_summaries()
    centre = summaries["distance_centre"](probs, grid)
    assert centre.shape == (2, 3)
    np.testing.assert_allclose(centre.numpy(), 86.018933, rtol=1e-6)
    # ... while MAD (every query, corners included) reads 116.492227 px.
    np.testing.assert_allclose(summaries["distance"](probs, grid).numpy(), 116.492227, rtol=1e-6)
    queries, keys = grid.centres()
    distances = np.sqrt(((queries[:, None] - keys[None]) ** 2).sum(-1))
    assert centre_uniform(distances) == pytest.approx(86.018933, rel=1e-6)


def test_centre_query_of_an_odd_grid_is_its_one_central_token() -> None:
    grid = hooks.TokenGeometry(kind="global", prefix=0, grid=(7, 7), stride=(32.0, 32.0))
    probs = torch.zeros(1, 1, 49, 49)
    probs[0, 0, :, 24] = 1.0  # every query looks at the central token
    probs[0, 0, 24] = 0.0
    probs[0, 0, 24, 25] = 1.0  # the central query looks one token right
    assert float(attention_summaries()["distance_centre"](probs, grid)) == pytest.approx(32.0)


def test_uniform_erf_mean_distance_is_85_701266_px() -> None:
    assert uniform_erf_distance(224, 224) == pytest.approx(85.701266, rel=1e-6)
    # the same from the ERF definition: pixel (i, j) at index (i, j), centre (111.5, 111.5)
    assert erf_mean_distance(np.ones((224, 224)), (111.5, 111.5)) == pytest.approx(
        85.701266, rel=1e-6
    )
    limit = 224 / 6 * (np.sqrt(2) + np.log(1 + np.sqrt(2)))
    assert uniform_erf_distance(224, 224) == pytest.approx(limit, rel=1e-4)


def test_mad_centre_is_stored_with_an_interval_and_its_uniform_reference(tmp_path: Path) -> None:
    model = timm.create_model("test_vit", pretrained=False).eval()
    run = analyze(model, "builtin", out=tmp_path, options=quiet(analyses=("attention_distance",)))
    layer = next(iter(run.result("attention_distance").layers.values()))
    assert layer.centre_mean is not None and layer.centre_low is not None
    assert layer.centre_high is not None
    assert (layer.centre_low <= layer.centre_mean + 1e-9).all()
    assert (layer.centre_mean <= layer.centre_high + 1e-9).all()
    per_image = run.layers[next(iter(run.result("attention_distance").layers))].summaries
    np.testing.assert_allclose(layer.centre_mean, per_image["distance_centre"].mean(0), rtol=1e-6)
    assert layer.centre_uniform is not None and layer.centre_uniform < layer.uniform


# -- theoretical receptive field ---------------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, 10])
def test_theoretical_rf_of_stacked_3x3_convs_is_1_plus_2n(n: int) -> None:
    model = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(n)])
    _, fields = receptive_fields(model, torch.zeros(1, 1, 32, 32), [str(i) for i in range(n)])
    assert [fields[str(i)] for i in range(n)] == [1 + 2 * (i + 1) for i in range(n)]


def test_theoretical_rf_through_strides_pools_and_global_pooling() -> None:
    resnet = timm.create_model("resnet18", pretrained=False)
    names = ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    _, fields = receptive_fields(resnet, torch.zeros(1, 3, 64, 64), names)
    assert [fields[n] for n in names] == [43, 99, 211, 435]  # the textbook ResNet-18 values

    class Squeeze(nn.Module):  # squeeze-and-excitation: a global pool gates the map
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y * y.mean((2, 3), keepdim=True).sigmoid()

    model = nn.Sequential(Squeeze(), nn.Conv2d(1, 1, 3, padding=1))
    _, fields = receptive_fields(model, torch.zeros(1, 1, 16, 16), ["0.conv", "0", "1"])
    assert fields == {"0.conv": 3, "0": np.inf, "1": np.inf}


def test_erf_pass_reports_the_theoretical_rf_and_per_image_sums() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(3, 3, 3, padding=1) for _ in range(3)]).eval()
    x = torch.randn(4, 3, 21, 21)
    layers = [(str(i), "conv") for i in range(3)]
    found, _ = erf_pass(model, x, layers, {}, progress=False)
    assert [found[str(i)]["theoretical_rf"] for i in range(3)] == [3.0, 5.0, 7.0]
    for v in found.values():
        assert v["weighted"].shape == v["mass"].shape == (4,)
        # the mean map's mean distance is the ratio of the per-image sums
        assert erf_mean_distance(v["map"], v["centre"]) == pytest.approx(
            v["weighted"].sum() / v["mass"].sum(), rel=1e-9
        )


# -- degenerate ERFs ---------------------------------------------------------------------


def test_degenerate_rule_on_synthetic_series() -> None:
    flat = degenerate_erf([4.0, 4.2, 4.1, 4.3], [27, 99, 211, 435])
    assert flat is not None and "degenerate" in flat
    assert degenerate_erf([1.0, 8.0, 30.0, 70.0], [3, 35, 163, 419]) is None
    assert degenerate_erf([4.0, 4.1, 4.2], [11, 11, 11]) is None  # the RF does not grow
    assert degenerate_erf([60.0, 61.0, 62.0], [np.inf] * 3) is None  # global from the start


def test_degenerate_erf_fires_on_random_resnet18(tmp_path: Path) -> None:
    model = timm.create_model("resnet18", pretrained=False).eval()
    run = analyze(
        model,
        "builtin",
        out=tmp_path,
        options=quiet(analyses=("receptive_field",), erf_images=2, limit=2),
    )
    result = run.result("receptive_field")
    assert result.summary["model"].degenerate, result.summary["model"].reason
    blocks = [v for v in result.layers.values() if v.branch == "block"]
    assert blocks[-1].theoretical_rf == 435 and blocks[-1].mean_distance < 10


@pytest.mark.skipif(
    not TRAINED_MOBILEONE.exists(),
    reason=f"trained MobileOne-S0 weights not found at {TRAINED_MOBILEONE} (dev sandbox only)",
)
def test_degenerate_erf_does_not_fire_on_trained_mobileone_s0(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = timm.utils.model.reparameterize_model(timm.create_model("mobileone_s0"))
    model.load_state_dict(load_file(TRAINED_MOBILEONE), strict=True)
    run = analyze(
        model.eval(),
        "builtin",
        out=tmp_path,
        options=quiet(analyses=("receptive_field",), erf_images=2, limit=2),
    )
    result = run.result("receptive_field")
    assert not result.summary["model"].degenerate, result.summary["model"].reason
    blocks = [v for v in result.layers.values() if v.branch == "block"]
    assert blocks[-1].mean_distance > 5 * blocks[0].mean_distance
    # The 7x7 stage's unit sits at (96, 96) px, and the area-ratio squares with it.
    last = blocks[-1]
    assert last.centre == pytest.approx((96.0, 96.0), abs=0.51)


# -- RepLKNet area ratios -----------------------------------------------------------------


def test_area_ratio_squares_are_centred_on_the_unit() -> None:
    erf = np.zeros((224, 224))
    erf[90:103, 90:103] = 100.0  # a 13-px blob about (96, 96)
    middle = replknet_area_ratios(erf, (0.5,))[0.5]
    centred = replknet_area_ratios(erf, (0.5,), centre=(96, 96))[0.5]
    assert middle is not None and centred is not None
    assert centred[0] < middle[0]  # the middle's square must grow to reach the blob
    assert centred[0] <= 13


def test_area_ratio_saturation_is_flagged() -> None:
    corners = np.zeros((64, 64))
    corners[0, 0] = corners[-1, -1] = 1000.0
    result = replknet_area_ratios(corners + 1e-3, (0.2, 0.99))
    assert result[0.99] is None or result[0.99][2]  # no tested square, or the largest
    ones = replknet_area_ratios(np.ones((1024, 1024)), (0.2,))[0.2]
    assert ones == (459, pytest.approx(0.200921, rel=1e-5), False)


# -- pruning: held-out split, Wilson intervals, a planted order ----------------------------


def test_wilson_interval_oracles() -> None:
    low, high = wilson_interval(np.array([9, 0]), 9)
    z2 = 1.959964**2
    assert low[0] == pytest.approx(9 / (9 + z2), rel=1e-5)  # 9 of 9: 0.701
    assert high[0] == 1.0 and low[1] == 0.0
    assert high[1] == pytest.approx(z2 / (9 + z2), rel=1e-5)


def test_removable_needs_the_lower_bound_to_clear_the_threshold() -> None:
    fractions = np.linspace(0, 1, 11)
    agreement = np.r_[1.0, 1.0, 1.0, np.full(8, 0.5)]
    curve = PruningInput(fractions, agreement, np.zeros(11), units=10, images=9)
    kind = PruningCurve(threshold=0.99).compute(AnalysisInputs({}, pruning={"c": curve})).summary
    assert kind["c"].point_prunable_fraction == pytest.approx(0.2)  # 9 of 9 agree
    assert kind["c"].prunable_fraction == 0.0  # but the lower bound is 0.70
    lenient = PruningCurve(threshold=0.6).compute(AnalysisInputs({}, pruning={"c": curve}))
    assert lenient.summary["c"].prunable_fraction == pytest.approx(0.2)


@pytest.mark.parametrize("total,available", [(16, 9), (16, 100), (2, 2), (101, 200), (7, 3)])
def test_importance_split_is_disjoint_and_within_the_images(total: int, available: int) -> None:
    first, held = importance_split(total, available)
    assert first + held == min(total, available) and first >= held >= 0 and first >= 1


class Planted(nn.Module):
    """Eight channels; channel c's logit weight is 0 for c < 4 (removing them changes
    nothing) and grows with c after: the importance order is 0-3 (ties), 4, 5, 6, 7."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 5)
        torch.manual_seed(0)
        with torch.no_grad():
            self.conv.weight.normal_()
            self.conv.bias.fill_(0.5)
            scale = torch.tensor([0, 0, 0, 0, 1, 2, 4, 8], dtype=torch.float32)
            self.head.weight.copy_(torch.randn(5, 8) * scale)
            self.head.bias.copy_(torch.arange(5.0) * 0.01)
        self.seen: list[tuple[bool, bool, tuple[int, ...]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = tuple(int(v) for v in x[:, 0, 0, 0].round().tolist())
        self.seen.append((torch.is_grad_enabled(), torch.is_inference_mode_enabled(), ids))
        return self.head(self.conv(x).relu().mean((2, 3)))


class Numbered(Dataset):
    """Images whose top-left pixel is their index (the model reads who it sees)."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.randn(n, 3, 8, 8, generator=generator)
        self.images[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], index % 5


def test_planted_pruning_order_gives_the_expected_curve_on_held_out_images(
    tmp_path: Path,
) -> None:
    model = Planted().eval()
    run = analyze(
        model,
        Numbered(20),
        out=tmp_path,
        options=quiet(
            analyses=("importance", "pruning_curve"),
            pruning_images=20,
            batch_size=20,
            keep_maps=0,
            ablation_units=0,
        ),
    )
    curve = run.result("pruning_curve").summary["channels"]
    assert (curve.importance_images, curve.images, curve.units) == (10, 10, 8)
    # The four zero-weight channels go first: up to 50 % removed nothing changes.
    np.testing.assert_array_equal(curve.agreement[:6], 1.0)
    np.testing.assert_allclose(curve.kl[:6], 0.0, atol=1e-7)
    assert curve.kl[7] > 0 and curve.kl[10] >= curve.kl[7]
    # Everything removed: the logits are the bias, whose top-1 is class 4.
    model.seen.clear()
    full = model(run_images(10, 20)).argmax(-1)
    assert curve.agreement[10] == pytest.approx(float((full == 4).float().mean()))
    # Labels given (the Dataset yields them): accuracy is reported on the held-out images.
    assert curve.accuracy is not None and curve.labelled == 10
    # 10 of 10 agreeing is not enough for 99 %: Wilson's lower bound is 0.72.
    assert curve.agreement_low[5] == pytest.approx(10 / (10 + 1.959964**2), rel=1e-5)
    assert curve.prunable_fraction == 0.0


def run_images(start: int, stop: int) -> torch.Tensor:
    return Numbered(stop).images[start:stop]


def test_held_out_images_never_overlap_the_importance_images(tmp_path: Path) -> None:
    model = Planted().eval()
    analyze(
        model,
        Numbered(14),
        out=tmp_path,
        options=quiet(
            analyses=("importance", "pruning_curve"),
            pruning_images=13,
            batch_size=4,
            keep_maps=0,
            ablation_units=3,
        ),
    )
    graded = [ids for grad, inference, ids in model.seen if grad and not inference]
    assert len(graded) == 1  # the importance pass: one gated forward with gradients
    importance = set(graded[0])
    assert importance == set(range(7))
    later = model.seen[[s[2] for s in model.seen].index(graded[0]) + 1 :]
    held: set[int] = set()
    for _, inference, ids in later:
        assert inference
        if set(ids) <= importance:
            continue  # the ablation check, on importance images
        assert not set(ids) & importance, ids  # a pruning forward: held-out images only
        held |= set(ids)
    assert held == set(range(7, 13))  # the 14th image is beyond --pruning-images


# -- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("pruning_images", 1, "--pruning-images 1 must be at least 2"),
        ("erf_images", 0, "--erf-images 0 must be at least 1"),
        ("pruning_threshold", 1.5, "--pruning-threshold 1.5 must be in"),
        ("pruning_order", "random", "--pruning-order 'random' must be raw or normalised"),
        ("precision", 0.0, "--precision 0.0 must be in"),
    ],
)
def test_pass_options_refuse_bad_values(field: str, value: Any, message: str) -> None:
    from inspector._errors import InspectorError

    with pytest.raises(InspectorError, match=message.replace("(", r"\(")):
        AnalyzeOptions(**{field: value})


def test_adaptive_erf_adds_images_until_the_interval_is_narrow(tmp_path: Path) -> None:
    model = timm.create_model("test_resnet", pretrained=False).eval()
    loose = analyze(
        model,
        "builtin",
        out=tmp_path / "loose.h5",
        options=quiet(analyses=("receptive_field",), erf_images=2, adaptive=True, precision=0.9),
    )
    tight = analyze(
        model,
        "builtin",
        out=tmp_path / "tight.h5",
        options=quiet(
            analyses=("receptive_field",), erf_images=2, adaptive=True, precision=1e-4, max_images=6
        ),
    )
    loose_images = {v.images for v in loose.result("receptive_field").layers.values()}
    tight_images = {v.images for v in tight.result("receptive_field").layers.values()}
    assert loose_images == {2} and tight_images == {6}


# -- accuracy when labels are given ---------------------------------------------------------


class Labelled(Dataset):
    """``Numbered`` images labelled with the planted model's own top-1 on even images and
    another class on odd ones: the unpruned accuracy is the share of even images."""

    def __init__(self, n: int) -> None:
        self.images = Numbered(n).images
        with torch.no_grad():
            top = Planted().eval()(self.images).argmax(-1)
        self.labels = [int(t) if i % 2 == 0 else (int(t) + 1) % 5 for i, t in enumerate(top)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


def test_planted_accuracy_curve_with_wilson_intervals_from_dataset_labels(tmp_path: Path) -> None:
    data = Labelled(20)
    run = analyze(
        Planted().eval(),
        data,
        out=tmp_path,
        options=quiet(
            analyses=("importance", "pruning_curve"),
            pruning_images=20,
            batch_size=20,
            keep_maps=0,
            ablation_units=0,
        ),
    )
    curve = run.result("pruning_curve").summary["channels"]
    assert (curve.images, curve.labelled) == (10, 10)
    held = slice(10, 20)
    # Unpruned and up to the four zero-weight channels removed (50 %): the even half right.
    np.testing.assert_allclose(curve.accuracy[:6], 0.5)
    # Everything removed: the logits are the bias, whose top-1 is class 4.
    expected = np.mean([label == 4 for label in data.labels[held]])
    assert curve.accuracy[10] == pytest.approx(expected)
    # Every step: the accuracy follows from agreement on the even/odd split exactly when
    # the pruned top-1 is the unpruned one; at least it is bounded by it.
    assert np.all(curve.accuracy <= curve.agreement * 0.5 + 0.5 + 1e-9)
    low, high = wilson_interval(np.round(curve.accuracy * 10), 10)
    np.testing.assert_allclose(curve.accuracy_low, low)
    np.testing.assert_allclose(curve.accuracy_high, high)
    # 5 of 10: Wilson's 95 % interval is 0.237-0.763
    assert (curve.accuracy_low[0], curve.accuracy_high[0]) == pytest.approx(
        (0.2366, 0.7634), abs=1e-4
    )


class Classes5(Planted):
    """The planted model with timm's ``num_classes`` (what folder labels are checked against)."""

    num_classes = 5


def _class_folders(root: Path, names: list[str], per_class: int = 3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_folder_of_class_index_subfolders_gives_labels_and_accuracy(tmp_path: Path) -> None:
    from inspector.images import model_transform, open_images

    _class_folders(tmp_path / "images", ["0", "3", "4"])
    model = Classes5().eval()
    run = analyze(
        model,
        tmp_path / "images",
        out=tmp_path / "run.h5",
        options=quiet(analyses=("importance", "pruning_curve"), keep_maps=0, ablation_units=0),
    )
    assert run.meta["images_labels"] == "labels from 3 class sub-folders named by class index"
    # every image's stored label is its folder's name, not the folder's rank (0, 1, 2)
    assert run.labels.tolist() == [int(i.split("/")[0]) for i in run.sample_ids]
    assert sorted(set(run.labels.tolist())) == [0, 3, 4]
    curve = run.result("pruning_curve").summary["channels"]
    # Independently: the folder name of each held-out image against the model's top-1.
    images = open_images(tmp_path / "images", model_transform(model)[0])
    x, ids, _ = next(images.batches(9))
    assert curve.images == curve.labelled == 4  # 9 images: 5 for importance, 4 held out
    with torch.no_grad():
        top = model(x[5:]).argmax(-1).tolist()
    truth = [int(i.split("/")[0]) for i in ids[5:]]
    assert curve.accuracy[0] == pytest.approx(
        np.mean([t == p for t, p in zip(truth, top, strict=True)])
    )


def test_class_folders_that_are_not_class_indices_give_no_labels_and_say_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from inspector.images import model_class_names, model_transform, open_images

    _class_folders(tmp_path / "named", ["cat", "dog"], per_class=2)
    model = Classes5().eval()
    run = analyze(
        model,
        tmp_path / "named",
        out=tmp_path / "run.h5",
        options=quiet(analyses=("importance", "pruning_curve"), keep_maps=0, ablation_units=0),
    )
    assert "needs folders named by class index" in run.meta["images_labels"]
    assert "'cat', 'dog'" in caplog.text
    assert run.result("pruning_curve").summary["channels"].accuracy is None
    # A timm ImageNet classifier's label names (synsets) are folder names too.
    names = model_class_names(timm.create_model("resnet18", pretrained=False))
    assert names is not None and len(names) == 1000 and names[0] == "n01440764"
    _class_folders(tmp_path / "synsets", [names[7], names[2]], per_class=1)
    found = open_images(
        tmp_path / "synsets", model_transform(model)[0], num_classes=1000, class_names=names
    )
    assert found.labels == [2, 7]  # sorted paths: n01484850 (index 2) before n01514859 (7)
    assert found.labelling == "labels from 2 class sub-folders named by the model's label names"
    assert model_class_names(Planted()) is None


def test_radius_and_spearman_intervals_are_stored_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from inspector.present import print_summary

    torch.manual_seed(0)
    convs = nn.Sequential(*[nn.Conv2d(3, 3, 5, padding=2) for _ in range(3)]).eval()
    run = analyze(
        convs,
        "builtin",
        out=tmp_path / "erf.h5",
        options=quiet(analyses=("receptive_field",), erf_images=6, input_size=64),
    )
    for layer in run.result("receptive_field").layers.values():
        assert layer.radius_50_low <= layer.radius_50 <= layer.radius_50_high
        assert layer.radius_90_low <= layer.radius_90 <= layer.radius_90_high
        assert layer.radius_50_high <= layer.radius_90_high
    labelled = analyze(
        Planted().eval(),
        Labelled(20),
        out=tmp_path / "prune.h5",
        options=quiet(
            analyses=("importance", "pruning_curve"),
            pruning_images=20,
            batch_size=20,
            keep_maps=0,
            ablation_units=6,
        ),
    )
    check = labelled.result("importance").summary["channels"]
    assert check.ablation_images == 4 and check.spearman_low is not None
    assert check.spearman_low <= check.spearman_vs_ablation <= check.spearman_high
    capsys.readouterr()
    print_summary(labelled)
    text = capsys.readouterr().out
    assert f"Spearman {check.spearman_vs_ablation:.2f} [95 %: {check.spearman_low:.2f}," in text
    assert "top-1 accuracy on 10 labelled held-out images: 0.50 [0.24-0.76] at 0% removed" in text


def test_radial_profiles_past_32_images_are_summed_into_32_image_groups() -> None:
    from inspector.pipeline._analyses import PROFILE_GROUPS, _grouped

    rows = np.arange(45 * 3, dtype=np.float64).reshape(45, 3)
    groups = _grouped(None, rows[:20], 0)
    assert groups.shape == (20, 3)  # under 32 images: one row per image
    np.testing.assert_array_equal(groups, rows[:20])
    groups = _grouped(groups, rows[20:], 20)
    assert PROFILE_GROUPS == 32 and groups.shape == (32, 3)
    expected = rows[:32].copy()
    expected[:13] += rows[32:]  # image i into group i mod 32
    np.testing.assert_array_equal(groups, expected)


def test_one_progress_display_covers_every_pass_and_adaptive_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Capture, the ERF pass (three adaptive batches of 2 images: its total grows by the
    layers of each batch), importance and the held-out pruning pass are steps of one
    display; as a log (not a terminal) each prints a start and a done line."""
    model = timm.create_model("test_resnet", pretrained=False).eval()
    analyze(
        model,
        "builtin",
        out=tmp_path / "progress.h5",
        options=AnalyzeOptions(
            report=False,
            analyses=("receptive_field", "pruning_curve"),
            erf_images=2,
            adaptive=True,
            precision=1e-4,
            max_images=6,
            pruning_images=4,
        ),
    )
    lines = capsys.readouterr().err.splitlines()
    assert "[1/4] capture: 9 images ..." in lines
    start = next(line for line in lines if line.startswith("[2/4] receptive field: "))
    layers = int(start.split(": ")[1].split()[0])
    done = next(line for line in lines if line.startswith("[2/4] receptive field: done"))
    assert done.startswith(f"[2/4] receptive field: done, {3 * layers} layers in ")
    assert any(line.startswith("[3/4] importance: done, ") for line in lines)
    assert any(line.startswith("[4/4] pruning: done, ") for line in lines)
    assert len(lines) == len(set(lines))
