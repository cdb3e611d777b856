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


_SIZE_T = 1 << 64
"""libhdf5 computes each step in ``size_t``: modulo 2**64 on a 64-bit machine."""


def _step(index: int, length: int) -> int:
    """The bytes libhdf5 moves past an object, as its 64-bit ``size_t`` arithmetic gives
    them: ``H5HG_SIZEOF_OBJHDR + H5HG_ALIGN(size)`` for an object, ``size`` for the
    free-space entry (index 0). A length near 2**64 wraps: ``2**64 - 16`` gives 0."""
    if index == 0:
        return length % _SIZE_T
    aligned = (((length + 7) % _SIZE_T) // 8 * 8) % _SIZE_T
    return (_OBJECT_HEADER + aligned) % _SIZE_T


def _walk(data: mmap.mmap, start: int, size: int) -> str | None:
    """Why libhdf5's walk over the collection at ``start`` would not end, or ``None``.

    A step that is not strictly positive stands still (libhdf5 spins); one that passes
    the collection's end is a pointer libhdf5 would follow outside the collection (a
    step of 2**64 - 16 is a pointer 16 bytes back: a loop). Both are refused.
    """
    end = start + size
    at = start + _HEADER
    while at < end:
        if at + _OBJECT_HEADER > end:  # too small for an object: libhdf5 takes it as free
            return None
        index, _, _, length = struct.unpack_from("<HHIQ", data, at)
        step = _step(index, length)
        if step == 0:
            return (
                f"global heap at byte {start}: an object at byte {at} whose size "
                f"({length}) makes libhdf5's walk stand still"
            )
        if step > end - at:
            return (
                f"global heap at byte {start}: an object at byte {at} whose size "
                f"({length}) leads outside its collection"
            )
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
