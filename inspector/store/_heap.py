"""A check of HDF5 global heap collections before libhdf5 reads them.

Variable-length strings (every text attribute of a run file) live in global heap
collections. libhdf5 parses a collection by walking its objects, each step moving past
the object's declared size; a damaged free-space entry of size zero makes that walk
stand still, and the first string read never returns (found by the reader's fuzzer:
tests/robustness/test_fuzz.py). C code cannot be interrupted from Python, so the collections are
walked here first, the same way, and a file whose walk would not end is refused.

Format: HDF5 file format specification, "III.E. Disk Format: Level 1E - Global Heap".
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

__all__ = ["global_heap_problem"]

_SIGNATURE = b"GCOL"
_HEADER = 16  # signature, version, 3 reserved bytes, collection size (8-byte lengths)
_OBJECT_HEADER = 16  # index (2), reference count (2), reserved (4), size (8)


def _align(size: int) -> int:
    return (size + 7) & ~7


def _walk(data: mmap.mmap, start: int, size: int) -> str | None:
    """Why libhdf5's walk over the collection at ``start`` would not end, or ``None``."""
    end = start + size
    at = start + _HEADER
    while at < end:
        if at + _OBJECT_HEADER > end:  # too small for an object: libhdf5 takes it as free
            return None
        index, _, _, length = struct.unpack_from("<HHIQ", data, at)
        step = length if index == 0 else _OBJECT_HEADER + _align(length)
        if step <= 0:
            return f"global heap at byte {start}: a free-space entry of size 0 at byte {at}"
        at += step
    return None


def global_heap_problem(path: Path) -> str | None:
    """Why the global heap collections of the HDF5 file ``path`` are unsafe to read.

    Every ``GCOL`` signature followed by version 1 and a size that fits in the file is
    walked as libhdf5 would walk it (a signature inside other data is walked too: a
    walk that ends is harmless).
    """
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return None
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            total = len(data)
            found = data.find(_SIGNATURE)
            while found != -1:
                if found + _HEADER <= total and data[found + 4] == 1:
                    (size,) = struct.unpack_from("<Q", data, found + 8)
                    if _HEADER <= size <= total - found:
                        problem = _walk(data, found, size)
                        if problem is not None:
                            return problem
                found = data.find(_SIGNATURE, found + 1)
    return None
