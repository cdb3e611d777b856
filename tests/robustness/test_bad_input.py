"""Bad input gives one clear line, never a traceback or a wrong number.

Cases already tested elsewhere are listed in docs/reliability.md with their tests
(truncated, non-HDF5 and newer-schema run files in test_store.py, empty folders and
files that are not images in test_images.py, pickled and mismatched weights in
test_models.py, ``--limit 0`` in test_cli.py). Here: decompression bombs, output paths
that cannot be written, corrupt run files, and NaN/inf activations.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from support import DATA
from torch import nn
from torch.utils.data import Dataset

import hooks
from inspector import ImageError, InspectorError, RunFileError, analyze
from inspector import _images as images_module
from inspector.analyzers import REGISTRY, AnalysisInputs, GateInput, LayerInput
from inspector.cli import main
from inspector.images import model_transform, open_images
from inspector.pipeline import output_path as _output_path
from inspector.store import RunWriter, read_run

GOLDEN = DATA / "golden-run-1.0.h5"
FAST = ["--weights", "random", "--no-report", "--quiet", "--device", "cpu", "--limit", "1"]


# -- decompression bombs -------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims ``width`` × ``height`` RGB pixels (a few
    hundred bytes on disk)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 4096)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def transform():  # type: ignore[no-untyped-def]
    return model_transform(timm.create_model("test_vit"))[0]


def test_decompression_bomb_is_refused_from_its_header(
    tmp_path: Path, transform, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[Path] = []
    real = images_module._decode

    def spy(path: Path, max_pixels: int):  # type: ignore[no-untyped-def]
        decoded.append(path)
        return real(path, max_pixels)

    monkeypatch.setattr(images_module, "_decode", spy)
    (tmp_path / "bomb.png").write_bytes(png_claiming(100_000, 100_000))  # 10^10 pixels
    shutil.copy(GOLDEN.parent.parent.parent / "inspector/data/sample_images/chelsea.jpg",
                tmp_path / "chelsea.jpg")  # fmt: skip
    images = open_images(tmp_path, transform)
    assert images.ids == ["chelsea.jpg"]
    ((path, reason),) = images.skipped
    assert path.endswith("bomb.png") and "too large" in reason
    assert len(list(images.batches(4))) == 1
    assert [p.name for p in decoded] == ["chelsea.jpg"]  # the bomb was never decoded

    with pytest.raises(ImageError, match=r"no readable image .*too large") as info:
        open_images(tmp_path / "bomb.png", transform)  # alone: a clear error
    assert "\n" not in str(info.value)


def test_image_over_max_pixels_is_refused_from_its_header(tmp_path: Path, transform) -> None:
    (tmp_path / "wide.png").write_bytes(png_claiming(20_000, 5_000))  # 10^8 > 8.9·10^7
    with pytest.raises(ImageError, match=r"too large \(20000x5000 = 100000000 pixels") as info:
        open_images(tmp_path, transform)
    assert "\n" not in str(info.value)


def test_elongated_image_is_refused_before_the_resize_could_blow_up(
    tmp_path: Path, transform
) -> None:
    """A 20000x1 strip is 20000 pixels, but resizing its shorter side to the model's
    168 px would allocate 2.3 GB; refused from its header."""
    Image.new("RGB", (20_000, 1)).save(tmp_path / "strip.png")
    with pytest.raises(ImageError, match=r"too elongated \(20000x1, more than 64:1") as info:
        open_images(tmp_path, transform)
    assert "\n" not in str(info.value)
    Image.new("RGB", (640, 10)).save(tmp_path / "panorama.png")  # 64:1 is still fine
    assert open_images(tmp_path, transform).ids == ["panorama.png"]


@pytest.mark.parametrize(
    "item", [Image.new("RGB", (1, 5_000)), torch.zeros(3, 1, 5_000, dtype=torch.uint8)],
    ids=["pil", "uint8-tensor"],
)  # fmt: skip
def test_elongated_dataset_item_is_a_clear_error(transform, item: object) -> None:
    class One(Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> object:
            return item

    images = open_images(One(), transform)
    with pytest.raises(ImageError, match=r"dataset\[0\] is too elongated") as info:
        list(images.batches(1))
    assert "\n" not in str(info.value)


# -- output paths --------------------------------------------------------------------------


def test_out_is_a_file_is_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "results"
    target.write_text("not a folder")
    assert main(["analyze", "test_vit", "--out", str(target), *FAST]) == 1
    err = capsys.readouterr().err
    assert err == f"error: --out {target} is a file; give a folder or a path ending in .h5\n"
    assert target.read_text() == "not a folder"


def test_out_in_a_missing_folder_is_created(tmp_path: Path) -> None:
    path = _output_path(tmp_path / "a" / "b", "test_vit")
    assert path == tmp_path / "a" / "b" / "test_vit.h5" and path.parent.is_dir()


def test_out_below_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InspectorError, match="cannot create output folder") as info:
        _output_path(tmp_path / "file" / "runs", "test_vit")
    assert "\n" not in str(info.value)


def test_out_h5_that_is_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run.h5").mkdir()
    with pytest.raises(RunFileError, match="is a directory") as info:
        RunWriter(tmp_path / "run.h5", {}, "{}")
    assert "\n" not in str(info.value)


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root ignores permissions: use a read-only file system
        folder.chmod(0o700)
        if not Path("/proc/self").is_dir():
            pytest.skip("running as root without /proc: no read-only folder to write into")
        return Path("/proc")
    return folder


def test_out_in_a_read_only_folder_is_a_clear_error(tmp_path: Path) -> None:
    folder = _read_only_folder(tmp_path)
    with pytest.raises(InspectorError, match="cannot create") as info:
        _output_path(folder / "runs", "test_vit")  # the folder cannot be made
    assert "\n" not in str(info.value)
    with pytest.raises(RunFileError, match=r"cannot create .*\.h5\.partial") as info:
        RunWriter(folder / "test_vit.h5", {}, "{}")  # the file cannot be made
    assert "\n" not in str(info.value)


# -- corrupt run files ---------------------------------------------------------------------


@pytest.mark.parametrize("where", [0.0, 0.02, 0.3, 0.7])
def test_garbage_inside_a_run_file_is_a_clean_error_or_a_clean_read(
    tmp_path: Path, where: float
) -> None:
    """4 KiB of random bytes written over the golden file at four places (the fuzz tier
    tries thousands of corruptions)."""
    data = bytearray(GOLDEN.read_bytes())
    start = int(len(data) * where)
    data[start : start + 4096] = np.random.default_rng(7).bytes(4096)
    path = tmp_path / "corrupt.h5"
    path.write_bytes(bytes(data))
    try:
        read_run(path)
    except RunFileError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)


# -- NaN and inf in activations ------------------------------------------------------------


class TokenNorm(nn.Module):
    """Unit-normalises each position's channels: 0/0 = NaN on an all-black patch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.norm(dim=1, keepdim=True)


