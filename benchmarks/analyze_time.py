"""Time ``inspector analyze`` end to end: every pass of one run, and the wall time.

Runs the API as ``inspector analyze deit_small`` would (the 9 builtin images, every
analyzer, random weights, the HTML report) and prints the seconds of each pass the run
file records in ``meta['timings']`` (capture, receptive_field, importance, pruning,
analyzers, total), of the steps after them (writing the run file, reading it back, the
report) and the wall time of the whole call (model creation and image decoding
included), with the CPU seconds of each (process time, all threads). On a machine
shared with other work, CPU seconds / threads estimates the wall time the run would take
alone. The command line adds the import of torch and timm (about 5 s here): time it
with ``time .venv/bin/inspector analyze deit_small``. The target on a 2-core CPU
machine is under 60 s::

    .venv/bin/python benchmarks/analyze_time.py
    .venv/bin/python benchmarks/analyze_time.py --model test_vit --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inspector import _api, present  # noqa: E402
from inspector._options import AnalyzeOptions  # noqa: E402
from inspector.pipeline import _analyses, _capture  # noqa: E402
from inspector.store import RunWriter  # noqa: E402

PASSES = ("capture", "receptive_field", "importance", "pruning", "analyzers", "total")
TARGET_SECONDS = 60.0
# The function behind each pass, where analyze() looks it up.
PASS_FUNCTIONS = (
    (_capture, "run_capture_pass", "capture"),
    (_analyses, "erf_pass", "receptive_field"),
    (_analyses, "importance_pass", "importance"),
    (_analyses, "pruning_pass", "pruning"),
)


def _cpu_timed(
    fn: Callable[..., Any], name: str, cpu: dict[str, float], wall: dict[str, float] | None = None
) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        began, began_wall = time.process_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - began
            if wall is not None:
                wall[name] = wall.get(name, 0.0) + time.perf_counter() - began_wall

    return timed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="deit_small")
    parser.add_argument("--images", default="builtin")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    options = AnalyzeOptions(weights="random", progress=False, device=args.device)
    cpu: dict[str, float] = {}
    outside: dict[str, float] = {}  # wall seconds of steps the run file does not time
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as patches:
        for module, attribute, name in PASS_FUNCTIONS:
            timed = _cpu_timed(getattr(module, attribute), name, cpu)
            patches.enter_context(mock.patch.object(module, attribute, timed))
        for module, attribute, name in (
            (RunWriter, "finish", "write run file"),
            (_api, "read_run", "read it back"),
            (present, "write_run_report", "report"),
        ):
            timed = _cpu_timed(getattr(module, attribute), name, cpu, outside)
            patches.enter_context(mock.patch.object(module, attribute, timed))
        out = args.out or Path(scratch)
        began, cpu_began = time.perf_counter(), time.process_time()
        run = _api.analyze(args.model, args.images, out=out, options=options)
        wall = time.perf_counter() - began
        cpu["wall"] = time.process_time() - cpu_began
    timings = run.meta.get("timings", {})
    print(
        f"{run.meta.get('model')} on {len(run.sample_ids)} images, device "
        f"{run.meta.get('device')}, {torch.get_num_threads()} threads"
    )
    threads = torch.get_num_threads()
    print(f"{'pass':<16} {'seconds':>8} {'cpu s':>8} {'cpu/' + str(threads):>8}")

    def cell(value: float | None) -> str:
        return f"{'-' if value is None else f'{value:.2f}':>8}"

    for name in (*PASSES, *outside, "wall"):
        seconds = wall if name == "wall" else timings.get(name, outside.get(name))
        used = cpu.get(name)
        alone = None if used is None else used / threads
        print(f"{name:<16} {cell(seconds)} {cell(used)} {cell(alone)}")
    verdict = "within" if wall < TARGET_SECONDS else "OVER"
    print(f"{verdict} the {TARGET_SECONDS:.0f} s target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
