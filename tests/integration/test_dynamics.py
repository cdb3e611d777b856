"""Input dependence (METRICS.md §8) and translation equivariance (§9) on small real
modules: the oracles that need a forward, the streaming sums against kept maps, and the
cell alignment of the shift comparison."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import tiny_model
from torch import nn

import hooks
import inspector
from inspector import metrics
from inspector.analyzers import REGISTRY, AnalysisInputs, EquivarianceInput, MeanMapInput
from inspector.pipeline import MeanMaps, equivariance_pass


def images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def equivariance(found: dict[str, EquivarianceInput]):
    return REGISTRY["translation_equivariance"]().compute(AnalysisInputs({}, equivariance=found))


def test_linear_conv_stack_has_the_same_erf_map_for_every_image(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2), nn.Conv2d(8, 4, 3)
    ).eval()
    run = inspector.analyze(
        model,
        out=tmp_path / "linear.h5",
        analyses=("input_dependence",),
        limit=4,
        erf_images=4,
        report=False,
        progress=False,
    )
    result = run.result("input_dependence")
    assert list(result.layers) == ["0", "1", "2"]
    for layer in result.layers.values():
        assert layer.erf_images == 4
        assert layer.erf == pytest.approx(0.0, abs=1e-6)
        assert layer.erf_low <= layer.erf + 1e-12 <= layer.erf_high + 2e-12


def test_relu_stack_is_input_dependent(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 5)).eval()
    run = inspector.analyze(
        model,
        out=tmp_path / "relu.h5",
        analyses=("input_dependence",),
        limit=4,
        erf_images=4,
        report=False,
        progress=False,
    )
    assert run.result("input_dependence").layers["2"].erf > 1e-3


@pytest.mark.parametrize("shift", [1, 3, 7])
def test_circular_stride_one_conv_stack_is_equivariant_for_any_integer_shift(shift: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(8, 6, 5, padding=2, padding_mode="circular"),
    ).eval()
    x = images()
    with torch.no_grad():
        base, rolled = model(x), model(torch.roll(x, (shift, shift), dims=(-2, -1)))
    to_grid = lambda y: y.permute(0, 2, 3, 1).numpy()  # noqa: E731
    cos = metrics.equivariance_cosine(to_grid(rolled), to_grid(base), (shift, shift), margin=0)
    assert np.allclose(cos, 1.0, atol=1e-6)
    result = equivariance(equivariance_pass(model, x, ["0", "2"], {}))
    for layer in result.layers.values():
        assert (layer.stride, layer.shift, layer.sub_shift) == (1.0, 1, 0)
        assert layer.equivariance == pytest.approx(1.0, abs=1e-6)
        assert np.isnan(layer.sub)


def test_global_average_pool_is_invariant() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, padding_mode="circular"), nn.AdaptiveAvgPool2d(1)
    ).eval()
    result = equivariance(equivariance_pass(model, images(), ["1"], {}))
    layer = result.layers["1"]
    assert (layer.stride, layer.shift, layer.sub_shift, layer.cells) == (32.0, 32, 16, 1)
    assert layer.equivariance == pytest.approx(1.0, abs=1e-6)
    assert layer.sub == pytest.approx(1.0, abs=1e-6)  # half the image rolled: same pool


class Planted(nn.Module):
    """y = x + P, with a fixed random position map P of the same norm as the images."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        p = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(5))
        self.register_buffer("p", p * x[0].norm() / p.norm())
        self.add = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x + self.p)


def test_planted_position_map_gives_the_cosine_of_its_construction() -> None:
    x = images(4)
    model = Planted(x).eval()
    layer = equivariance(equivariance_pass(model, x, ["add"], {})).layers["add"]
    # E = mean_x cos(roll x + P, roll x + roll P) over the interior (a quarter-grid margin,
    # no ERF map given): computed here from the construction itself.
    m = 32 // 4
    rolled = torch.roll(x, (1, 1), dims=(-2, -1))
    p = model.p
    a = (rolled + p)[..., m:-m, m:-m].reshape(4, -1).double()
    b = (rolled + torch.roll(p, (1, 1), dims=(-2, -1)))[..., m:-m, m:-m].reshape(4, -1).double()
    expected = float(torch.nn.functional.cosine_similarity(a, b).mean())
    assert layer.margin == m
    assert layer.equivariance == pytest.approx(expected, abs=1e-6)
    assert layer.equivariance < 0.9  # the position map breaks equivariance


