"""Test helpers, in one place: tiny real models, the shared folder beside the checkout, the
test data folder, an HTML parser for reports, run-file comparisons. Fixtures live in
``tests/conftest.py``; report view samples in :mod:`support.report_samples`; the child
process of the fault tests in ``support/fault_child.py``."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import nn

from inspector.store import Run

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
SHARED = REPO.parent / "shared"
TRAINED_VIT = SHARED / "weights" / "vit_tiny_patch16_224.safetensors"


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    """A timm model with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def model_input(model: nn.Module, batch: int = 2, seed: int = 1) -> torch.Tensor:
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(seed))


class MHANet(nn.Module):
    """A tiny model built on nn.MultiheadAttention over a 4×4 patch grid."""

    def __init__(self, dim: int = 16, heads: int = 4, batch_first: bool = True) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.batch_first = batch_first
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        if not self.batch_first:
            tokens = tokens.transpose(0, 1)
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.head(out.mean(1))


def sequential_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()


def assert_page_script(html: str) -> None:
    """A report runs one script, ``reports/templates/report.js`` verbatim, allowed by its
    SHA-256 in the page's CSP (no other source, no ``unsafe-inline``), and holds no other
    script but the explorer's JSON data block (data: never executed)."""
    found = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    assert found is not None, "no Content-Security-Policy"
    policy = unescape(found.group(1))
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.DOTALL)
    code = [body for attrs, body in scripts if not attrs]
    data = [attrs for attrs, _ in scripts if attrs]
    assert len(code) == 1, f"{len(code)} script elements run"
    assert code[0] == (REPO / "reports" / "templates" / "report.js").read_text("utf-8")
    assert data in ([], [' type="application/json" id="explorer-data"']), data
    digest = base64.b64encode(hashlib.sha256(code[0].encode("utf-8")).digest()).decode()
    assert re.search(r"script-src ([^;]*);", policy).group(1) == f"'sha256-{digest}'", policy


class Page(HTMLParser):
    """Start tags with their attributes, the text, and the text of each ``<section>`` (by
    id) of an HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.section_text: dict[str, list[str]] = {}
        self._section: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "section":
            self._section = attributes.get("id")
            self.section_text[self._section or ""] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._section is not None:
            self.section_text[self._section].append(data)

    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())

    def in_section(self, section: str) -> str:
        return " ".join(" ".join(self.section_text[section]).split())

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(attrs[k] in (a.get(k) or "").split() for k in attrs)
        ]


def assert_same(a: Any, b: Any, where: str) -> None:
    """Nested dicts of arrays and scalars equal (floats to 1e-12, NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, np.ndarray) and a.dtype.kind == "f":
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12, equal_nan=True, err_msg=where)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(b, a, err_msg=where)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def assert_same_run(expected: Run, got: Run) -> None:
    """Per-image summaries, maps, moments, CKA sums and analysis arrays all equal."""
    assert got.complete
    assert got.sample_ids == expected.sample_ids
    np.testing.assert_array_equal(got.labels, expected.labels)
    assert got.meta["batches_done"] == expected.meta["batches_done"]
    assert list(got.layers) == list(expected.layers)
    for name, layer in expected.layers.items():
        other = got.layers[name]
        assert other.attrs == layer.attrs, name
        assert_same(layer.summaries, other.summaries, f"{name}/summaries")
        assert_same(layer.moments or {}, other.moments or {}, f"{name}/moments")
        assert_same(layer.groups or {}, other.groups or {}, f"{name}/groups")
        if layer.maps is not None:
            np.testing.assert_array_equal(other.maps, layer.maps, err_msg=name)
    assert set(got.analysis) == set(expected.analysis)
    assert_same(expected.analysis, got.analysis, "analysis")


def load_trained_vit(path: Path) -> nn.Module:
    """The trained ViT-Ti as the weights README says: safetensors into timm, strictly (no
    inspector code)."""
    import safetensors.torch

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    model.load_state_dict(safetensors.torch.load_file(path), strict=True)
    return model.eval()


def run_child(
    code: str, *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``, cwd the repository);
    a hang fails the test after ``timeout`` seconds instead of blocking the suite."""
    try:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung for {timeout} s: {exc.cmd[-len(args) - 1 :]}")