class NaNNet(nn.Module):
    """Patch embedding (no bias) → TokenNorm → 1×1 conv → attention → classifier."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4, bias=False)
        self.unit = TokenNorm()
        self.mix = nn.Conv2d(dim, dim, 1)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.mix(self.unit(self.embed(x))).flatten(2).transpose(1, 2)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return self.head(out.mean(1))


class FourImages(Dataset):
    """Four preprocessed 16×16 images; image 2 has one black 4×4 patch."""

    def __init__(self) -> None:
        self.x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) + 0.1
        self.x[2, :, :4, :4] = 0.0

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.x[index]


@pytest.fixture(scope="module")
def nan_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    geometry = hooks.TokenGeometry(kind="global", prefix=0, grid=(4, 4), stride=(4.0, 4.0))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("inspector")
    logger.addHandler(handler)
    try:
        run = analyze(
            NaNNet().eval(), FourImages(), out=tmp_path_factory.mktemp("nan") / "nan.h5",
            batch_size=1, progress=False, geometry={"attn": geometry}, erf_images=4,
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
    return run, [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def test_nonfinite_batches_are_recorded_per_layer(nan_run) -> None:  # type: ignore[no-untyped-def]
    run, _ = nan_run
    counts = {name: layer.attrs["nonfinite_batches"] for name, layer in run.layers.items()}
    assert counts == {"embed": 0, "mix": 1, "attn": 1}  # one of four batches of one image


def test_nonfinite_layers_are_named_on_the_terminal(nan_run) -> None:  # type: ignore[no-untyped-def]
    _, warnings = nan_run
    (line,) = [w for w in warnings if "NaN or inf" in w]
    assert "2 layer(s): mix (1 batch), attn (1 batch)" in line and "\n" not in line


def test_nonfinite_layers_get_notes_not_numbers(nan_run) -> None:  # type: ignore[no-untyped-def]
    run, _ = nan_run
    for name, layer in (
        ("attention_distance", "attn"),
        ("attention_entropy", "attn"),
        ("head_redundancy", "attn"),
        ("channel_redundancy", "mix"),
    ):
        result = run.analysis[name]
        assert layer not in result["layers"], name  # nanmean would have given a number
        assert result["notes"][layer].startswith("not measured: NaN or inf"), name
    assert "embed" in run.analysis["channel_redundancy"]["layers"]  # finite layers measured
    # Importance runs on the first images and the curve on the held-out rest: the pass
    # whose images hold the non-finite output says so instead of giving numbers.
    said = [n for n in ("importance", "pruning_curve") if "model" in run.analysis[n]["notes"]]
    assert said and all("NaN or inf" in run.analysis[n]["notes"]["model"] for n in said)
    assert not run.analysis["pruning_curve"]["summary"]
    assert "NaN or inf" in run.analysis["pruning_curve"]["notes"]["model"]
    assert "mix" in run.analysis["receptive_field"]["notes"]


def test_nonfinite_layers_are_a_warning_in_the_report(nan_run) -> None:  # type: ignore[no-untyped-def]
    run, _ = nan_run
    html = run.path.with_suffix(".html").read_text(encoding="utf-8")
    assert "NaN or inf activations in 2 layer(s): mix, attn; their metrics are not reported" in (
        html
    )


def _layer(**attrs: object) -> LayerInput:
    summaries = {k: np.full((3, 2), 5.0, np.float32) for k in
                 ("distance", "distance_raw", "prefix_mass")}  # fmt: skip
    summaries["distance"][1] = np.nan  # what one non-finite image leaves in the summaries
    geometry = {"kind": "global", "prefix": 0, "grid": [2, 2], "stride": [1.0, 1.0]}
    return LayerInput("a", "attention", {"geometry": geometry, **attrs}, summaries,
                      distances=np.ones((4, 4)))  # fmt: skip


def test_distance_analyzer_flags_a_nonfinite_layer_instead_of_averaging() -> None:
    distance = REGISTRY["attention_distance"]()
    clean = distance.compute(AnalysisInputs({"a": _layer(nonfinite_batches=0)}))
    np.testing.assert_array_equal(clean.layers["a"].mean, [5.0, 5.0])  # NaN row: no mass
    broken = distance.compute(AnalysisInputs({"a": _layer(nonfinite_batches=1)}))
    assert "a" not in broken.layers
    assert broken.notes["a"].startswith("not measured: NaN or inf in the attention probabilities")


def test_importance_leaves_out_layers_with_nonfinite_gradients() -> None:
    gates = {"heads": GateInput({"ok": np.array([[1.0, 2.0]]), "bad": np.array([[np.inf, 1.0]])})}
    result = REGISTRY["importance"]().compute(AnalysisInputs({}, gates=gates))
    assert set(result.layers) == {"ok"} and "NaN or inf" in result.notes["bad"]
    np.testing.assert_allclose(result.layers["ok"].normalised, [0.0, 1.0])