@pytest.mark.parametrize("stride", [1, 2, 4, 16])
def test_shift_comparison_aligns_cells_for_each_stride(stride: int) -> None:
    torch.manual_seed(stride)
    model = nn.Sequential(nn.Conv2d(3, 6, stride, stride=stride)).eval()  # patchify
    x = images(2, size=64)
    found = equivariance_pass(model, x, ["0"], {})
    layer = equivariance(found).layers["0"]
    assert (layer.stride, layer.shift) == (float(stride), stride)
    assert layer.equivariance == pytest.approx(1.0, abs=1e-6)
    item = found["0"]
    wrong = metrics.equivariance_cosine(item.shifted["stride"], item.base, (-1, -1), 0)
    assert (wrong < 0.999).all()  # misaligned cells would show


class Tokens(nn.Module):
    """Patch tokens after ``prefix`` tokens that are no function of position."""

    def __init__(self, prefix: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 16, stride=16)
        self.prefix = prefix
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        # Prefix tokens: a per-image max (unchanged by the roll) plus their index.
        extra = tokens.amax(1, keepdim=True) + torch.arange(self.prefix)[None, :, None] * 3.0
        return self.out(torch.cat([extra * torch.linspace(1, 2, 8), tokens], 1))


@pytest.mark.parametrize("prefix", [1, 5])
def test_prefix_tokens_are_excluded_and_tokens_laid_on_their_grid(prefix: int) -> None:
    model = Tokens(prefix).eval()
    x = images(2, size=64)
    geometry = hooks.TokenGeometry(kind="global", prefix=prefix, grid=(4, 4), stride=(16, 16))
    found = equivariance_pass(model, x, ["out"], {"out": geometry})
    assert found["out"].base is not None and found["out"].base.shape == (2, 4, 4, 8)
    assert equivariance(found).layers["out"].equivariance == pytest.approx(1.0, abs=1e-6)
    wrong = hooks.TokenGeometry(kind="global", prefix=0, grid=(4, 4), stride=(16, 16))
    assert "tokens" in equivariance_pass(model, x, ["out"], {"out": wrong})["out"].reason


@pytest.mark.parametrize(("groups", "images"), [(20, None), (2, None), (20, 5), (3, 5)])
def test_streamed_head_dependence_equals_the_direct_computation(
    groups: int, images: int | None
) -> None:
    """Without the image set's size images go to group ``i mod G``; with it, to the
    capture's contiguous groups ``i * G // N`` (``hooks.ImageGroups``)."""
    model = tiny_model("test_vit")
    x = torch.randn(5, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    kept: dict[str, list[torch.Tensor]] = {}
    sums = MeanMaps(groups=groups)

    def both(name: str, probs: torch.Tensor) -> None:
        kept.setdefault(name, []).append(probs.double().clone())
        sums(name, probs)

    cap = hooks.capture(
        model,
        attention="*",
        channels=None,
        keep_maps=0,
        on_attention=both,
        images=images,
        image_groups=groups if images else 20,
    )
    sums.bind(cap)
    with cap, torch.no_grad():
        model(x[:3])
        model(x[3:])
    arrays = sums.arrays()
    for a in arrays.values():
        if images is None:
            expected = np.bincount(np.arange(5) % min(groups, 5), minlength=groups)[:groups]
        else:
            g = min(groups, images)
            expected = np.bincount(np.arange(5) * g // images, minlength=g)
        np.testing.assert_array_equal(np.trim_zeros(a["counts"], "b"), np.trim_zeros(expected, "b"))
    inputs = {
        name: MeanMapInput(a["maps"], a["entropy"], a["counts"]) for name, a in arrays.items()
    }
    result = REGISTRY["input_dependence"]().compute(AnalysisInputs({}, mean_maps=inputs))
    assert set(result.layers) == set(kept)
    for name, layer in result.layers.items():
        prefix = cap.attention[name].geometry.prefix
        probs = torch.cat(kept[name])[:, :, prefix:, prefix:].numpy()  # [sample, head, q, k]
        direct = [metrics.input_dependence(probs[:, h]) for h in range(probs.shape[1])]
        assert layer.head_images == 5
        # Entropies are streamed in float32 (one log shared with the entropy summary):
        # rounding of order 1e-7 of log(keys) ≈ 4.6 nats; D here is 2.6e-4.
        assert np.allclose(layer.heads, direct, rtol=1e-4, atol=2e-7)
        assert (layer.heads_low <= layer.heads + 1e-12).all()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return inspector.analyze(
        "test_vit",
        weights="random",
        out=tmp_path_factory.mktemp("default"),
        limit=3,
        erf_images=3,
        progress=False,
    )


def test_default_job_shows_dynamics_in_terminal_report_and_tables(default_run, capsys) -> None:
    from inspector.present import print_summary

    run, tmp_path = default_run, default_run.path.parent
    assert {"input_dependence", "translation_equivariance"} <= set(run.analysis)
    timings = run.meta["timings"]
    assert {"translation_equivariance", "analyzer:input_dependence"} <= set(timings)
    dependence = run.result("input_dependence")
    assert dependence.layers["blocks.0.attn"].head_images == 3
    assert dependence.layers["blocks.0"].erf_images == 3
    equivariance = run.result("translation_equivariance")
    assert equivariance.layers["blocks.0"].shift == 16
    print_summary(run)
    out = capsys.readouterr().out
    assert "fixed vs dynamic interaction (D) and translation equivariance (E)" in out
    assert "Verdict: Interaction is" in out  # closing the one verdict
    html = (tmp_path / "test_vit.html").read_text("utf-8")
    section = html.split('id="dynamics"')[1].split("</section>")[0]
    assert section.count("<img") == 2 and "Interaction is" not in section
    verdict = html.split('id="verdict"')[1].split("</section>")[0]
    assert "Interaction is" in verdict and html.count('id="verdict"') == 1
    assert "fixed vs dynamic, equivariance" in html  # the exported table
    from inspector.store import table_rows

    heads = {k for row in table_rows(run, "heads") for k in row}
    layers = {k for row in table_rows(run, "layers") for k in row}
    assert {"input_dependence.heads", "input_dependence.heads_low"} <= heads
    assert {"input_dependence.erf", "translation_equivariance.equivariance"} <= layers


def _heads_low_of_three(f) -> None:
    layer = f["analysis/input_dependence/layers/blocks.0.attn"]
    del layer["heads_low"]
    layer["heads_low"] = np.zeros(3)  # test_vit has 2 heads


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            _heads_low_of_three,
            "layer 'blocks.0.attn' of analysis 'input_dependence': its per-head arrays "
            "differ in length ([2, 3])",
        ),
        (
            lambda f: f["analysis/input_dependence/layers/blocks.0"].attrs.__setitem__(
                "erf_images", 7
            ),
            "layer 'blocks.0' of analysis 'input_dependence': erf_images is 7, not a count "
            "of at most 3 images",
        ),
        (
            lambda f: f["analysis/translation_equivariance/layers/blocks.0"].attrs.__setitem__(
                "images", -1
            ),
            "layer 'blocks.0' of analysis 'translation_equivariance': images is -1, not a "
            "count of at most 3 images",
        ),
    ],
    ids=["heads-length", "erf-images", "equivariance-images"],
)
def test_dynamics_results_pass_the_readers_checks_and_edited_ones_are_refused(
    default_run, tmp_path, edit, problem
) -> None:
    import shutil

    import h5py

    from inspector import RunFileError
    from inspector.store import read_run
    from inspector.store._checksum import seal

    assert read_run(default_run.path).result("input_dependence").layers  # passes check_run
    path = tmp_path / "edited.h5"
    shutil.copyfile(default_run.path, path)
    with h5py.File(path, "r+") as handle:
        edit(handle)
        seal(handle)
    with pytest.raises(RunFileError) as info:
        read_run(path)
    assert f"is inconsistent ({problem})" in str(info.value)


