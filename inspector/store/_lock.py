"""Claiming a run file's path: an exclusive lock, and no silent overwrite.

A run holds ``RUN.h5.lock`` (beside ``RUN.h5``, its pid inside) locked with
``fcntl.flock`` from before it reads a ``.partial`` file until its report is written.
The operating system releases the lock when the process ends, however it ends, so a
lock file left by a killed run is simply taken over by the next one. A second run on
the same path while the first is alive fails at once, naming the first one's pid.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._errors import RunFileError
from ._open import open_untrusted
from ._schema import ENCODING_TYPE, TYPE

try:
    import fcntl
except ImportError:  # not POSIX: no lock (docs/run-file.md, "Limits")
    fcntl = None  # type: ignore[assignment]

__all__ = ["claim_output", "images_kept", "lock_path", "refuse_existing"]


def lock_path(path: Path) -> Path:
    """The lock file of run file ``path``."""
    return path.with_name(path.name + ".lock")


def images_kept(partial: Path) -> int:
    """Images a ``.partial`` file holds (0 when none, or when it cannot be read)."""
    try:
        with open_untrusted(partial) as handle:
            if "samples" not in handle or "ids" not in handle["samples"]:
                return 0
            ids = handle["samples/ids"]
            return int(ids.shape[0]) if ids.ndim == 1 else 0
    except (OSError, RuntimeError, ValueError, TypeError, KeyError, RunFileError):
        return 0


def _holder(descriptor: int) -> str:
    """Who holds a lock, from the lock file's first line (``pid 123, started ...``)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        os.lseek(descriptor, 0, os.SEEK_SET)
        text = os.read(descriptor, 200).decode("utf-8").splitlines()
        if text and text[0].strip():
            return text[0].strip()
    return "pid unknown"


def _take(lock: Path) -> int:
    """Lock ``lock`` (created if needed); returns its open descriptor.

    Raises:
        BlockingIOError: Another process holds it; the message says who.
    """
    while True:
        # Never through a symbolic link planted at the lock's path.
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            raise BlockingIOError(holder) from None
        except BaseException:
            os.close(descriptor)
            raise
        # The holder before us may have removed the file between our open and our lock:
        # then we hold a lock on a file nobody else can see; take the one at the path.
        try:
            same = os.path.samestat(os.fstat(descriptor), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return descriptor
        os.close(descriptor)


def _existing(path: Path) -> str | None:
    """What an existing inspector run file at ``path`` is, in a few words; ``None`` when
    it is not one (not a regular file, not HDF5, or HDF5 that is not a run)."""
    try:
        with open_untrusted(path) as handle:
            attrs = handle.attrs
            if attrs.get(ENCODING_TYPE) != TYPE["root"] or "model" not in attrs:
                return None
            done = "a complete run" if attrs.get("complete") is np.True_ else "an incomplete run"
            return (
                f"{done} of {attrs.get('model')} ({attrs.get('weights_source')} weights, "
                f"{attrs.get('images_done')} images, created {attrs.get('created')})"
            )
    except (OSError, RuntimeError, ValueError, TypeError, KeyError, RunFileError):
        return None


def refuse_existing(path: Path, *, overwrite: bool = False) -> None:
    """Raise unless ``path`` is free, or holds an inspector run file and ``overwrite`` is
    set. Anything else at ``path`` (user data in another HDF5 file, a text file named
    ``*.h5``, a pipe) is never replaced.

    Raises:
        RunFileError: A file is at ``path``: what it holds, and the ways out.
    """
    if not (path.exists() or path.is_symlink()):
        return
    held = _existing(path) if path.is_file() and not path.is_symlink() else None
    if held is None:
        raise RunFileError(
            f"{path} already exists and is not an inspector run file; inspector never "
            "replaces it, even with --overwrite: give another --out, or move it away"
        )
    if not overwrite:
        raise RunFileError(
            f"{path} already holds {held}; give --overwrite to replace it "
            "(API: overwrite=True), or another --out to keep both"
        )


@contextlib.contextmanager
def claim_output(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock on run file ``path`` for the block.

    Args:
        path: The run file a run is about to write.
        overwrite: Allow the run to replace an existing file at ``path``.

    Raises:
        RunFileError: Another process holds the lock (its pid named), or a file is at
            ``path`` and ``overwrite`` is not set, or the lock file cannot be created.
    """
    lock = lock_path(path)
    descriptor = None
    if fcntl is not None:
        try:
            descriptor = _take(lock)
        except BlockingIOError as exc:
            raise RunFileError(
                f"{path} is being written by another inspector process ({exc}); wait for "
                "it to finish, or give another --out"
            ) from None
        except OSError as exc:
            raise RunFileError(
                f"cannot create the lock file {lock}: {exc.strerror or exc}"
            ) from exc
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"pid {os.getpid()}, started {started}\n".encode(), 0)
    try:
        refuse_existing(path, overwrite=overwrite)
        yield path
    finally:
        if descriptor is not None:
            with contextlib.suppress(OSError):
                lock.unlink()  # while still holding it: see _take
            os.close(descriptor)
