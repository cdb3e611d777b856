"""Where runs write: no silent overwrite, one run per path at a time (a lock), no stale
report beside a run file, ``compare`` beside its inputs, leftovers of killed runs, advice
that matches what a ``.partial`` file holds, and names escaped on the terminal.
docs/reliability.md lists each guarantee with its test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import DATA, REPO
from support.fault_child import CLI_ARGS, OPTIONS

from inspector import RunFileError, analyze
from inspector._text import terminal_safe
from inspector.analyzers import DistanceLayer, DistanceResult
from inspector.cli import main
from inspector.present import describe
from inspector.store import RunWriter, claim_output, partial_path, read_run

CHILD = REPO / "tests" / "support" / "fault_child.py"
GOLDEN = DATA / "golden-run-1.1.h5"
QUICK = OPTIONS.replace(limit=1, analyses=("attention_distance",))


def test_a_second_run_does_not_replace_a_complete_run(tmp_path: Path) -> None:
    first = analyze("test_vit", out=tmp_path, options=QUICK)
    before = first.path.read_bytes()
    with pytest.raises(RunFileError) as info:
        analyze("test_vit", out=tmp_path, options=QUICK.replace(seed=1))
    message = str(info.value)
    assert "\n" not in message
    assert f"{first.path} already holds a complete run of test_vit" in message
    assert "--overwrite" in message and "another --out" in message
    assert first.path.read_bytes() == before  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5"]  # no lock, no tmp


def test_the_cli_refuses_in_one_line_and_overwrite_replaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*CLI_ARGS, "--limit", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--overwrite" in err
    assert main([*args, "--seed", "1", "--overwrite"]) == 0
    assert read_run(tmp_path / "test_vit.h5").meta["options"]["seed"] == 1


def test_overwrite_is_not_part_of_the_resume_fingerprint() -> None:
    assert "overwrite" not in QUICK.fingerprint()
    assert QUICK.replace(overwrite=True).fingerprint() == QUICK.fingerprint()


def test_a_report_is_never_left_beside_a_run_it_does_not_describe(tmp_path: Path) -> None:
    first = analyze("test_vit", out=tmp_path, options=QUICK.replace(report=True))
    report = first.path.with_suffix(".html")
    assert report.exists()
    analyze("test_vit", out=tmp_path, options=QUICK.replace(seed=1, overwrite=True))
    assert not report.exists()  # --no-report: the old run's report is gone with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5"]


def test_a_second_claim_on_one_path_fails_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with claim_output(path):
        assert (tmp_path / "run.h5.lock").read_text().startswith(f"pid {os.getpid()}, started")
        held = rf"being written by .*pid {os.getpid()}"
        with pytest.raises(RunFileError, match=held), claim_output(path):
            pass
    assert not (tmp_path / "run.h5.lock").exists()
    with claim_output(path):  # free again
        pass


def test_two_concurrent_runs_on_one_path_the_second_fails_fast(tmp_path: Path) -> None:
    """Two real processes: the second exits 1 at once with one line naming the first's
    pid; the first finishes undisturbed."""
    out, go = tmp_path / "out", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, str(CHILD), "api", str(out), str(go)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert first.stdout is not None
        while b"batch 2" not in first.stdout.readline():  # holds the lock, waits for go
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "inspector", *CLI_ARGS, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 1
        assert second.stderr.count("\n") == 1, second.stderr
        assert f"being written by another inspector process (pid {first.pid}," in second.stderr
        assert time.monotonic() - started < 120  # before any image: model load only
        go.touch()
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert sorted(p.name for p in out.iterdir()) == ["test_vit.h5"]
    assert read_run(out / "test_vit.h5").complete


def test_compare_writes_beside_its_inputs_not_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    a, b = runs / "vit_a.h5", runs / "vit_b.h5"
    shutil.copyfile(GOLDEN, a)
    shutil.copyfile(GOLDEN, b)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["compare", str(a), str(b)]) == 0
    assert (runs / "compare-vit_a-vs-vit_b.html").exists()
    assert list(cwd.iterdir()) == []
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "c.html")]) == 0
    assert (tmp_path / "c.html").exists()
    assert main(["compare", str(a), str(b), "-o", str(tmp_path / "d.html")]) == 0
    assert (tmp_path / "d.html").exists()
    capsys.readouterr()


def test_resume_advice_only_when_the_partial_holds_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``.partial`` file stopped before its first checkpoint holds no image: ``info``
    and the missing-file error do not advise ``--resume``."""
    path = tmp_path / "toy.h5"
    RunWriter(path, {"model": "toy"}, "{}").close()
    partial = partial_path(path)
    assert "no image to resume" in describe(partial)
    assert "--resume" not in describe(partial)
    with pytest.raises(RunFileError) as info:
        read_run(path)
    assert "--resume" not in str(info.value)
    writer = RunWriter(path, {"model": "toy"}, "{}")
    layers = {"fc": {"attrs": {"kind": "channel", "channels": 2, "images": 1}}}
    writer.checkpoint(layers, ["a.jpg"], np.array([-1]), batches_done=1, order=["fc"])
    writer.close()
    assert "NO (1 images done; finish with --resume)" in describe(partial)
    with pytest.raises(RunFileError, match=rf"{partial} holds an unfinished run of 1 images"):
        read_run(path)