def streamed_dependence(model: nn.Module, x: torch.Tensor, groups: int, images: int | None = None):
    """Capture ``x`` in two batches with the mean maps streamed, keeping every map too:
    ``(capture, kept maps per layer, the input_dependence result)``."""
    kept: dict[str, list[torch.Tensor]] = {}
    sums = MeanMaps(groups=groups)

    def both(name: str, probs: torch.Tensor) -> None:
        kept.setdefault(name, []).append(probs.double().clone())
        sums(name, probs)

    extra = {} if images is None else {"images": images}
    cap = hooks.capture(
        model, attention="*", channels=None, keep_maps=0, on_attention=both, **extra
    )
    sums.bind(cap)
    with cap, torch.no_grad():
        model(x[:2])
        model(x[2:])
    inputs = {
        n: MeanMapInput(a["maps"], a["entropy"], a["counts"]) for n, a in sums.arrays().items()
    }
    return cap, kept, REGISTRY["input_dependence"]().compute(AnalysisInputs({}, mean_maps=inputs))


@pytest.mark.parametrize(
    ("arch", "kwargs", "size"),
    [
        (
            "swin_tiny_patch4_window7_224",
            dict(img_size=56, embed_dim=24, depths=(2, 2), num_heads=(1, 2)),
            56,
        ),
        ("pvt_v2_b0", dict(depths=(1, 1, 1, 1)), 64),
    ],
    ids=["windowed", "reduced-keys"],
)
def test_streamed_dependence_of_windowed_and_reduced_key_attention(arch, kwargs, size) -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(3))
    cap, kept, result = streamed_dependence(model, x, groups=3)
    assert result.layers, result.notes
    for name, layer in result.layers.items():
        prefix = cap.attention[name].geometry.prefix
        probs = torch.cat(kept[name])[:, :, prefix:, prefix:].numpy()  # [seq, head, q, k]
        b, per = 4, probs.shape[0] // 4
        maps = probs.reshape(b, per, *probs.shape[1:]).transpose(0, 2, 1, 3, 4)
        maps = maps.reshape(b, probs.shape[1], per * probs.shape[2], probs.shape[3])
        direct = [metrics.input_dependence(maps[:, h]) for h in range(maps.shape[1])]
        assert np.allclose(layer.heads, direct, atol=1e-6), name


