"""Fast tests of the reports' declared sections: their order, ids, titles and partials,
what each reads, when it counts as measured, and adding one."""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import jinja2
import pytest
import tomllib
from support import REPO, Page
from support.report_samples import COMPARE_SECTIONS, RUN_SECTIONS, compare_report

from reports import COMPARE_SECTIONS as COMPARE_SPECS
from reports import RUN_SECTIONS as RUN_SPECS
from reports import (
    AttentionSample,
    CompareReport,
    CompareRun,
    PruningCurve,
    ReportError,
    RunHeader,
    RunReport,
    SectionList,
    SectionSpec,
    WeightsInfo,
    no_context,
    render_run_report,
)
from reports._figures import redundancy_figure
from reports._render import render_sections

RUN_TITLES = (
    "Verdict: heads vs channels, like for like",
    "Headline findings",
    "Interaction distance vs depth",
    "Mean attention distance",
    "Attention maps",
    "Attention explorer",
    "Effective receptive fields",
    "Fixed vs dynamic, equivariance",
    "Unit similarity",
    "Redundancy vs depth",
    "Importance",
    "Pruning curves",
    "Numbers",
    "Method notes",
)
COMPARE_TITLES = (
    "Verdict: heads vs channels, like for like",
    "Runs",
    "Headline findings",
    "Interaction distance vs depth",
    "Fixed vs dynamic, equivariance",
    "Redundancy vs depth",
    "Prunable fractions",
    "Numbers",
    "Method notes",
)


def test_section_lists_keep_order_ids_and_titles() -> None:
    assert RUN_SPECS.ids == RUN_SECTIONS
    assert tuple(s.title for s in RUN_SPECS) == RUN_TITLES
    assert COMPARE_SPECS.ids == COMPARE_SECTIONS
    assert tuple(s.title for s in COMPARE_SPECS) == COMPARE_TITLES


def test_every_partial_exists_and_every_section_field_is_read() -> None:
    from reports._render import environment

    templates = REPO / "reports" / "templates"
    used = set()
    for spec in (*RUN_SPECS, *COMPARE_SPECS):
        assert (templates / spec.template).is_file(), spec.template
        environment().get_template(spec.template)  # parses
        used.add(spec.template)
    assert {p.name for p in templates.glob("section-*.html.j2")} == used  # no orphan partial
    run_reads = {path for spec in RUN_SPECS for path in spec.reads}
    page_facts = {"header", "title"}
    assert {f.name for f in fields(RunReport)} - page_facts <= run_reads
    compare_reads = {path for spec in COMPARE_SPECS for path in spec.reads}
    page_facts = {"created", "tool_version", "title"}
    assert {f.name for f in fields(CompareReport)} - page_facts <= compare_reads
    run_facts = {"label", "model", "weights"}  # the "runs" section shows them
    assert {f"runs.{f.name}" for f in fields(CompareRun) if f.name not in run_facts} <= (
        compare_reads
    )
    assert "runs" in compare_reads


