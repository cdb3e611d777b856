"""Faults during a run: SIGKILL, Ctrl-C (SIGINT), a full disk, a write that fails part way.

Every fault leaves no file marked complete, a clean one-line error (or exit 130 for
Ctrl-C), and a ``.partial`` file that ``--resume`` finishes into the numbers of an
uninterrupted run — or, when a checkpoint was cut short in the middle of overwriting the
accumulators, a clear refusal instead of a silently mixed state. docs/reliability.md
lists each guarantee with its test.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
from support import REPO, assert_same_run
from support.fault_child import CLI_ARGS, OPTIONS
from torch import nn
from torch.utils.data import Dataset

from inspector import AnalyzeOptions, RunFileError, analyze
from inspector.cli import main
from inspector.pipeline import _capture, stop_between_batches
from inspector.store import Run, partial_path, read_run
from inspector.store import _writer as writer_module
from inspector.store._writer import scratch_path

CHILD = REPO / "tests" / "support" / "fault_child.py"


# -- helpers -------------------------------------------------------------------------------


def _attrs(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as handle:
        return dict(handle.attrs)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The uninterrupted run every faulty run must end up equal to."""
    return analyze("test_vit", out=tmp_path_factory.mktemp("reference"), options=OPTIONS)


@pytest.fixture
def checkpoint_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI checkpoints every 30 s; make it checkpoint after every batch."""
    real = _capture.run_capture_pass

    def every_batch(model: Any, plan: Any, *args: Any, **kwargs: Any) -> Any:
        options = plan.options.replace(checkpoint_seconds=0)
        return real(model, dataclasses.replace(plan, options=options), *args, **kwargs)

    monkeypatch.setattr(_capture, "run_capture_pass", every_batch)


# -- SIGKILL and SIGINT in child processes --------------------------------------------------


def _wait_for(child: subprocess.Popen[bytes], marker: bytes, timeout: float = 400) -> None:
    """Read the child's stdout until ``marker`` appears (fail if it exits or times out)."""
    seen = b""
    deadline = time.monotonic() + timeout
    assert child.stdout is not None
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            child.kill()
            pytest.fail(f"child printed no {marker!r} in {timeout} s: {seen[-500:]!r}")
        ready, _, _ = select.select([child.stdout], [], [], min(left, 1.0))
        if ready:
            chunk = os.read(child.stdout.fileno(), 4096)
            if not chunk:
                _, err = child.communicate()
                pytest.fail(f"child exited ({child.returncode}) before {marker!r}: {err[-2000:]!r}")
            seen += chunk


class Stopped:
    """Two child runs, both stopped after batch 2 of 3: one by SIGKILL, one by SIGINT."""

    def __init__(self, root: Path) -> None:
        self.killed_out, self.interrupted_out = root / "killed", root / "interrupted"
        self.go_kill, self.go_int = root / "go-kill", root / "go-int"  # go-kill never appears
        spawn = [sys.executable, str(CHILD)]
        options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        self.killed = subprocess.Popen(
            [*spawn, "api", str(self.killed_out), str(self.go_kill)], cwd=root, **options
        )
        self.interrupted = subprocess.Popen(
            [*spawn, "cli", str(self.interrupted_out), str(self.go_int)], cwd=root, **options
        )

    def stop(self) -> None:
        killed, interrupted = self.killed, self.interrupted
        try:
            _wait_for(killed, b"batch 2")
            killed.send_signal(signal.SIGKILL)
            killed.communicate(timeout=60)
            self.killed_code = killed.returncode
            _wait_for(interrupted, b"batch 2")
            interrupted.send_signal(signal.SIGINT)  # arrives while batch 2's seam waits
            self.go_int.touch()
            out, err = interrupted.communicate(timeout=300)
            self.interrupted_code = interrupted.returncode
            self.interrupted_out_text = out.decode()
            self.interrupted_err = err.decode()
        finally:
            for child in (killed, interrupted):
                if child.poll() is None:
                    child.kill()
                    child.wait()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Stopped:
    children = Stopped(tmp_path_factory.mktemp("stopped"))
    try:
        request.getfixturevalue("reference")  # computed while the children start up
    finally:
        children.stop()
    return children


