"""Opening a run file that may be hostile: a regular file, a global heap libhdf5 can
walk, no plugin library loaded, and a time limit on the read.

libhdf5 runs in C and cannot be interrupted from Python, so what would make it wait or
loop is refused before it sees the file: a named pipe or a device (opening it blocks, or
streams without end) and a global heap collection whose walk would not end
(:mod:`._heap`). While it opens the file, libhdf5's plugin search path is emptied: when
the native format fails to open a file, libhdf5 2.x loads every library in
``HDF5_PLUGIN_PATH`` looking for a VOL connector that could (code from the environment,
run because of a file's content).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
from h5py import h5pl

from .._errors import RunFileError
from .._files import regular_file_problem
from ._heap import global_heap_problem

__all__ = ["ReadTimeout", "deadline", "no_plugins", "open_untrusted", "untrusted_problem"]


@contextmanager
def no_plugins() -> Iterator[None]:
    """Empty libhdf5's plugin search path for the block (the paths are put back after).

    A run file needs no plugin: its filters are built in (gzip, shuffle, fletcher32;
    others are refused before a dataset is read) and it is a native HDF5 file.
    """
    saved = [h5pl.get(index) for index in range(h5pl.size())]
    for _ in saved:
        h5pl.remove(0)
    try:
        yield
    finally:
        for _ in range(h5pl.size()):
            h5pl.remove(0)
        for entry in saved:
            h5pl.append(entry)


def untrusted_problem(path: Path) -> str | None:
    """Why ``path`` must not be handed to libhdf5 (not a regular file, or a global heap
    whose walk would not end), as a phrase following the path; ``None`` when it may."""
    problem = regular_file_problem(path)
    if problem is not None:
        return problem
    try:
        heap = global_heap_problem(path)
    except (OSError, ValueError) as exc:
        return f"cannot be read ({exc})"
    return None if heap is None else f"is corrupt ({heap})"


def open_untrusted(path: Path, **kwargs: Any) -> h5py.File:
    """Open ``path`` read-only once :func:`untrusted_problem` finds nothing, with no
    plugin library loadable.

    Raises:
        RunFileError: What is wrong with it, naming the path.
        OSError: libhdf5 cannot open it (not HDF5, truncated, ...).
    """
    problem = untrusted_problem(path)
    if problem is not None:
        fix = (
            "libhdf5 would never finish reading it; use an undamaged copy"
            if problem.startswith("is corrupt")
            else "give the path of an inspector run file (.h5)"
        )
        raise RunFileError(f"{path} {problem}; {fix}")
    with no_plugins():
        return h5py.File(path, "r", **kwargs)


class ReadTimeout(Exception):
    """The read went past its time limit (raised by :func:`deadline`'s timer)."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`ReadTimeout` in the block once ``seconds`` of wall-clock time pass.

    A ``SIGALRM`` timer (main thread, where Python delivers signals; elsewhere nothing
    changes): its handler runs between two Python steps of the read, so each single call
    into libhdf5 must be bounded otherwise (the reader's memory budget bounds what one
    call can decompress). The previous handler and timer are put back on exit. A
    timeout swallowed inside a destructor is raised again on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        fired.append(True)
        raise ReadTimeout(f"reading took longer than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, handler)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if old_delay:
            signal.setitimer(signal.ITIMER_REAL, old_delay, old_interval)
    if fired:
        raise ReadTimeout(f"reading took longer than {seconds:.0f} s")