# -- names on the terminal ------------------------------------------------------------------

HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202etxt.gpj\r\n"


def test_terminal_safe_escapes_every_control_character() -> None:
    shown = terminal_safe(HOSTILE)
    assert shown == "evil\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202etxt.gpj\\r\\n"
    assert terminal_safe("blocks.0.attn / é 日本") == "blocks.0.attn / é 日本"
    assert terminal_safe("a\nb", keep_newlines=True) == "a\nb"


def _hostile_run(path: Path) -> None:
    meta = {
        "model": HOSTILE,
        "model_requested": HOSTILE,
        "weights_source": "random",
        "weights_reason": HOSTILE,
        "images_source": HOSTILE,
    }
    writer = RunWriter(path, meta, "{}")
    layer = {
        "attrs": {"kind": "attention", "heads": 1, "images": 1, "geometry": {"kind": HOSTILE}},
        "summaries": {"distance": np.ones((1, 1), np.float32)},
    }
    writer.checkpoint({HOSTILE: layer}, [HOSTILE], np.array([-1]), batches_done=1, order=[HOSTILE])
    head = np.array([5.0])
    record = DistanceLayer(
        mean=head, std=head, raw_mean=head, raw_std=head, prefix_mass=head * 0,
        uniform=5.0, windowed=False, images=1,
    )  # fmt: skip
    result = DistanceResult(version="1", params={}, layers={HOSTILE: record})
    writer.write_analysis("attention_distance", result.to_tree(), {}, "1")
    writer.finish()


def test_info_and_the_summary_escape_names_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostile.h5"
    _hostile_run(path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out and "\u202e" not in out
    assert "\\x1b]0;pwned\\x07" in out
    from inspector.present import print_summary

    print_summary(read_run(path))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b" in out


def test_warnings_and_errors_escape_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Log lines (warnings naming layers or images) and error lines go through the same
    escape: an error naming a hostile file name prints it escaped."""
    bad = tmp_path / f"{HOSTILE.strip()}.h5"
    bad.write_text("not a run")
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\\x1b]0;pwned" in err and err.count("\n") == 1


def test_starting_over_names_the_partial_it_discards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "test_vit.h5"
    writer = RunWriter(path, {"model": "test_vit"}, "{}")
    layers = {"fc": {"attrs": {"kind": "channel", "channels": 2, "images": 1}}}
    writer.checkpoint(layers, ["a.jpg"], np.array([-1]), batches_done=1, order=["fc"])
    writer.close()
    with caplog.at_level("WARNING", logger="inspector"):
        analyze("test_vit", out=tmp_path, options=QUICK)
    assert f"starting over: {partial_path(path)} held 1 images" in caplog.text
