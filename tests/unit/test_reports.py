"""Fast tests of :mod:`reports`: sections, escaping, self-containment, downloads, writing."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from support import REPO, Page, assert_page_script
from support.report_samples import (
    COMPARE_SECTIONS,
    EVIL_ID,
    EVIL_MODEL,
    RUN_SECTIONS,
    compare_report,
    planted_explorer,
    vit_report,
)

import reports
from reports import (
    AttentionSample,
    CompareReport,
    ErfLayer,
    PruningCurve,
    ReportError,
    Table,
    ViewError,
    WeightsInfo,
    render_compare_report,
    render_run_report,
    write_report,
)
from reports._explorer import packed_size


@pytest.fixture(scope="module")
def vit_html(vit) -> str:
    return render_run_report(vit)


@pytest.fixture(scope="module")
def cnn_html(cnn) -> str:
    return render_run_report(cnn)


@pytest.fixture(scope="module")
def compare_html(vit, cnn) -> str:
    return render_compare_report(compare_report(vit, cnn))


def _decode(uri: str) -> tuple[str, bytes]:
    head, data = uri.split(",", 1)
    assert head.startswith("data:") and head.endswith(";base64"), head
    return head[5:].split(";")[0], base64.b64decode(data)


def test_run_report_has_every_section(vit_html: str) -> None:
    page = Page(vit_html)
    assert [s["id"] for s in page.find("section")] == list(RUN_SECTIONS)
    assert [a["href"] for a in page.find("a") if (a["href"] or "").startswith("#")] == [
        f"#{s}" for s in RUN_SECTIONS
    ]
    for section in RUN_SECTIONS:
        assert "Not measured" not in page.in_section(section), section
    mimes = [_decode(img["src"] or "")[0] for img in page.find("img")]
    # distance, 2 galleries, ERF maps, input dependence, equivariance, head similarity,
    # redundancy, importance, pruning
    assert len(mimes) == 11  # the MAD figure beside the interaction-distance one
    assert {"image/svg+xml", "image/png", "image/jpeg"} <= set(mimes)
    assert all(img["alt"] for img in page.find("img"))
    assert "Up to 30% of the heads can be removed" in page.in_section("pruning")
    assert "debiased CKA" in page.in_section("similarity")


def test_missing_sections_say_not_measured(cnn_html: str) -> None:
    page = Page(cnn_html)
    assert [s["id"] for s in page.find("section")] == list(RUN_SECTIONS)
    assert "Not measured" in page.in_section("attention-maps")
    assert "No headline findings" in page.in_section("findings")
    for section in ("distance", "erf-maps", "similarity", "redundancy", "importance", "pruning"):
        assert "Not measured" not in page.in_section(section), section
    assert "Pearson correlation" in page.in_section("similarity")


def test_header_facts(vit, vit_html: str) -> None:
    text = Page(vit_html).all_text()
    for fact in (
        "vit_tiny_fake",
        "vit_fake",
        "augreg_in21k_ft_in1k",
        "2 images",
        "224 × 224 px",
        "capture 3.2 s",
        "gradient 8.4 s",
        "inspector 0.1.0",
        "2026-11-26T16:30:00Z",
    ):
        assert fact in text, fact
    for image_id in vit.header.image_ids:
        assert image_id in text


def test_compare_report_sections(compare_html: str) -> None:
    page = Page(compare_html)
    ids = [s["id"] for s in page.find("section")]
    assert tuple(ids) == COMPARE_SECTIONS
    assert "fake ViT" in page.in_section("runs") and "fake CNN" in page.in_section("runs")
    assert len(page.find("img")) == 5
    assert "summary" in page.in_section("numbers")


def test_markup_in_names_is_escaped(vit) -> None:
    header = replace(vit.header, model=EVIL_MODEL)
    view = replace(vit, header=header, title="", erf=(), similarity=(), importance=())
    html = render_run_report(view)
    page = Page(html)
    for _, attrs in page.tags:
        assert "onerror" not in attrs, attrs
    _check_scripts(html)  # only the explorer's data block and its hash-pinned script
    assert "<img src=x" not in "".join(body for _, body in _scripts(html))
    assert not page.find("b")
    text = page.all_text()
    assert EVIL_ID in text
    assert EVIL_MODEL in text
    assert f"inspector report — {EVIL_MODEL}" in text  # the <title>
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html
    (csv_link,) = page.find("a", **{"class": "download-csv"})
    assert csv_link["download"] == "vit_b_bold_b_quoted_script_alert_2_script_per-layer.csv"
    label = CompareReport((replace(compare_report().runs[0], label=EVIL_MODEL),))
    html = render_compare_report(label)
    page = Page(html)
    _check_scripts(html)
    assert not page.find("b")
    assert EVIL_MODEL in page.all_text()


@pytest.mark.parametrize("which", ["vit_html", "cnn_html", "compare_html"])
def test_no_network_references(which: str, request: pytest.FixtureRequest) -> None:
    html: str = request.getfixturevalue(which)
    assert "http://" not in html and "https://" not in html
    for tag, attrs in Page(html).tags:
        for name in ("src", "href", "srcset", "poster", "action", "data"):
            value = attrs.get(name)
            if value is not None:
                scheme = urlsplit(value).scheme
                assert scheme == "data" or value.startswith("#"), (tag, name, value[:60])
                if scheme == "data" and _decode(value)[0] == "image/svg+xml":
                    svg = _decode(value)[1].decode()
                    assert 'href="http' not in svg and "url(http" not in svg
    assert not Page(html).find("link")
    _check_scripts(html)
    assert "@import" not in html and "url(" not in html


def _scripts(html: str) -> list[tuple[str, str]]:
    """``(attributes, body)`` of every ``<script>`` element."""
    return re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.DOTALL)


def _check_scripts(html: str) -> None:
    assert_page_script(html)


def test_random_weights_banner_only_when_random(vit, cnn, vit_html, cnn_html, compare_html) -> None:
    assert not Page(vit_html).find("div", id="random-weights")
    banner = Page(cnn_html).find("div", id="random-weights")
    assert len(banner) == 1 and "banner-random" in (banner[0]["class"] or "")
    assert "offline and no cached weights" in Page(cnn_html).all_text()
    assert Page(compare_html).find("div", id="random-weights")
    runs = compare_report(vit, cnn).runs
    for source in ("pretrained", "file"):
        trained = WeightsInfo(source, "", "weights.safetensors")
        view = CompareReport(tuple(replace(run, weights=trained) for run in runs))
        assert not Page(render_compare_report(view)).find("div", id="random-weights")


def test_downloads_decode_to_the_table(vit, vit_html: str) -> None:
    table = vit.tables[0]
    page = Page(vit_html)
    (csv_link,) = page.find("a", **{"class": "download-csv"})
    (json_link,) = page.find("a", **{"class": "download-json"})
    assert csv_link["download"] == "vit_tiny_fake_per-layer.csv"
    mime, data = _decode(csv_link["href"] or "")
    assert mime == "text/csv"
    header, *rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert tuple(header) == table.columns
    assert len(rows) == len(table.rows)
    for got, want in zip(rows, table.rows, strict=True):
        assert got[0] == want[0]
        assert [float(x) for x in got[1:]] == list(want[1:])  # exact: repr round-trips
    mime, data = _decode(json_link["href"] or "")
    assert mime == "application/json"
    payload = json.loads(data)
    assert payload["columns"] == list(table.columns)
    assert [tuple(r) for r in payload["rows"]] == list(table.rows)


def test_missing_cells_in_downloads() -> None:
    table = Table("t", ("a", "b"), (("x", None), ("y", float("nan")), ("z", np.float32(0.5))))
    from reports._tables import table_csv, table_json

    assert table_csv(table) == "a,b\nx,\ny,\nz,0.5\n"
    assert json.loads(table_json(table))["rows"] == [["x", None], ["y", None], ["z", 0.5]]


def test_write_report_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "run.html"
    assert write_report("<p>one</p>", dest) == dest
    assert write_report("<p>two ü</p>", str(dest)) == dest
    assert dest.read_text(encoding="utf-8") == "<p>two ü</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.html"]

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ReportError, match="No space left"):
        write_report("<p>three</p>", dest)
    assert dest.read_text(encoding="utf-8") == "<p>two ü</p>"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.html"]
    with pytest.raises(ReportError, match="does not exist"):
        write_report("x", tmp_path / "missing" / "run.html")


def test_view_validation(vit) -> None:
    with pytest.raises(ViewError, match="depth"):
        ErfLayer("layer1", 1.5, 3.0)
    with pytest.raises(ViewError, match="lengths differ"):
        PruningCurve("head", [0, 0.5, 1], [1, 1], [0, 0, 0])
    with pytest.raises(ViewError, match="kind"):
        PruningCurve("neuron", [0], [1], [0])  # type: ignore[arg-type]
    with pytest.raises(ViewError, match="uint8"):
        AttentionSample("a.png", np.zeros((8, 8, 3)), ())
    with pytest.raises(ViewError, match="row 0 has 1 cells"):
        Table("t", ("a", "b"), (("x",),))
    with pytest.raises(ViewError, match="source"):
        WeightsInfo("downloaded")
    with pytest.raises(ViewError, match="unique"):
        CompareReport((compare_report().runs[0],) * 2)
    with pytest.raises(ViewError, match="one curve per kind"):
        replace(vit, pruning=vit.pruning * 2)
    erf = vit.erf[0]
    assert erf.map is not None and not erf.map.flags.writeable
    with pytest.raises(ReportError):
        render_run_report(compare_report())  # type: ignore[arg-type]


def test_rendering_is_deterministic(compare_html: str, vit, cnn) -> None:
    assert render_compare_report(compare_report(vit, cnn)) == compare_html


def test_size_budget_for_a_vit_base_with_nine_images() -> None:
    """A 12-layer, 12-head ViT with 9 sample images stays far below 5 MB."""
    folder = REPO / "inspector" / "data" / "sample_images"
    paths = sorted(folder.glob("*.jpg"))[:9]
    if len(paths) == 9:
        from PIL import Image

        images = [np.asarray(Image.open(p).convert("RGB").resize((224, 224))) for p in paths]
        ids = [p.name for p in paths]
    else:  # bundled images not present: noisy synthetic images are a worse case for JPEG
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(9)]
        ids = [f"noise_{i}.png" for i in range(9)]
    view = vit_report(layers=12, heads=12, images=images, image_ids=ids, explorer=False)
    html = render_run_report(view)
    assert len(html.encode("utf-8")) < 3_000_000
    page = Page(html)
    assert "Showing 3 of 9 images, 4 of 12 layers (evenly spaced)." in page.all_text()
    # The explorer at what a ViT-B gets within the budget: 2 images, every 3rd query row.
    names = [a.name for a in view.attention_distance]
    explorer = planted_explorer(images[:2], ids[:2], names, 12, step=3)
    assert packed_size(explorer) <= reports.Explorer.BUDGET
    html = render_run_report(replace(view, explorer=explorer))
    assert len(html.encode("utf-8")) < 5_000_000


def test_explorer_over_the_budget_is_refused(vit) -> None:
    names = [a.name for a in vit.attention_distance] * 12
    images = [s.image for s in vit.attention_maps] * 3
    big = planted_explorer(images, [f"i{i}" for i in range(len(images))], names, 12)
    with pytest.raises(ReportError, match="over the page budget"):
        render_run_report(replace(vit, explorer=big))


def test_package_imports_nothing_forbidden() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.path[:0] = [{samples!r}, {repo!r}]
        from report_samples import compare_report  # not via support/__init__ (torch)
        import reports
        reports.render_compare_report(compare_report())
        bad = [m for m in ("torch", "h5py", "timm", "inspector", "hooks", "matplotlib.pyplot")
               if m in sys.modules]
        assert reports.__file__.startswith({repo!r}), reports.__file__
        print(bad)
        """
    ).format(samples=str(REPO / "tests" / "support"), repo=str(REPO))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_public_surface() -> None:
    assert sorted(reports.__all__) == sorted(set(reports.__all__))
    for name in reports.__all__:
        assert getattr(reports, name).__module__.startswith("reports.")
    from reports._render import environment

    assert environment().autoescape is True


