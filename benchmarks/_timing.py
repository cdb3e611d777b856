"""Shared helpers of the benchmarks: interleaved repetitions, ratios, markdown tables.

Every benchmark measures ratios against a baseline timed in the same run, never absolute
times: the machines this runs on are shared and noisy. Cases are warmed up, then timed in
rounds; each round runs every case once, in an order rotated (and reversed every other
round) so that no case always runs right after another, and each case's time is divided
by the baseline's time in the same round. The median of these per-round ratios is
reported with their spread (lowest and highest).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time. ``cpu``: CPU time of this process (all its threads), which a
loaded machine disturbs far less; with one thread (``--threads 1``) it is the work done."""


def interleaved(
    cases: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    clock: str = "wall",
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every case, ``repeats`` rounds after ``warmup`` untimed rounds."""
    now = CLOCKS[clock]
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        order = names[shift:] + names[:shift]
        if round_ % 2:
            order.reverse()
        for name in order:
            gc.collect()
            began = now()
            cases[name]()
            times[name].append(now() - began)
        if log is not None:
            log(
                f"  round {round_ + 1}/{repeats}: "
                + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names)
            )
    return times


def ratios(times: dict[str, list[float]], baseline: str) -> dict[str, list[float]]:
    """Per-round ratios of every case to ``baseline``."""
    base = times[baseline]
    return {
        name: [t / b for t, b in zip(values, base, strict=True)] for name, values in times.items()
    }


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``median (lowest–highest)``."""
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine(device: str = "cpu") -> str:
    """One line describing the machine and the software measured (and the GPU on CUDA)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {sys.version.split()[0]}, "
        f"load average {load}"
        + (f", GPU {torch.cuda.get_device_name()}" if device.startswith("cuda") else "")
    )


def add_clock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: CPU time of the process (steadier on a loaded machine)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )


def apply_clock_options(args: argparse.Namespace) -> str:
    """Set the benchmark process's torch threads; a line saying how time is measured."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)  # a benchmark process; the library never does
    return f"{args.clock} clock, {torch.get_num_threads()} torch threads"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
