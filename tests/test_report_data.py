"""Reports from real run files: the view-model bridge, hostile names, re-rendering, compare."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import Page
from PIL import Image
from torch import nn

from inspector._api import analyze
from inspector._images import builtin_images_dir
from inspector.report_data import compare_view, run_view
from inspector.store import read_run

EVIL_FILE = "<img src=x onerror=alert(1)>.png"
EVIL_MODEL = "<script>alert('model')</script>Net"
FAST = ("attention_distance", "attention_entropy", "head_redundancy", "channel_redundancy",
        "receptive_field", "importance", "pruning_curve")  # fmt: skip


def assert_inert(html: str, literal: str) -> None:
    page = Page(html)
    assert not [t for t, a in page.tags if any(k.startswith("on") for k in a)], "event handler"
    assert not [a for t, a in page.tags if t == "script"], "script element"
    assert literal in "".join(page.text), f"{literal!r} not shown as text"


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(builtin_images_dir() / name, folder / name)
    with Image.open(builtin_images_dir() / "rocket.jpg") as image:
        image.save(folder / EVIL_FILE)
    return folder


@pytest.fixture(scope="module")
def vit_run(hostile_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("run") / "vit.h5"
    return analyze(
        "test_vit", hostile_folder, out=out, weights="random", progress=False, analyses=FAST
    )


def test_view_model_from_a_real_run(vit_run) -> None:
    view = run_view(vit_run)
    assert view.header.model == "test_vit" and view.header.weights.source == "random"
    assert len(view.attention_distance) == 6
    depths = [d.depth for d in view.attention_distance]
    assert depths == sorted(depths) and 0 < depths[0] < depths[-1] <= 1
    assert {e.series for e in view.erf} == {"block output", "attention branch"}
    assert {r.kind for r in view.redundancy} == {"head", "channel"}
    assert {c.kind for c in view.pruning} == {"head", "channel"}
    assert len(view.similarity) == 6 and view.similarity[0].matrix.shape == (2, 2)
    assert view.attention_maps and view.attention_maps[0].layers[0].maps.shape == (2, 10, 10)
    assert any("RANDOM" in f for f in view.findings)
    assert view.tables[0].rows


def test_hostile_image_name_is_text_in_the_written_report(vit_run) -> None:
    assert EVIL_FILE in vit_run.sample_ids
    html = vit_run.path.with_suffix(".html").read_text(encoding="utf-8")
    assert_inert(html, EVIL_FILE)
    assert "http://" not in html and "https://" not in html


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, 4),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_hostile_model_name_is_text(hostile_folder: Path, tmp_path: Path) -> None:
    cls = type(EVIL_MODEL, (TinyCNN,), {})
    torch.manual_seed(0)
    run = analyze(cls(), hostile_folder, out=tmp_path, progress=False, analyses=FAST)
    assert run.model == EVIL_MODEL
    html = run.path.with_suffix(".html").read_text(encoding="utf-8")
    assert_inert(html, EVIL_MODEL)
    assert "<" not in run.path.name and ">" not in run.path.name


def test_report_command_re_renders(vit_run, tmp_path: Path) -> None:
    target = tmp_path / "again.html"
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "report", str(vit_run.path), "-o", str(target)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = target.read_text(encoding="utf-8")
    assert "test_vit" in again and 'id="distance"' in again
    assert_inert(again, EVIL_FILE)


def test_compare_view_puts_runs_on_shared_axes(vit_run, tmp_path: Path) -> None:
    cnn = analyze(
        "test_resnet", "builtin", out=tmp_path, weights="random", limit=2,
        progress=False, report=False, analyses=FAST,
    )  # fmt: skip
    view = compare_view([read_run(vit_run.path), cnn])
    assert [r.model for r in view.runs] == ["test_vit", "test_resnet"]
    assert view.runs[0].attention_distance and not view.runs[1].attention_distance
    assert view.runs[1].erf and all(0 < e.depth <= 1 for e in view.runs[1].erf)
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "compare", str(vit_run.path), str(cnn.path),
         "-o", str(tmp_path / "cmp.html")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cmp.html").stat().st_size > 10_000