def test_dynamics_section_shows_both_plots_its_verdict_in_the_verdict_section(
    vit, vit_html: str
) -> None:
    page = Page(vit_html)
    text = page.in_section("dynamics")
    verdict = page.in_section("verdict")
    for line in vit.verdict:  # one verdict section: the dynamics sentences are there
        assert line in verdict and line not in text
    assert any(line.startswith("Interaction is") for line in vit.verdict)
    assert "input dependence" in text.lower()
    figures = vit_html.split('id="dynamics"')[1].split("</section>")[0]
    assert figures.count("<img") == 2


def test_compare_dynamics_section_has_both_runs(compare_html: str) -> None:
    body = compare_html.split('id="dynamics"')[1].split("</section>")[0]
    assert body.count("<img") == 2
    assert "Not measured" not in body


def test_figures_carry_hover_values_where_their_points_are(vit) -> None:
    """Hover points of the distance figure: one per head, at the head's depth and value
    (the axis transform is checked against two heads' pixel positions)."""
    from reports._figures import distance_figure

    fig = distance_figure(vit.attention_distance, vit.erf, centre=False)
    heads = sum(a.head_distance.size for a in vit.attention_distance)
    labels = [p[2] for p in fig.points]
    assert len([t for t in labels if " · head " in t]) == heads
    first = vit.attention_distance[0]
    point = next(p for p in fig.points if p[2].startswith(f"{first.name} · head 0:"))
    assert point[2] == f"{first.name} · head 0: {first.head_distance[0]:.1f} px"
    last = vit.attention_distance[-1]
    other = next(p for p in fig.points if p[2].startswith(f"{last.name} · head 0:"))
    assert 0 < point[0] < other[0] < 1  # deeper is further right
    higher = point if first.head_distance[0] > last.head_distance[0] else other
    lower = other if higher is point else point
    assert higher[1] < lower[1]  # a larger distance is higher up (smaller y from the top)
    page = Page(render_run_report(vit))
    assert any(img.get("data-points") for img in page.find("img"))


