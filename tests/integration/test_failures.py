"""Failure isolation: a failed pass or analyzer is a recorded note, the rest is written;
dependencies between analyses resolve themselves; ``info`` advises ``--resume`` only when a
``.partial`` holds images."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector import AnalyzeOptions, analyze
from inspector._cli import EXIT_FAILED_ANALYSES, main
from inspector.analyzers import REGISTRY
from inspector.pipeline import _analyses
from inspector.present import describe, failed_analyses
from inspector.store import read_run

FAST = ["--weights", "random", "--no-report", "--quiet", "--device", "cpu", "--limit", "2"]


def test_a_failed_pass_fails_only_its_analyses_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("planted failure\nsecond line")

    monkeypatch.setattr(_analyses.ErfPass, "run", broken)
    analyses = "attention_distance,receptive_field,importance"
    code = main(["analyze", "test_vit", "--analyses", analyses, "--out", str(tmp_path), *FAST])
    err = capsys.readouterr().err
    assert code == EXIT_FAILED_ANALYSES == 3
    assert "analysis receptive_field failed" in err and "planted failure" in err
    assert "second line" not in err
    run = read_run(tmp_path / "test_vit.h5")
    assert run.complete
    assert set(run.analysis) == {"attention_distance", "importance"}
    assert failed_analyses(run) == {
        "receptive_field": "the receptive-field pass failed: RuntimeError: planted failure"
    }
    text = describe(run.path)
    assert "failed:    receptive_field: the receptive-field pass failed" in text


def test_a_failed_analyzer_is_a_note_and_the_others_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        name = "attention_entropy"
        needs = frozenset({"summaries"})

        def compute(self, inputs: object) -> None:
            raise ValueError("bad numbers")

    monkeypatch.setitem(REGISTRY._classes, "attention_entropy", Broken)
    options = AnalyzeOptions(
        weights="random", limit=2, report=False, progress=False,
        analyses=("attention_distance", "attention_entropy"),
    )  # fmt: skip
    run = analyze("test_vit", "builtin", out=tmp_path, options=options)
    assert set(run.analysis) == {"attention_distance"}
    assert failed_analyses(run) == {"attention_entropy": "ValueError: bad numbers"}


def test_pruning_curve_runs_the_importance_it_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert REGISTRY.closure(["pruning_curve"]) == ("importance", "pruning_curve")
    code = main(
        ["analyze", "test_vit", "--analyses", "pruning_curve", "--out", str(tmp_path), *FAST]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "also running importance: pruning_curve needs importance" in captured.out
    run = read_run(tmp_path / "test_vit.h5")
    assert set(run.analysis) == {"importance", "pruning_curve"}
    assert run.result("pruning_curve").summary  # a real curve, ranked by importance


def test_help_states_the_dependencies(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "pruning_curve needs a gate-gradient pass and ablations and importance" in out
    assert "receptive_field needs a gradient pass" in out


def test_head_redundancy_notes_class_attention_with_too_few_rows(tmp_path: Path) -> None:
    """CaiT's class attention has one querying token per image: on 2 images its head
    outputs hold 2 rows, too few for debiased CKA. That layer is a note; the analysis
    and the other layers still run (the main-job sweep found this crash)."""
    import timm

    model = timm.create_model("cait_xxs24_224", depth=2, img_size=64, pretrained=False).eval()
    options = AnalyzeOptions(
        analyses=("head_redundancy",), limit=2, input_size=64, report=False, progress=False
    )
    run = analyze(model, "builtin", out=tmp_path, options=options)
    assert failed_analyses(run) == {}
    result = run.result("head_redundancy")
    class_attention = "blocks_token_only.0.attn"
    assert "debiased CKA needs at least 4" in result.notes[class_attention]
    assert class_attention not in result.layers
    assert "blocks.0.attn" in result.layers  # the patch-token layers are measured
