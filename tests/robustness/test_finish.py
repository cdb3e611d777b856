"""Failures and Ctrl-C at the end of a run (issue 19): a write that fails while the
finished run file is written says what the ``.partial`` file really holds and leaves no
destructor traceback; the report step's errors and interrupts point at ``inspector
report``, not at ``--resume``; Ctrl-C is never swallowed and an ignored SIGINT stays
ignored; a resume refuses an image folder that changed. Runs that could crash or hang
run in a child process with a timeout.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import pytest
from support import REPO
from support.fault_child import CLI_ARGS, OPTIONS

from inspector import RunFileError, analyze
from inspector._errors import Interrupted, ReportInterrupted
from inspector.cli import main
from inspector.images import builtin_images_dir
from inspector.pipeline import defer_sigint, stop_between_batches
from inspector.store import RunWriter, partial_path, read_run

FINISH_CHILD = r"""
import dataclasses, resource, signal, sys
from pathlib import Path
from inspector import _cli
from inspector.pipeline import _capture
kind, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
args = sys.argv[4:]
real_options = _cli._analyze_options
seconds = 0 if kind == "every-batch" else 30  # 30: the default, no checkpoint in a short run
_cli._analyze_options = lambda *a, **k: real_options(*a, **k).replace(checkpoint_seconds=seconds)
real_pass = _capture.run_capture_pass

def cap_after_capture(model, plan, *a, **k):
    result = real_pass(model, plan, *a, **k)
    # From here on (the analyses, then finish) no file may grow past ``limit`` bytes:
    # the kernel refuses with EFBIG as a full disk refuses with ENOSPC.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return result

_capture.run_capture_pass = cap_after_capture
sys.exit(_cli.main([*args, "--out", out]))
"""


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line and not line.startswith("warning:")]


def _images_in(path: Path) -> int:
    with h5py.File(path, "r") as handle:
        return int(handle["samples/ids"].shape[0]) if "samples/ids" in handle else 0


@pytest.mark.parametrize("kind", ["default", "every-batch"])
def test_a_write_failing_at_finish_is_one_true_line_and_no_destructor_noise(
    tmp_path: Path, kind: str
) -> None:
    """A real failure (RLIMIT_FSIZE) while the finished run file is written: the CLI's
    only stderr line counts what the ``.partial`` file holds (it used to claim the
    images in memory: "3 images kept" for a file holding none), no h5py destructor
    traceback, no crash."""
    out = tmp_path / "test_vit.h5"
    done = subprocess.run(
        [sys.executable, "-c", FINISH_CHILD, kind, str(400_000), str(out), *CLI_ARGS],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    (line,) = _error_lines(done.stderr)
    partial = partial_path(out)
    held = _images_in(partial)
    assert line.startswith(f"error: cannot write {out}.tmp: File too large; ")
    if kind == "default":
        assert held == 0
        assert line.endswith(
            "no image was kept (the run had not reached its first checkpoint); free some "
            "space and run the same command again"
        )
    else:
        assert held == 3
        assert line.endswith(
            f"the run so far (3 images) is kept in {partial}; free some space and run the "
            "same command with --resume to continue"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5.partial"]


def test_the_report_that_cannot_be_written_says_the_run_file_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only folder (EROFS) for the report: the write fails and so does the
    removal of its scratch file; the original error is the one shown."""
    import reports._render as render

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    unlink, replace = Path.unlink, os.replace

    def unlink_report_scratch(self: Path, missing_ok: bool = False) -> None:
        if self.name.startswith(".test_vit.html."):  # the report's scratch file only
            read_only()
        unlink(self, missing_ok=missing_ok)

    def replace_report(source: Any, target: Any) -> None:
        if Path(source).name.startswith(".test_vit.html."):
            read_only()
        replace(source, target)

    monkeypatch.setattr(render.os, "replace", replace_report)
    monkeypatch.setattr(Path, "unlink", unlink_report_scratch)
    args = [a for a in CLI_ARGS if a != "--no-report"]
    assert main([*args, "--out", str(tmp_path)]) == 1
    monkeypatch.undo()
    (line,) = _error_lines(capsys.readouterr().err)
    run = tmp_path / "test_vit.h5"
    assert line == (
        f"error: the run file {run} is complete, but its report was not written (cannot "
        f"write report {run.with_suffix('.html')}: Read-only file system); fix that, then "
        f"write it with `inspector report {run}`"
    )
    assert read_run(run).complete