def test_default_job_on_a_tiny_resnet_measures_blocks_not_heads(tmp_path, capsys) -> None:
    from inspector.present import print_summary

    run = inspector.analyze(
        "test_resnet", weights="random", out=tmp_path, limit=3, erf_images=3, progress=False
    )
    dependence = run.result("input_dependence")
    assert dependence.layers and all(d.heads is None for d in dependence.layers.values())
    assert all(d.erf_images == 3 for d in dependence.layers.values())
    equivariance = run.result("translation_equivariance")
    assert {e.images for e in equivariance.layers.values()} == {3}
    print_summary(run)
    out = capsys.readouterr().out
    verdicts = [line for line in out.splitlines() if line.startswith("Verdict: ")]
    assert any(line.startswith("Verdict: Interaction is") for line in verdicts)
    assert any("quivariant" in line for line in verdicts)
    html = (tmp_path / "test_resnet.html").read_text("utf-8")
    verdict = html.split('id="verdict"')[1].split("</section>")[0]
    assert "Interaction is" in verdict and "equivariant" in verdict
    assert html.split('id="dynamics"')[1].split("</section>")[0].count("<img") == 2


def test_streamed_dependence_leaves_padded_window_slots_out() -> None:
    """Swin with a 16x16 map in 7x7 windows (padded to 21x21): padded queries have no
    map and padded keys no mass (METRICS.md §1, CONTRIBUTING.md decision 33); the streamed
    D equals the direct computation on the real slots only."""
    from timm.models import swin_transformer

    torch.manual_seed(0)
    model = swin_transformer.SwinTransformer(
        img_size=64, embed_dim=24, depths=(2,), num_heads=(2,), window_size=7, num_classes=0
    ).eval()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    cap, kept, result = streamed_dependence(model, x, groups=4, images=4)
    assert result.layers, result.notes
    for name, layer in result.layers.items():
        geometry = cap.attention[name].geometry
        slots = geometry.real_slots()
        assert geometry.padded and slots is not None
        probs = torch.cat(kept[name]).numpy()  # [seq, head, q, k], no prefix
        b, per = 4, probs.shape[0] // 4
        real = slots[0][:, None, :, None] & slots[1][:, None, None, :]  # [window, 1, q, k]
        probs = np.where(np.tile(real, (b, 1, 1, 1)), probs, 0.0)
        maps = probs.reshape(b, per, *probs.shape[1:]).transpose(0, 2, 1, 3, 4)
        maps = maps.reshape(b, probs.shape[1], per * probs.shape[2], probs.shape[3])
        direct = [metrics.input_dependence(maps[:, h]) for h in range(maps.shape[1])]
        assert np.allclose(layer.heads, direct, atol=1e-6), name


def test_the_equivariance_pass_counts_one_forward_plus_one_per_distinct_shift() -> None:
    """Layers of stride 2 and 4 share the shift 2 (4 // 2): shifts {1, 2, 4}, 4 forwards."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1)
    ).eval()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    ticks, planned = [], []
    found = equivariance_pass(
        model, images(2), ["0", "2"], {}, tick=lambda: ticks.append(1), extend=planned.append
    )
    assert {found[n].shifts["stride"] for n in ("0", "2")} == {2, 4}
    assert planned == [3] and len(ticks) == len(calls) == 4 and calls == [2, 2, 2, 2]


class Windows(nn.Module):
    """A conv map cut into 4 windows of each image, their batch axis ``image × window``
    (as EfficientViT-MSRA's window attention): no image-wide map to shift."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 4, stride=4)
        self.windows = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.embed(x)  # [B, 4, 8, 8]
        b, c = y.shape[:2]
        cut = y.reshape(b, c, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(b * 4, c, 4, 4)
        return self.windows(cut).mean((1, 2, 3))


def test_outputs_batched_by_window_are_not_taken_for_image_maps() -> None:
    """Found by the coverage sweep: 8 window rows of 2 images were measured as 8 images
    (and the run file refused on reading). They get a reason instead."""
    found = equivariance_pass(Windows().eval(), images(2), ["embed", "windows"], {})
    assert found["embed"].reason == ""
    assert "8 sequences for 2 images" in found["windows"].reason
    layers = equivariance(found).layers
    assert layers["embed"].images == 2
