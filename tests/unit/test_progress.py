"""The one progress display of a run (``inspector.pipeline``): step names, counts, an
overall ETA, and plain lines (nothing redrawn) when the output is not a terminal."""

from __future__ import annotations

import io

import pytest

from inspector.pipeline import Progress
from inspector.pipeline._progress import PRIOR


def test_log_output_names_each_step_once_with_counts_and_overall_eta(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("inspector.pipeline._progress.LOG_EVERY", 0.0)
    stream = io.StringIO()  # not a terminal
    progress = Progress(["capture", "receptive field"], stream=stream)
    with progress.step("capture", 2, "images") as step:
        step.update(1)
        step.update(1)
    with progress.step("receptive field", 3, "layers") as step:
        for _ in range(3):
            step.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/2] capture: 2 images ..."
    assert lines[1].startswith("[1/2] capture: 1/2 images, all steps ~")
    assert lines[1].endswith(" left")
    assert any(line.startswith("[1/2] capture: done, 2 images in ") for line in lines)
    assert lines[-1].startswith("[2/2] receptive field: done, 3 layers in ")
    assert len(lines) == len(set(lines))  # no line printed twice
    assert "\r" not in stream.getvalue()  # nothing redrawn


def test_failed_step_prints_no_done_line_and_disabled_prints_nothing() -> None:
    stream = io.StringIO()
    progress = Progress(["pruning"], stream=stream)
    with pytest.raises(RuntimeError), progress.step("pruning", 4, "forwards"):
        raise RuntimeError("boom")
    assert "done" not in stream.getvalue()
    quiet = io.StringIO()
    with Progress(["capture"], enabled=False, stream=quiet).step("capture", 1, "images") as s:
        s.update(1)
    assert quiet.getvalue() == ""


def test_overall_eta_scales_the_later_steps_by_how_the_finished_ones_ran() -> None:
    progress = Progress(["capture", "receptive field", "pruning"], stream=io.StringIO())
    progress.actual["capture"] = 2 * PRIOR["capture"]  # twice its prior
    assert progress.scaled("pruning") == pytest.approx(2 * PRIOR["pruning"])


def test_extend_grows_a_steps_total() -> None:
    stream = io.StringIO()
    progress = Progress(["receptive field"], stream=stream)
    with progress.step("receptive field", 3, "layers") as step:
        step.update(3)
        step.extend(3)  # an adaptive pass takes another batch
        assert step.total == 6 and step.remaining() >= 0
        step.update(3)
    assert stream.getvalue().splitlines()[-1].startswith("[1/1] receptive field: done, 6 layers")