def test_sigkill_leaves_no_complete_file_and_resume_equals_an_uninterrupted_run(
    stopped: Stopped, reference: Run
) -> None:
    assert stopped.killed_code == -signal.SIGKILL
    final = stopped.killed_out / "test_vit.h5"
    assert not final.exists()  # nothing is marked complete
    # The lock file stays (the kernel released its lock); the next run takes it over.
    left = sorted(p.name for p in stopped.killed_out.iterdir())
    assert left == ["test_vit.h5.lock", "test_vit.h5.partial"]
    attrs = _attrs(partial_path(final))
    assert not attrs["complete"]
    assert attrs["batches_done"] == 2 and attrs["images_done"] == 2
    resumed = analyze("test_vit", out=stopped.killed_out, options=OPTIONS.replace(resume=True))
    assert resumed.path == final and not partial_path(final).exists()
    assert sorted(p.name for p in stopped.killed_out.iterdir()) == ["test_vit.h5"]
    assert_same_run(reference, resumed)


def test_sigint_stops_between_batches_exit_130_and_resume_completes(
    stopped: Stopped, reference: Run, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stopped.interrupted_code == 130, stopped.interrupted_err
    err = stopped.interrupted_err
    assert "stopping after the current batch" in err
    final = stopped.interrupted_out / "test_vit.h5"
    assert err.strip().splitlines()[-1] == (
        f"interrupted: 2 images are kept in {partial_path(final)}; "
        "run the same command with --resume to continue"
    )
    assert "Traceback" not in err
    assert "batch 3" not in stopped.interrupted_out_text  # stopped after batch 2
    assert not final.exists()
    attrs = _attrs(partial_path(final))
    # The CLI checkpoints every 30 s: this checkpoint was written because of Ctrl-C.
    assert not attrs["complete"]
    assert attrs["batches_done"] == 2 and attrs["images_done"] == 2
    code = main([*CLI_ARGS, "--out", str(stopped.interrupted_out), "--resume"])
    assert code == 0, capsys.readouterr().err
    assert_same_run(reference, read_run(final))


# -- SIGINT in process: the batch in flight finishes, the handler is scoped ----------------


class Tensors(Dataset):
    """Six preprocessed 3×32×32 images."""

    def __init__(self) -> None:
        self.x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.x[index]


class SelfInterrupting(nn.Module):
    """A small CNN that sends itself SIGINT in the middle of its second forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)
        self.calls = 0
        self.finished = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        y = self.conv1(x).relu()
        if self.calls == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, mid-forward
        y = self.conv2(y).relu().mean((2, 3))
        self.finished += 1
        return self.head(y)


def test_sigint_mid_forward_finishes_the_batch_checkpoints_and_restores_the_handler(
    tmp_path: Path,
) -> None:
    before = signal.getsignal(signal.SIGINT)
    torch.manual_seed(0)
    model = SelfInterrupting().eval()
    options = AnalyzeOptions(
        batch_size=2, analyses=("channel_redundancy",), report=False, progress=False
    )  # checkpoints every 30 s: this one is written because of Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        analyze(model, Tensors(), out=tmp_path / "net.h5", options=options)
    assert model.calls == model.finished == 2  # the interrupted forward ran to its end
    assert signal.getsignal(signal.SIGINT) is before
    attrs = _attrs(tmp_path / "net.h5.partial")
    assert attrs["batches_done"] == 2 and attrs["images_done"] == 4 and not attrs["complete"]
    run = analyze(model, Tensors(), out=tmp_path / "net.h5", options=options.replace(resume=True))
    assert run.complete and run.sample_ids == [f"dataset[{i}]" for i in range(6)]
    assert signal.getsignal(signal.SIGINT) is before


def test_sigint_handler_is_scoped() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), stop_between_batches() as interrupted:
        assert signal.getsignal(signal.SIGINT) is not before
        assert not interrupted()
        raise RuntimeError("a failing pass")
    assert signal.getsignal(signal.SIGINT) is before
    seen: list[Any] = []

    def in_thread() -> None:  # signals go to the main thread: nothing is installed
        with stop_between_batches() as interrupted:
            seen.append((signal.getsignal(signal.SIGINT), interrupted()))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [(before, False)]


# -- a full disk, a write cut short --------------------------------------------------------


def _failing_write(monkeypatch: pytest.MonkeyPatch, exc: OSError, when: Any) -> None:
    """Make the writer's ``write_array`` raise ``exc`` on the call where ``when(group,
    name, calls)`` is true (``calls`` counts the calls so far, this one included)."""
    real = writer_module.write_array
    calls = [0]

    def write_array(group: h5py.Group, name: str, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if when(group, name, calls[0]):
            raise exc
        return real(group, name, *args, **kwargs)

    monkeypatch.setattr(writer_module, "write_array", write_array)


def test_disk_full_is_one_clear_line_and_the_partial_resumes(
    tmp_path: Path,
    reference: Run,
    monkeypatch: pytest.MonkeyPatch,
    checkpoint_every_batch: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    entropy_writes = [0]

    def third_checkpoint(group: h5py.Group, name: str, calls: int) -> bool:
        if name == "entropy" and group.name.endswith("/summaries"):
            entropy_writes[0] += 1  # 2 attention layers per checkpoint
        return name == "entropy" and entropy_writes[0] == 2 * 2 + 2

    full = OSError(errno.ENOSPC, "No space left on device")
    _failing_write(monkeypatch, full, third_checkpoint)
    assert main([*CLI_ARGS, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    final = tmp_path / "test_vit.h5"
    assert f"cannot write {final}.tmp: disk full" in line
    assert f"the run so far (2 images) is kept in {partial_path(final)}" in line
    assert "run the same command with --resume to continue" in line
    assert "Traceback" not in err and "--debug" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5.partial"]
    attrs = _attrs(partial_path(final))
    assert attrs["batches_done"] == 2 and attrs["images_done"] == 2 and not attrs["complete"]

    monkeypatch.undo()
    assert main([*CLI_ARGS, "--out", str(tmp_path), "--resume"]) == 0
    assert_same_run(reference, read_run(final))


class Killed(BaseException):
    """Stands for SIGKILL arriving in the middle of a checkpoint."""


def test_a_stop_in_the_middle_of_a_checkpoint_keeps_the_previous_one(
    tmp_path: Path, reference: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "test_vit.h5"
    seen: list[list[str]] = []

    def halfway_through_the_third(group: h5py.Group, name: str, calls: int) -> bool:
        if group.file.filename != str(scratch_path(final)) or name != "cross":
            return False
        attrs = group.file.attrs
        if attrs["batches_done"] != 3:
            return False
        # The new checkpoint is half written; the .partial file is the previous one.
        seen.append(read_run(partial_path(final), allow_incomplete=True).sample_ids)
        raise Killed

    _failing_write(monkeypatch, OSError(), halfway_through_the_third)
    with pytest.raises(Killed):
        analyze("test_vit", out=tmp_path, options=OPTIONS)
    assert seen == [reference.sample_ids[:2]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5.partial"]
    monkeypatch.undo()
    scratch_path(final).write_bytes(b"what a real SIGKILL would leave behind")
    resumed = analyze("test_vit", out=tmp_path, options=OPTIONS.replace(resume=True))
    assert_same_run(reference, resumed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_real_write_failure_past_a_file_size_limit_resumes(
    tmp_path: Path, reference: Run
) -> None:
    """No monkeypatching: the OS refuses to grow a file past RLIMIT_FSIZE (errno EFBIG, as
    it refuses with ENOSPC on a full disk), from batch 3's checkpoint on."""
    partial = partial_path(tmp_path / "test_vit.h5")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    xfsz = signal.getsignal(signal.SIGXFSZ)

    def cap_file_size(done: int) -> None:
        if done == 2:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
            resource.setrlimit(resource.RLIMIT_FSIZE, (partial.stat().st_size // 2, limits[1]))

    try:
        with pytest.raises(RunFileError) as info:
            analyze("test_vit", out=tmp_path, options=OPTIONS.replace(_after_batch=cap_file_size))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, xfsz)
    message = str(info.value)
    assert "\n" not in message and "File too large" in message
    assert f"the run so far (2 images) is kept in {partial}" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_vit.h5.partial"]
    resumed = analyze("test_vit", out=tmp_path, options=OPTIONS.replace(resume=True))
    assert_same_run(reference, resumed)