def test_templates_are_package_data() -> None:
    """Every template is matched by the package-data globs, so a wheel ships it."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["reports"]
    root = REPO / "reports"
    shipped = {p for g in globs for p in root.glob(g) if p.is_file()}
    templates = {p for p in (root / "templates").rglob("*") if p.is_file()}
    assert templates <= shipped, sorted(str(p.relative_to(root)) for p in templates - shipped)


def _drawn(context: dict) -> bool:
    return context.get("figure") is not None or any(
        context.get(k) for k in ("galleries", "groups", "figures", "tables", "data")
    )


def test_measured_predicates_agree_with_the_builders(vit, cnn) -> None:
    """A section counts as measured exactly when its builder has something to draw."""
    empty = RunReport(RunHeader("m", "m", WeightsInfo("file"), (), (32, 32)))
    no_maps = replace(
        vit,
        attention_maps=tuple(AttentionSample(s.image_id, s.image, ()) for s in vit.attention_maps),
        erf=tuple(replace(e, map=None) for e in vit.erf),
    )
    for view in (vit, cnn, empty, no_maps, replace(empty, erf=cnn.erf)):
        for spec in RUN_SPECS:
            if spec.build is not no_context:
                assert spec.is_measured(view) == _drawn(spec.build(view)), spec.id
    unpruned = CompareRun("a", "m", WeightsInfo("pretrained"))
    no_removable = replace(
        compare_report().runs[0], pruning=(PruningCurve("head", [0, 1], [1, 0], [0, 1]),)
    )
    for view in (
        compare_report(vit, cnn),
        CompareReport((unpruned,)),
        CompareReport((no_removable,)),
    ):
        for spec in COMPARE_SPECS:
            if spec.build is not no_context:
                assert spec.is_measured(view) == _drawn(spec.build(view)), spec.id
    assert not RUN_SPECS["attention-maps"].is_measured(no_maps)
    assert not RUN_SPECS["erf-maps"].is_measured(no_maps)
    assert not COMPARE_SPECS["pruning"].is_measured(CompareReport((no_removable,)))


def test_adding_a_section_is_one_spec_and_one_partial(vit, tmp_path: Path) -> None:
    """A new section: a spec in (a copy of) the list and a partial file; nothing else changes."""
    from reports._render import environment

    (tmp_path / "section-probe.html.j2").write_text(
        '{% import "_macros.html.j2" as m %}\n'
        '<p class="probe">{{ ctx.word }} — {{ view.redundancy | length }} layers</p>\n'
        "{{ m.figure(ctx.figure) }}\n",
        encoding="utf-8",
    )
    env = environment().overlay(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(tmp_path), environment().loader])
    )
    probe = SectionSpec(
        "probe",
        "Probe <section>",
        reads="redundancy",
        build=lambda view: {"word": "<b>probe</b>", "figure": redundancy_figure(view.redundancy)},
    )
    sections = RUN_SPECS.with_section(probe, after="distance")
    assert RUN_SPECS.ids == RUN_SECTIONS  # the shipped list is untouched

    page = Page(render_sections(vit, sections, env=env))
    ids = ["verdict", "findings", "distance", "probe", *RUN_SECTIONS[3:]]
    assert [s["id"] for s in page.find("section")] == ids
    assert [a["href"] for a in page.find("a") if (a["href"] or "").startswith("#")] == [
        f"#{s}" for s in ids
    ]
    assert page.in_section("probe") == "Probe <section> <b>probe</b> — 3 layers"  # escaped
    assert not page.find("b") and len(page.find("p", **{"class": "probe"})) == 1
    assert len(page.find("img")) == 12  # the eleven of test_run_report_has_every_section + probe

    absent = Page(render_sections(replace(vit, redundancy=()), sections, env=env))
    assert "Not measured in this run" in absent.in_section("probe")
    assert "Probe <section> · not measured" in absent.all_text()  # table of contents
    assert not absent.find("p", **{"class": "probe"})
    assert Page(render_run_report(vit)).find("section", id="probe") == []


def test_section_declarations_are_checked() -> None:
    with pytest.raises(ReportError, match="RunReport page have the id 'pruning'"):
        RUN_SPECS.with_section(SectionSpec("pruning", "Again", reads="pruning"))
    with pytest.raises(ReportError, match="no field 'erfs'; did you mean 'erf'"):
        SectionList(RunReport, (SectionSpec("x", "X", reads="erfs"),))
    with pytest.raises(ReportError, match="not a tuple of records"):
        SectionList(RunReport, (SectionSpec("x", "X", reads="header.model.x"),))
    SectionList(CompareReport, (SectionSpec("x", "X", reads="runs.erf"),))  # a path through runs
    with pytest.raises(ReportError, match="no field 'erfs'"):
        SectionList(CompareReport, (SectionSpec("x", "X", reads="runs.erfs"),))
    with pytest.raises(ReportError, match="lower-case HTML id"):
        SectionSpec("Erf Maps", "X", reads="erf")
    with pytest.raises(ReportError, match="reads must name"):
        SectionSpec("x", "X", reads=())
    with pytest.raises(KeyError, match="did you mean 'erf-maps'"):
        RUN_SPECS["erf-map"]
    with pytest.raises(KeyError):
        RUN_SPECS.with_section(SectionSpec("x", "X", reads="erf"), after="nowhere")
    with pytest.raises(ReportError, match="show a RunReport"):
        RUN_SPECS.sections(compare_report())
