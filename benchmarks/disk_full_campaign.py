"""Full-disk campaign at finish time: the real CLI writing onto a small tmpfs.

Each trial mounts a fresh tmpfs of a given size (``mount -t tmpfs -o size=...``; needs
root, or CAP_SYS_ADMIN) and runs ``inspector analyze test_vit`` (random weights, 3
builtin images) with ``--out`` on it, in a child process. The sizes are chosen so that
the disk fills while the finished run file is written (``finish``), or while its report
is written. Two kinds of run: the CLI as it is (checkpoints every 30 s: a run this
short writes none, so the ``.partial`` file holds 0 images when ``finish`` fails), and
the CLI with a checkpoint after every batch (the ``.partial`` holds all 3 images).

Per trial it records the exit status (a negative status is a signal: -11 a segfault),
whether stderr holds a traceback or ``Exception ignored`` lines, how many lines stderr
has besides warnings, and every "kept" claim of the error line (``the run so far (N
images) is kept in P``) against the images ``P`` really holds (its ``samples/ids``,
read after the child exits). A claim is false when the counts differ or ``P`` is
missing.

    sudo .venv/bin/python benchmarks/disk_full_campaign.py --trials 12
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "analyze", "test_vit", "--weights", "random", "--limit", "3", "--batch-size", "1",
    "--keep-maps", "2", "--device", "cpu", "--quiet",
]  # fmt: skip

CHILD = """
import sys
from inspector import _cli
real = _cli._analyze_options
if sys.argv[1] == "every-batch":
    _cli._analyze_options = lambda *a, **k: real(*a, **k).replace(checkpoint_seconds=0)
sys.exit(_cli.main(sys.argv[2:]))
"""

KEPT = re.compile(r"\((\d+) images?\) (?:is|are) kept in (\S+?);|(\d+) images are kept in (\S+?);")


def _held(path: Path) -> int | None:
    """Images a ``.partial`` file holds (its ``samples/ids``), ``None`` when absent."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            return int(handle["samples/ids"].shape[0]) if "samples/ids" in handle else 0
    except (OSError, KeyError):
        return -1


def trial(kind: str, size_kb: int, mount: Path) -> dict[str, object]:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount)], check=True
    )
    try:
        out = mount / "run.h5"
        done = subprocess.run(
            [sys.executable, "-c", CHILD, kind, *ARGS, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        err = done.stderr
        lines = [line for line in err.splitlines() if line and not line.startswith("warning:")]
        claims = []
        for match in KEPT.finditer(err):
            count = int(match.group(1) or match.group(3))
            where = Path(match.group(2) or match.group(4))
            claims.append({"claimed": count, "holds": _held(where), "file": where.name})
        if "no image was kept" in err or "nothing was kept" in err:  # a claim of 0 images
            where = mount / "run.h5.partial"
            claims.append({"claimed": 0, "holds": _held(where) or 0, "file": where.name})
        files = sorted(p.name for p in mount.iterdir())
        return {
            "kind": kind,
            "size_kb": size_kb,
            "status": done.returncode,
            "segfault": done.returncode in (-11, 139),
            "traceback": "Traceback" in err or "Exception ignored" in err,
            "stderr_lines": len(lines),
            "error": lines[-1] if lines else "",
            "claims": claims,
            "false_claims": sum(c["claimed"] != c["holds"] for c in claims),
            "files": files,
        }
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="runs in all (half of each kind)")
    parser.add_argument("--json", type=Path, default=None, help="write the trials here")
    parser.add_argument("--kind", choices=("both", "default", "every-batch"), default="both")
    args = parser.parse_args()
    # Sizes around what finish needs: the finished file is 6.6 MB and its report 1 MB;
    # the every-batch kind also keeps its .partial (the full capture state, about 4 MB)
    # while finish writes, and two copies of it while a checkpoint is written. Smaller
    # sizes fail at a checkpoint, larger ones during finish, then during the report.
    sizes = {
        "default": [2000, 3500, 5000, 6000, 6600, 7000, 7400, 7800],
        "every-batch": [9400, 9700, 10000, 10300, 10600, 10900, 11200, 11500],
    }
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        mount = Path(tmp) / "disk"
        mount.mkdir()
        for index in range(args.trials):
            kind = ("default", "every-batch")[index % 2] if args.kind == "both" else args.kind
            step = index // 2 if args.kind == "both" else index
            size = sizes[kind][step % len(sizes[kind])]
            result = trial(kind, size, mount)
            results.append(result)
            print(json.dumps(result), flush=True)
    total = {
        "trials": len(results),
        "segfaults": sum(bool(r["segfault"]) for r in results),
        "tracebacks": sum(bool(r["traceback"]) for r in results),
        "more_than_one_error_line": sum(int(r["stderr_lines"]) > 1 for r in results),
        "kept_claims": sum(len(r["claims"]) for r in results),  # type: ignore[arg-type]
        "false_kept_claims": sum(int(r["false_claims"]) for r in results),
        "exit_0": sum(r["status"] == 0 for r in results),
    }
    print(json.dumps(total))
    if args.json:
        args.json.write_text(json.dumps({"total": total, "trials": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