def test_a_report_write_error_of_inspector_report_is_a_clean_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import reports._render as render

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render.os, "replace", full)
    golden = REPO / "tests" / "data" / "golden-run-1.1.h5"
    assert main(["report", str(golden), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write report {tmp_path / 'r.html'}: No space left on device\n"
    assert list(tmp_path.iterdir()) == []  # no scratch file left


# -- Ctrl-C ----------------------------------------------------------------------------


def test_ctrl_c_during_the_report_step_advises_inspector_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import inspector.present

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(inspector.present, "write_run_report", interrupted)
    args = [a for a in CLI_ARGS if a != "--no-report"]
    assert main([*args, "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    run = tmp_path / "test_vit.h5"
    assert err == (
        f"interrupted: the run file {run} is complete, its report was not written; write it "
        f"with `inspector report {run}`\n"
    )
    assert "--resume" not in err and read_run(run).complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5"]


def test_ctrl_c_during_finish_is_held_until_the_run_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT in the middle of the final write: the write completes (a KeyboardInterrupt
    raised inside h5py could land in a destructor and be dropped, and the run exited
    0), then the interrupt is raised: exit 130 with the right advice."""
    real = RunWriter._replace
    sent = []

    def replace(self: RunWriter, target: Path, fill: Any) -> None:
        def filling(handle: h5py.File) -> None:
            if target == self.path:
                os.kill(os.getpid(), signal.SIGINT)  # delivered now, in the final write
                sent.append(True)
            fill(handle)

        real(self, target, filling)

    monkeypatch.setattr(RunWriter, "_replace", replace)
    with pytest.raises(ReportInterrupted) as info:
        analyze("test_vit", out=tmp_path, options=OPTIONS)
    assert sent == [True]
    run = tmp_path / "test_vit.h5"
    assert str(info.value) == (
        f"the run file {run} is complete, its report was not written; write it with "
        f"`inspector report {run}`"
    )
    assert read_run(run).complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5"]


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for scope in (stop_between_batches, defer_sigint):
            with scope() as asked:
                assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGINT)
                assert not asked()
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_run_started_with_sigint_ignored_is_not_stopped_by_it(tmp_path: Path) -> None:
    """``nohup`` and background jobs start a process with SIGINT ignored; the capture's
    handler used to replace that and stop the run on a Ctrl-C meant for the shell."""
    go = tmp_path / "go"
    child = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "support" / "fault_child.py"), "cli",
         str(tmp_path), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == b"batch 2":
                break
        child.send_signal(signal.SIGINT)
        go.touch()
        _, err = child.communicate(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err.decode()[-2000:]
    assert b"interrupted" not in err
    assert read_run(tmp_path / "test_vit.h5").complete


# -- resume and the identity of the images ------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, source in (
        ("a.jpg", "astronaut.jpg"),
        ("b.jpg", "coffee.jpg"),
        ("c.jpg", "chelsea.jpg"),
    ):
        shutil.copy(builtin_images_dir() / source, folder / name)
    return folder


def _interrupted_after_two(folder: Path, out: Path) -> None:
    def stop(done: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        analyze("test_vit", folder, out=out, options=OPTIONS.replace(limit=None, _after_batch=stop))
    assert read_run(partial_path(out), allow_incomplete=True).sample_ids == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (lambda f: (f / "b.jpg").rename(f / "z.jpg"),
         "1 of the 2 images already processed are gone, renamed or removed: 'b.jpg'; "
         "3 images now, 3 before"),
        (lambda f: (f / "a.jpg").rename(f / "0.jpg"),
         "1 of the 2 images already processed are gone, renamed or removed: 'a.jpg'; "
         "3 images now, 3 before"),
        (lambda f: (f / "c.jpg").unlink(), "2 images now, 3 before"),
        (lambda f: shutil.copy(f / "a.jpg", f / "b.jpg"),
         "same names and count, other sizes or content"),
    ],
    ids=["last-processed-renamed", "first-renamed", "one-removed", "content-replaced"],
)  # fmt: skip
def test_resume_refuses_a_changed_image_folder_in_one_line(
    tmp_path: Path, change: Any, what: str
) -> None:
    """Renaming the last processed image used to give a KeyError; renaming the first a
    run of 4 ids for 3 images (one counted twice)."""
    folder, out = _folder(tmp_path), tmp_path / "run.h5"
    _interrupted_after_two(folder, out)
    change(folder)
    with pytest.raises(RunFileError) as info:
        analyze("test_vit", folder, out=out, options=OPTIONS.replace(limit=None, resume=True))
    assert str(info.value) == (
        f"cannot resume {partial_path(out)}: the images changed since it was started "
        f"({what}); put them back, or run without --resume to start over on the images "
        "as they are"
    )
    assert read_run(partial_path(out), allow_incomplete=True).sample_ids == ["a.jpg", "b.jpg"]


def test_resume_with_the_same_images_continues(tmp_path: Path) -> None:
    folder, out = _folder(tmp_path), tmp_path / "run.h5"
    _interrupted_after_two(folder, out)
    run = analyze("test_vit", folder, out=out, options=OPTIONS.replace(limit=None, resume=True))
    assert run.sample_ids == ["a.jpg", "b.jpg", "c.jpg"]
