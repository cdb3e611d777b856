"""One progress display for every pass of a run: step name, counts and an overall ETA.

On a terminal each step is one bar, ``[2/4] receptive field  5/24 layer``, whose postfix
is the ETA of the whole run. Elsewhere (a log file, CI, a pipe) a step prints one line
when it starts, a line at most every :data:`LOG_EVERY` seconds while it runs, and one
when it ends; nothing is redrawn, so no line appears twice.

The overall ETA adds the current step's remaining time (from its own rate) to a prior
for the steps still to come (:data:`PRIOR`, seconds measured for ``deit_small`` on the
development machine, docs/performance.md §1), scaled by how the finished steps compared
with their priors.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

from tqdm.auto import tqdm

__all__ = ["LOG_EVERY", "PRIOR", "Progress", "Step"]

PRIOR = {
    "capture": 8.3,
    "receptive field": 14.8,
    "equivariance": 1.7,
    "importance": 3.8,
    "pruning": 5.6,
}
"""Seconds each step took for ``deit_small`` (9 images, 2-core CPU: the run file's
``timings`` of a default run, docs/performance.md §1), the prior of the ETA."""

LOG_EVERY = 15.0
"""Seconds between progress lines when the output is not a terminal."""


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Step:
    """One running step; :meth:`update` counts done items."""

    def __init__(self, progress: Progress, index: int, name: str, total: int, unit: str) -> None:
        self.progress, self.index, self.name = progress, index, name
        self.total, self.unit, self.done = max(0, total), unit, 0
        self.began = self.last_line = time.perf_counter()
        self.bar: tqdm | None = None

    @property
    def label(self) -> str:
        return f"[{self.index}/{len(self.progress.names)}] {self.name}"

    def remaining(self) -> float:
        """Seconds this step still needs, from its rate so far (its prior before)."""
        elapsed = time.perf_counter() - self.began
        if self.done and self.total:
            return elapsed / self.done * (self.total - self.done)
        return max(0.0, self.progress.scaled(self.name) - elapsed)

    def extend(self, n: int) -> None:
        """Add ``n`` items to the total (an adaptive pass that takes another batch)."""
        self.total += max(0, n)
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def update(self, n: int = 1) -> None:
        self.done += n
        eta = self.progress.eta(self)
        if self.bar is not None:
            self.bar.set_postfix_str(f"all steps ~{_clock(eta)} left", refresh=False)
            self.bar.update(n)
        elif self.progress.enabled and time.perf_counter() - self.last_line >= LOG_EVERY:
            self.last_line = time.perf_counter()
            self.progress.say(
                f"{self.label}: {self.done}/{self.total} {self.unit}, all steps ~{_clock(eta)} left"
            )


class Progress:
    """The steps of one run (names in order); :meth:`step` runs one of them."""

    def __init__(
        self, names: Sequence[str], *, enabled: bool = True, stream: IO[str] | None = None
    ) -> None:
        self.names = list(names)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.actual: dict[str, float] = {}
        self.began = time.perf_counter()

    def say(self, line: str) -> None:
        if self.enabled:
            print(line, file=self.stream, flush=True)

    def scaled(self, name: str) -> float:
        """The prior of ``name``, scaled by how the finished steps compared with theirs."""
        prior = sum(PRIOR.get(n, 5.0) for n in self.actual)
        ratio = sum(self.actual.values()) / prior if prior > 0 else 1.0
        return PRIOR.get(name, 5.0) * ratio

    def eta(self, current: Step) -> float:
        later = (
            self.names[self.names.index(current.name) + 1 :] if current.name in self.names else []
        )
        return current.remaining() + sum(self.scaled(n) for n in later)

    @contextmanager
    def step(self, name: str, total: int, unit: str, initial: int = 0) -> Iterator[Step]:
        """Run step ``name`` of ``total`` ``unit`` (a plural: ``images``), ``initial`` of
        them done already (a resumed capture); a name not announced is appended."""
        if name not in self.names:
            self.names.append(name)
        step = Step(self, self.names.index(name) + 1, name, total, unit)
        step.done = initial
        if self.enabled and self.tty:
            step.bar = tqdm(
                total=step.total, initial=initial, desc=step.label, unit=unit, file=self.stream
            )
        else:
            self.say(f"{step.label}: {_count(step.total, unit)} ...")
        failed = True
        try:
            yield step
            failed = False
        finally:
            seconds = time.perf_counter() - step.began
            self.actual[name] = seconds
            if step.bar is not None:
                step.bar.close()
            elif not failed:
                self.say(
                    f"{step.label}: done, {_count(step.done, unit)} in {seconds:.1f} s "
                    f"(elapsed {_clock(time.perf_counter() - self.began)})"
                )


def _count(n: int, unit: str) -> str:
    """``1 forward``, ``3 forwards`` (units are given in the plural)."""
    return f"{n} {unit[:-1] if n == 1 and unit.endswith('s') else unit}"


class Silent(Progress):
    """No output (a non-leader rank, ``progress=False``)."""

    def __init__(self) -> None:
        super().__init__((), enabled=False)
