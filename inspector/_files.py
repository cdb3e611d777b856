"""Input paths checked before they are opened: only regular files are read.

Opening a named pipe blocks until a writer comes (PIL, libhdf5 and ``torch.load`` would
wait forever), a device can stream without end (``/dev/zero``) and a socket cannot be
opened at all; none of them is an image, a run file or a weights file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["file_kind", "regular_file_problem"]

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in a few words (``a named pipe (FIFO)``)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "a special file")


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a regular file that can be opened, or ``None`` when it is.

    Symbolic links are followed (a link to a regular file is fine). The answer is a
    phrase to follow the path in a message: ``is a named pipe (FIFO), not a regular
    file``, ``does not exist``.
    """
    try:
        mode = os.stat(Path(path)).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return f"is {file_kind(mode)}, not a regular file"
