"""Fault campaign: concurrent runs on one path, sequential re-runs, and SIGKILL in each
write phase, on timm's ``test_vit`` (random weights, 3 builtin images, a checkpoint after
every batch). Prints the table of docs/reliability.md.

Kills: a child process runs ``inspector.analyze`` with one write step wrapped so that,
at its k-th call (k drawn at random), it prints a marker and waits; the parent then
SIGKILLs it. Phases: ``checkpoint-write`` (a layer of the 2nd checkpoint being written
to ``RUN.h5.tmp``), ``checkpoint-seal`` (its manifest being computed), ``finish-write``
(an analysis being written into the complete file), ``finish-seal`` (the complete file's
manifest), ``report`` (the run file renamed into place, the report being written).
After each kill: nothing incomplete at the final path, every file there verifies, and
the same command with ``--resume`` finishes with the numbers of an uninterrupted run
and leaves no ``.tmp`` or ``.lock`` file.

    .venv/bin/python benchmarks/fault_campaign.py --trials 3
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from support import assert_same_run  # noqa: E402
from support.fault_child import CLI_ARGS, OPTIONS  # noqa: E402

import inspector  # noqa: E402
from inspector import RunFileError  # noqa: E402
from inspector.store import read_run  # noqa: E402

PHASES = ("checkpoint-write", "checkpoint-seal", "finish-write", "finish-seal", "report")


def _pause(marker: str) -> None:
    print(marker, flush=True)
    time.sleep(600)


def child(phase: str, out: str, k: int) -> int:
    """Run with one write step wrapped to pause at its k-th call (then the parent kills)."""
    from inspector import report_data
    from inspector.store import _writer

    calls = Counter[str]()
    checkpoints = [0]
    real_checkpoint = _writer.RunWriter.checkpoint

    def checkpoint(self: Any, *args: Any, **kwargs: Any) -> None:
        checkpoints[0] += 1
        real_checkpoint(self, *args, **kwargs)

    _writer.RunWriter.checkpoint = checkpoint  # type: ignore[method-assign]
    finishing = [False]
    real_finish = _writer.RunWriter.finish

    def finish(self: Any) -> Path:
        finishing[0] = True
        return real_finish(self)

    _writer.RunWriter.finish = finish  # type: ignore[method-assign]

    def counted(name: str, real: Any, active: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if active():
                calls[name] += 1
                if calls[name] == k:
                    _pause(f"PAUSED {phase}")
            return real(*args, **kwargs)

        return wrapper

    second = lambda: checkpoints[0] == 2 and not finishing[0]  # noqa: E731
    if phase == "checkpoint-write":
        _writer.write_array = counted(phase, _writer.write_array, second)
    elif phase == "checkpoint-seal":
        from inspector.store import _checksum

        _checksum._digest = counted(phase, _checksum._digest, second)
    elif phase == "finish-write":
        _writer.write_tree = counted(phase, _writer.write_tree, lambda: finishing[0])
    elif phase == "finish-seal":
        from inspector.store import _checksum

        _checksum._digest = counted(phase, _checksum._digest, lambda: finishing[0])
    elif phase == "report":
        report_data.write_run_report = counted(phase, report_data.write_run_report, lambda: True)
    inspector.analyze("test_vit", out=out, options=OPTIONS.replace(report=phase == "report"))
    return 0


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def kill_trial(phase: str, folder: Path, rng: random.Random, reference: Any) -> str:
    out = folder / f"{phase}-{rng.randrange(10**6)}"
    k = rng.randint(1, {"finish-write": 3, "report": 1}.get(phase, 8))
    proc = _spawn("--child", phase, str(out), str(k))
    assert proc.stdout is not None
    line = b""
    while proc.poll() is None and not line.startswith(b"PAUSED"):
        line = proc.stdout.readline()
    if proc.poll() is not None:
        return f"no pause (k={k}): exit {proc.returncode} {proc.stderr.read()[-300:]!r}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    final = out / "test_vit.h5"
    left = sorted(p.name for p in out.iterdir())
    if final.exists():  # only after the rename: complete and verified
        run = read_run(final)
        if not run.complete:
            return "FAIL: incomplete file at the final path"
        assert_same_run(reference, run)
        kept = "complete run kept (report not written)"
        try:  # the same command again: refused, and the stale lock file is gone
            inspector.analyze("test_vit", out=out, options=OPTIONS)
            return "FAIL: the complete run was replaced"
        except RunFileError:
            kept += "; the next run is refused without --overwrite"
    else:
        kept = "no final file"
        resumed = inspector.analyze("test_vit", out=out, options=OPTIONS.replace(resume=True))
        assert_same_run(reference, resumed)
        kept += "; --resume = uninterrupted run"
    after = sorted(p.name for p in out.iterdir())
    if any(name.endswith((".tmp", ".lock", ".partial")) for name in after):
        return f"FAIL: leftovers after the next run: {after}"
    return f"ok: left {left}; {kept}"


def concurrent_trial(folder: Path, index: int) -> str:
    out = folder / f"concurrent-{index}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "inspector", *CLI_ARGS, "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=900)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    if codes != [0, 1]:
        return f"FAIL: exit codes {codes}"
    loser = 0 if procs[0].returncode == 1 else 1
    err, winner_pid = errors[loser], procs[1 - loser].pid
    if err.count("\n") != 1:
        return f"FAIL: not one line: {err!r}"
    if f"pid {winner_pid}," in err:
        verdict = "second refused at once, naming the first's pid"
    elif "already holds a complete run" in err:
        verdict = "second started after the first finished: refused (no overwrite)"
    else:
        return f"FAIL: {err!r}"
    read_run(out / "test_vit.h5")
    return f"ok: {verdict}"


def sequential_trial(folder: Path, index: int) -> str:
    out = folder / f"sequential-{index}"
    first = inspector.analyze("test_vit", out=out, options=OPTIONS.replace(report=True))
    before = first.path.read_bytes()
    try:
        inspector.analyze("test_vit", out=out, options=OPTIONS.replace(seed=index + 1))
        return "FAIL: the second run replaced the first"
    except RunFileError:
        pass
    if first.path.read_bytes() != before:
        return "FAIL: the first run file changed"
    third = inspector.analyze(
        "test_vit", out=out, options=OPTIONS.replace(seed=index + 1, overwrite=True)
    )
    if third.meta["options"]["seed"] != index + 1 or first.path.with_suffix(".html").exists():
        return "FAIL: --overwrite did not replace, or the old report stayed"
    return "ok: refused without --overwrite (file unchanged); replaced with it, old report removed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials per kind and phase")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], int(args.child[2]))
    rng = random.Random(args.seed)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        reference = inspector.analyze("test_vit", out=folder / "reference", options=OPTIONS)
        for index in range(args.trials):
            rows.append(("concurrent runs, one path", concurrent_trial(folder, index)))
            rows.append(("sequential re-runs", sequential_trial(folder, index)))
            for phase in PHASES:
                rows.append((f"SIGKILL in {phase}", kill_trial(phase, folder, rng, reference)))
            for row in rows[-7:]:
                print(" | ".join(row), flush=True)
    summary = Counter((kind, result.split(";")[0].split(":")[0]) for kind, result in rows)
    print("\n| trials | kind | outcome |")
    for (kind, outcome), count in sorted(summary.items()):
        print(f"| {count} | {kind} | {outcome} |")
    failed = [row for row in rows if row[1].startswith(("FAIL", "no pause"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