def test_figure_legends_are_never_clipped() -> None:
    """Long legend labels in four columns reached outside the figure ("(attention
    branc"); encoding a figure wraps its legend until every entry is inside (measured on
    the drawn text boxes). The unfitted figure is the control: it is clipped."""
    from reports._plot import clipped_text, new_figure, to_svg

    def figure() -> Any:
        fig = new_figure(6.0, 3.2)
        ax = fig.add_subplot()
        labels = [
            "head (windowed attention)",
            "mean over heads",
            "uniform attention",
            "ERF mean distance (attention branch)",
            "ERF mean distance (block output)",
        ]
        for label in labels:
            ax.plot([0, 1], [0, 1], label=label)
        fig.legend(loc="outside lower center", ncols=4)
        return fig

    assert "ERF mean distance (block output)" in clipped_text(figure())  # type: ignore[arg-type]
    fig: Any = figure()
    to_svg(fig, "a figure")
    assert clipped_text(fig) == []
    assert (
        sorted(t.get_text() for t in fig.legends[0].texts)[0]
        == "ERF mean distance (attention branch)"
    )


def test_layers_sharing_a_depth_draw_one_line_through_their_mean() -> None:
    """Three convolutions of one block at depth 0.5 and one at 1.0: the line has two
    vertices (the block means), each layer stays a marker (no vertical saw-tooth)."""
    from reports._plot import depth_line, new_figure

    fig = new_figure(4, 3)
    ax = fig.add_subplot()
    depth_line(ax, [0.5, 0.5, 0.5, 1.0], [10.0, 30.0, 20.0, 40.0], "-D", label="ERF")
    line, dots = ax.get_lines()
    assert list(line.get_xdata()) == [0.5, 1.0] and list(line.get_ydata()) == [20.0, 40.0]
    assert line.get_label() == "ERF" and dots.get_linestyle() == "None"
    assert sorted(dots.get_ydata()) == [10.0, 20.0, 30.0, 40.0]
    ax2 = new_figure(4, 3).add_subplot()
    depth_line(ax2, [0.2, 0.4], [1.0, 2.0])
    assert len(ax2.get_lines()) == 1  # distinct depths: a plain line


def test_compare_runs_state_their_image_counts(vit, cnn) -> None:
    page = Page(render_compare_report(compare_report(vit, cnn)))
    text = " ".join(page.section_text["runs"])
    assert f"{len(vit.header.image_ids)} captured" in text
    assert f"ERF pass: {len(vit.header.image_ids)} images" in text


def test_erf_gallery_keeps_one_series_and_panel_titles_whole(vit) -> None:
    """Block outputs and attention branches interleave in model order; the gallery shows
    the block outputs only and says where the others are. Titles wrap, never cut."""
    from reports._plot import wrapped
    from reports._sections_run import _erf_maps

    branches = tuple(replace(e, name=e.name + ".attn", series="attention branch") for e in vit.erf)
    mixed = replace(vit, erf=tuple(x for pair in zip(vit.erf, branches, strict=True) for x in pair))
    context = _erf_maps(mixed)
    assert context["figure"] is not None
    assert "the attention branch ERFs are in the distance figure" in context["note"]
    shown = _erf_maps(replace(vit, erf=vit.erf))
    assert context["figure"].src == shown["figure"].src  # the same block-output maps
    assert wrapped("stages.2.blocks.11.attn").replace("\n", "") == "stages.2.blocks.11.attn"
