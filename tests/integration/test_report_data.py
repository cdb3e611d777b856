"""Reports from real run files: the view-model bridge, hostile names, re-rendering, compare."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from support import DATA, Page, assert_same
from torch import nn

import inspector
from inspector import analyze
from inspector.analyzers import REGISTRY, AnalysisInputs, PruningInput, Record
from inspector.images import builtin_images_dir
from inspector.present import compare_view, print_summary, run_view
from inspector.store import read_run

GOLDEN = DATA / "golden-run-1.0.h5"

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
    heads = [m for m in view.similarity if m.kind == "head"]
    groups = [m for m in view.similarity if m.kind == "channel"]
    assert len(heads) == 6 and heads[0].matrix.shape == (2, 2)
    # like for like: channel-group CKA matrices next to the head matrices (METRICS §4)
    assert len(groups) == 7 and all(m.measure == "debiased CKA, channel groups" for m in groups)
    measures = {r.measure for r in view.redundancy}
    assert measures == {"debiased CKA", "debiased CKA, channel groups", "|Pearson r|, secondary"}
    primary = [r for r in view.redundancy if "secondary" not in r.measure]
    assert all(
        r.redundancy_low <= 1 - r.effective_units / r.units <= r.redundancy_high for r in primary
    )
    assert view.verdict and view.verdict[0].startswith("Like for like (debiased CKA")
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


def _array_fields(record: Record) -> list[tuple[str, Any, tuple[str, ...]]]:
    """``(name, value, declared dims)`` of every array field, nested records included."""
    out = []
    for f in fields(record):
        item = getattr(record, f.name)
        if isinstance(item, Record):
            out += _array_fields(item)
        elif "dims" in f.metadata and item is not None:
            out.append((f.name, item, f.metadata["dims"]))
    return out


def test_typed_results_of_a_real_run_round_trip(vit_run) -> None:
    """Every analyzer, as computed on test_vit (ERF included): the typed result's tree is
    the one stored, it rebuilds from that tree unchanged, and each array has as many
    axes as its declared dimension labels."""
    run = read_run(vit_run.path)
    assert set(run.analysis) == set(REGISTRY)
    for name, tree in run.analysis.items():
        result = run.result(name)
        stored = {k: v for k, v in tree.items() if k not in ("params", "analyzer_version")}
        assert_same(stored, result.to_tree(), name)
        again = type(result).from_tree(result.to_tree(), result.params, result.version)
        assert again == result and again is not result
        records = [*result.layers.values(), *result.summary.values()]
        assert records, name
        for record in records:
            for field_name, array, dims in _array_fields(record):
                assert np.ndim(array) == len(dims), (name, field_name, dims)
    erf = run.result("receptive_field").layers
    assert {layer.branch for layer in erf.values()} == {"block", "attention"}
    assert all(len(layer.centre) == 2 and layer.map.ndim == 2 for layer in erf.values())
    noted = replace(run.result("importance"), notes={"model": "why"})
    assert noted.to_tree()["notes"] == {"model": "why"}


def _with_threshold(source: Path, target: Path, threshold: float) -> Path:
    """A copy of ``source`` whose pruning result is the analyzer's at ``threshold``."""
    shutil.copy(source, target)
    stored = inspector.open_run(target).result("pruning_curve")
    curves = {kind: PruningInput(c.fractions, c.agreement, c.kl, c.units)
              for kind, c in stored.summary.items()}  # fmt: skip
    result = REGISTRY["pruning_curve"](threshold=threshold).compute(
        AnalysisInputs({}, pruning=curves)
    )
    with h5py.File(target, "r+") as handle:
        group = handle["analysis/pruning_curve"]
        group.attrs["params"] = json.dumps(result.params)
        for kind, curve in result.summary.items():
            group[f"summary/{kind}"].attrs["prunable_fraction"] = curve.prunable_fraction
    return target


def test_threshold_text_follows_the_stored_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _with_threshold(GOLDEN, tmp_path / "strict.h5", 0.95)
    run = inspector.open_run(path)
    assert run.result("pruning_curve").threshold == 0.95
    print_summary(run)
    out = capsys.readouterr().out
    assert "removable at >= 95 % top-1 agreement" in out and "99" not in out.split("---")[-1]
    view = run_view(run)
    assert {c.threshold for c in view.pruning} == {0.95}
    assert any("can be removed at 95 % top-1 agreement" in f for f in view.findings)
    compared = compare_view([run, inspector.open_run(GOLDEN)])
    assert "removable at 95 % agreement" in compared.findings[0]
    assert "removable at 99 % agreement" in compared.findings[1]


def test_compare_view_says_when_and_by_which_inspector() -> None:
    view = compare_view([inspector.open_run(GOLDEN)])
    assert view.tool_version == inspector.__version__
    created = datetime.fromisoformat(view.created)
    assert created.utcoffset() == timedelta(0)
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 600
