"""Open rendered reports in real headless Chromium (Debian's ``/usr/bin/chromium``).

Driven by Playwright for Python, pointed at the system Chromium with
``executable_path`` (``playwright install`` is never needed). Playwright gives
each launch a fresh temporary profile (``--user-data-dir``). Skipped, with the
reason, when Chromium or Playwright is missing.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from matplotlib.image import imread
from support.report_samples import cnn_report, compare_report, vit_report

from reports import RunReport, WeightsInfo, render_compare_report, render_run_report, write_report

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOCAL_SCHEMES = {"file", "data", "blob"}


@dataclass
class Visit:
    """What happened while a page loaded."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: np.ndarray | None = None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright for Python is not installed (pip install playwright; "
        "no `playwright install` needed: the test drives /usr/bin/chromium)",
    )
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def random_vit() -> RunReport:
    return vit_report(weights=WeightsInfo("random", "offline and no cached weights"))


def _open(browser: Any, path: Path) -> tuple[Any, Visit]:
    """Load ``path``; record console errors and every request; block non-local ones."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    visit = Visit()
    page.on(
        "console",
        lambda m: visit.console_errors.append(m.text) if m.type == "error" else None,
    )
    page.on("pageerror", lambda exc: visit.console_errors.append(f"page error: {exc}"))
    page.on("request", lambda r: visit.requests.append(r.url))
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if urlsplit(route.request.url).scheme in LOCAL_SCHEMES
            else route.abort()
        ),
    )
    page.goto(path.as_uri(), wait_until="load", timeout=20_000)
    png = page.screenshot(full_page=True, timeout=20_000)
    visit.screenshot = imread(io.BytesIO(png), format="png")
    return page, visit


def _check_clean(page: Any, visit: Visit) -> None:
    assert visit.console_errors == []
    assert [u for u in visit.requests if urlsplit(u).scheme not in LOCAL_SCHEMES] == []
    sizes = page.evaluate("Array.from(document.images, i => i.complete ? i.naturalWidth : -1)")
    assert sizes and all(w > 0 for w in sizes), sizes  # every figure decoded
    shot = visit.screenshot
    assert shot is not None and shot.shape[0] > 900
    assert float(shot[..., :3].var()) > 0.01  # not blank


def test_run_report_in_chromium(browser: Any, random_vit: RunReport, tmp_path: Path) -> None:
    path = write_report(render_run_report(random_vit), tmp_path / "vit.html")
    page, visit = _open(browser, path)
    try:
        _check_clean(page, visit)
        banner = page.locator("#random-weights")
        assert banner.is_visible()
        colour = page.evaluate(
            "getComputedStyle(document.getElementById('random-weights')).backgroundColor"
        )
        assert colour == "rgb(180, 35, 24)"
        rgb = visit.screenshot[..., :3]
        red = (rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.25) & (rgb[..., 2] < 0.25)
        assert red.mean() > 0.002  # the banner is painted
        with page.expect_download(timeout=10_000) as info:
            page.click("a.download-csv")
        download = info.value
        assert download.suggested_filename == "vit_tiny_fake_per-layer.csv"
        header, *rows = list(csv.reader(io.StringIO(Path(download.path()).read_text("utf-8"))))
        table = random_vit.tables[0]
        assert tuple(header) == table.columns
        assert [[r[0], *map(float, r[1:])] for r in rows] == [list(r) for r in table.rows]
    finally:
        page.context.close()


def test_compare_report_in_chromium(browser: Any, random_vit: RunReport, tmp_path: Path) -> None:
    path = write_report(render_compare_report(compare_report(random_vit)), tmp_path / "cmp.html")
    page, visit = _open(browser, path)
    try:
        _check_clean(page, visit)
        assert page.locator("section#distance img").count() == 1
    finally:
        page.context.close()


def test_harness_sees_an_external_request(browser: Any, tmp_path: Path) -> None:
    """Negative control: a page that does reference the network is caught."""
    html = render_compare_report(compare_report()).replace(
        "<main>", '<main><img src="https://example.invalid/pixel.png" alt="">', 1
    )
    path = write_report(html, tmp_path / "tampered.html")
    page, visit = _open(browser, path)
    try:
        assert any("example.invalid" in u for u in visit.requests)
        assert visit.console_errors  # CSP refusal (or the aborted load) is reported
    finally:
        page.context.close()


def _state(page: Any) -> list[int]:
    """``[layer, head, image, query cell, strongest key cell]`` the explorer drew last."""
    return [int(v) for v in page.get_attribute("#ex-root", "data-state").split(",")]


def test_explorer_switches_layer_head_image_and_query(
    browser: Any, random_vit: RunReport, tmp_path: Path
) -> None:
    """The planted rows (report_samples.planted_explorer): head h of query (r, c) looks
    most at (r, c + h mod 14), the class token at (7, 7)."""
    path = write_report(render_run_report(random_vit), tmp_path / "vit.html")
    page, visit = _open(browser, path)
    try:
        _check_clean(page, visit)  # the pinned script ran: no CSP refusal, no request
        assert page.locator("#ex-root").is_visible()
        assert _state(page) == [0, 0, 0, -1, 7 * 14 + 7]
        page.select_option("#ex-layer", "2")
        page.select_option("#ex-head", "1")
        page.select_option("#ex-image", "1")
        assert _state(page) == [2, 1, 1, -1, 7 * 14 + 7]
        page.select_option("#ex-query", "cell")
        page.fill("#ex-row", "3")
        page.fill("#ex-col", "5")
        assert _state(page) == [2, 1, 1, 3 * 14 + 5, 3 * 14 + 6]
        assert "token (3, 5)" in page.text_content("#ex-readout")
        canvas = page.locator("#ex-canvas")
        box = canvas.bounding_box()
        # Token (4, 10) is pixels 64-80 down and 160-176 across of the 224-px image.
        canvas.click(position={"x": box["width"] * 168 / 224, "y": box["height"] * 72 / 224})
        assert _state(page) == [2, 1, 1, 4 * 14 + 10, 4 * 14 + 11]
        page.select_option("#ex-head", "2")
        assert _state(page) == [2, 2, 1, 4 * 14 + 10, 4 * 14 + 12]
        assert visit.console_errors == []
        assert [u for u in visit.requests if urlsplit(u).scheme not in LOCAL_SCHEMES] == []
    finally:
        page.context.close()


def test_explorer_without_script_shows_the_static_fallback(
    browser: Any, random_vit: RunReport, tmp_path: Path
) -> None:
    path = write_report(render_run_report(random_vit), tmp_path / "vit.html")
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(path.as_uri(), wait_until="load")
        assert not page.locator("#ex-root").is_visible()
        assert "The explorer needs script" in page.locator("section#explorer").inner_text()
        assert page.locator("section#attention-maps img").count() >= 1  # the static maps
    finally:
        context.close()


def test_hover_shows_the_value_of_the_nearest_point(
    browser: Any, random_vit: RunReport, tmp_path: Path
) -> None:
    path = write_report(render_run_report(random_vit), tmp_path / "vit.html")
    page, visit = _open(browser, path)
    try:
        figure = page.locator("section#mad img[data-points]")
        points = json.loads(figure.get_attribute("data-points"))
        x, y, label = points[0]
        box = figure.bounding_box()
        figure.hover(position={"x": x * box["width"], "y": y * box["height"]})
        tip = page.locator(".hover-tip")
        assert tip.is_visible() and tip.inner_text() == label
        assert " · head 0: " in label and label.endswith(" px")
        figure.hover(position={"x": 2, "y": 2})  # the corner: no point within 12 px
        assert not tip.is_visible()
        assert visit.console_errors == []
    finally:
        page.context.close()


def test_printing_shows_every_table_row(
    browser: Any, random_vit: RunReport, tmp_path: Path
) -> None:
    """On screen a long table scrolls inside a 32rem box; on paper every row is laid out
    (the box would cut the table at the page edge)."""
    from dataclasses import replace

    from reports import Table

    rows = tuple((f"blocks.{i // 3}.attn", i % 3, float(i)) for i in range(120))
    long = Table("per-head numbers", ("layer", "head", "attention_distance.mean"), rows)
    view = replace(random_vit, tables=(long, *random_vit.tables))
    path = write_report(render_run_report(view), tmp_path / "print.html")
    page, visit = _open(browser, path)
    try:
        assert visit.console_errors == []
        measure = (
            "() => Array.from(document.querySelectorAll('.table-wrap'), "
            "w => [w.scrollHeight, w.clientHeight])"
        )
        on_screen = page.evaluate(measure)
        assert on_screen[0][0] > on_screen[0][1]  # the control: it scrolls on screen
        page.emulate_media(media="print")
        assert all(scroll <= client for scroll, client in page.evaluate(measure))
        assert page.locator(".table-wrap").first.locator("tbody tr").count() == 120
    finally:
        page.context.close()


_OUTSIDE = """() => {
  const svg = document.querySelector('svg');
  const box = svg.viewBox.baseVal;
  const out = [];
  for (const g of svg.querySelectorAll('g[id^="legend"], g[id^="text"]')) {
    const b = g.getBBox();
    if (b.width === 0 && b.height === 0) continue;
    if (b.x < box.x - 0.5 || b.y < box.y - 0.5 ||
        b.x + b.width > box.x + box.width + 0.5 || b.y + b.height > box.y + box.height + 0.5)
      out.push(g.id);
  }
  return out;
}"""


def _clipped_in_chromium(browser: Any, svg: str) -> list[str]:
    """Legend and text groups of an SVG figure that reach outside its viewBox, measured
    on the drawn geometry in Chromium (matplotlib draws text as paths)."""
    page = browser.new_page()
    try:
        page.set_content(f"<!DOCTYPE html><html><body>{svg}</body></html>")
        return page.evaluate(_OUTSIDE)
    finally:
        page.close()


def _svgs(html: str) -> list[str]:
    out = []
    for src in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html):
        text = base64.b64decode(src).decode("utf-8")
        out.append(text[text.index("<svg") :])
    return out


def test_no_legend_or_title_reaches_outside_its_figure(browser: Any, random_vit: RunReport) -> None:
    from matplotlib.figure import Figure

    # The control: a legend too wide for its figure, not fitted, is caught.
    fig = Figure(figsize=(4, 2))
    ax = fig.add_subplot()
    for label in ("ERF mean distance (attention branch)", "ERF mean distance (block output)"):
        ax.plot([0, 1], [0, 1], label=label)
    fig.legend(loc="outside lower center", ncols=2)
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    control = buf.getvalue().decode()
    assert _clipped_in_chromium(browser, control[control.index("<svg") :])

    pages = [
        render_run_report(random_vit),
        render_run_report(cnn_report()),
        render_compare_report(compare_report(random_vit, cnn_report())),
    ]
    figures = [svg for html in pages for svg in _svgs(html)]
    assert len(figures) >= 6
    for svg in figures:
        assert _clipped_in_chromium(browser, svg) == []
