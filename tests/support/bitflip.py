"""Single-bit flips in finished run files, and what the reader makes of them.

Shared by ``tests/test_checksums.py`` (a small deterministic campaign in the default tier),
``tests/test_fuzz.py`` (a bounded one in the fuzz tier) and
``benchmarks/bitflip_campaign.py`` (the campaign of docs/reliability.md). Not a test
module (no ``test_`` prefix).

Every flipped file ends in exactly one outcome:

- ``refused``: ``read_run`` raised a one-line ``RunFileError``;
- ``identical``: ``read_run`` read it, and every attribute and dataset value of the file
  (read raw with h5py) equals the unflipped file's — the flip hit bytes nothing uses;
- ``silent``: ``read_run`` read it and something differs — what checksums must prevent;
- ``unclean``: another exception type, or a multi-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from inspector import RunFileError
from inspector.store import read_run

OUTCOMES = ("refused", "identical", "silent", "unclean")


def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit number ``bit`` (0 = lowest bit of the first byte) inverted."""
    changed = bytearray(data)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def _values(value: Any) -> Any:
    """An attribute or dataset value in a form ``==`` compares exactly (NaN == NaN)."""
    if isinstance(value, (bytes, str)):
        return value
    array = np.asarray(value)
    if array.dtype.kind == "O":
        return [(type(v).__name__, v) for v in array.reshape(-1).tolist()], array.shape
    return array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes()


def contents(path: Path) -> dict[str, Any]:
    """Every attribute and dataset value of an HDF5 file, by path (the raw content)."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as handle:

        def add(name: str, node: h5py.Group | h5py.Dataset) -> None:
            for key in node.attrs:
                out[f"{name}@{key}"] = _values(node.attrs[key])
            if isinstance(node, h5py.Dataset):
                out[name] = _values(node[()])
            else:
                out[name] = "group"

        # Walk by link names, as the reader does (``visititems`` also asks libhdf5 for
        # each object's info, which reads header fields nothing else uses).
        stack: list[tuple[str, h5py.Group]] = [("/", handle)]
        add("/", handle)
        while stack:
            prefix, group = stack.pop()
            for name in group:
                node = group[name]
                full = f"{prefix}{name}"
                add(full, node)
                if isinstance(node, h5py.Group):
                    stack.append((f"{full}/", node))
    return out


def differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Paths (``element`` or ``element@attribute``) whose values differ, or exist in one only."""
    keys = expected.keys() | got.keys()
    return sorted(k for k in keys if expected.get(k, "missing") != got.get(k, "missing"))


def classify(path: Path, expected: dict[str, Any]) -> tuple[str, str]:
    """The outcome of reading flipped file ``path``, and a detail (message or paths)."""
    try:
        read_run(path)
    except RunFileError as exc:
        message = str(exc)
        return ("unclean", message) if "\n" in message else ("refused", message)
    except Exception as exc:
        return "unclean", f"{type(exc).__name__}: {exc}"
    try:
        got = contents(path)
    except Exception as exc:
        return "silent", f"raw read failed after a clean read_run: {type(exc).__name__}: {exc}"
    changed = differences(expected, got)
    return ("silent", ", ".join(changed[:5])) if changed else ("identical", "")


def trial(original: Path, scratch: Path, bit: int, expected: dict[str, Any]) -> tuple[str, str]:
    """Flip ``bit`` of ``original`` into ``scratch`` and classify the read."""
    scratch.write_bytes(flip_bit(original.read_bytes(), bit))
    return classify(scratch, expected)
