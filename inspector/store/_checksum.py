"""Checksums of a run file: a SHA-256 manifest over every element, written last.

Two layers guard a run file's content (docs/run-file.md, "Checksums"):

- every chunked dataset carries HDF5's ``fletcher32`` filter, so libhdf5 refuses a
  damaged chunk when it reads it;
- the **manifest**, a dataset ``/manifest`` holding JSON ``{"algorithm": "sha256",
  "elements": {HDF5 path: digest}}``, has one SHA-256 digest per group and dataset over
  a canonical serialisation of its attributes and (datasets) its dtype, shape and
  values. It covers what ``fletcher32`` cannot: attributes, scalar and string datasets,
  and a damaged chunk index that would make HDF5 read fill values instead of data. The
  manifest's own digest is the root attribute ``manifest_sha256``, written last.

:func:`seal` writes both into a file open for writing (after everything else);
:func:`verify` recomputes every digest of a file open for reading.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import RunFileError
from ._encode import tag
from ._schema import ENCODING_VERSION, MANIFEST, MANIFEST_DIGEST

__all__ = ["ChecksumError", "digests", "seal", "verify", "verify_file"]

_ALGORITHM = "sha256"


class ChecksumError(ValueError):
    """A run file's content does not match its manifest (the message names the element)."""


def _field(hasher: Any, data: bytes) -> None:
    """One length-prefixed field: no two different sequences hash alike."""
    hasher.update(len(data).to_bytes(8, "little"))
    hasher.update(data)


def _value(hasher: Any, value: Any) -> None:
    """An attribute value or a dataset's values, canonically."""
    if isinstance(value, str):
        _field(hasher, b"s")
        _field(hasher, value.encode("utf-8", "surrogatepass"))
        return
    if isinstance(value, bytes):
        _field(hasher, b"b")
        _field(hasher, value)
        return
    array = np.asarray(value)
    if array.dtype.kind == "O":  # variable-length strings
        _field(hasher, b"o" + repr(array.shape).encode())
        for item in array.reshape(-1):
            _value(hasher, item)
        return
    _field(hasher, b"a" + array.dtype.str.encode() + repr(array.shape).encode())
    _field(hasher, np.ascontiguousarray(array).tobytes())


def _digest(node: h5py.Group | h5py.Dataset, skip: frozenset[str] = frozenset()) -> str:
    """SHA-256 of one element: its kind, attributes (sorted by name) and values."""
    hasher = hashlib.sha256()
    dataset = isinstance(node, h5py.Dataset)
    _field(hasher, b"dataset" if dataset else b"group")
    for key in sorted(node.attrs):
        if key in skip:
            continue
        _field(hasher, key.encode("utf-8", "surrogatepass"))
        _value(hasher, node.attrs[key])
    if dataset:
        _field(hasher, node.dtype.str.encode() + repr(node.shape).encode())
        try:
            values = node[()]
        except OSError as exc:  # a chunk failing its fletcher32 checksum, a bad filter
            reason = " ".join(str(exc).split())
            raise ChecksumError(f"{node.name} cannot be read ({reason})") from exc
        _value(hasher, values)
    return hasher.hexdigest()


def _elements(root: h5py.File) -> Iterator[tuple[str, h5py.Group | h5py.Dataset]]:
    """Every group and dataset but the manifest, by HDF5 path, parents first, sorted."""
    stack: list[h5py.Group] = [root]
    while stack:
        group = stack.pop()
        for name in sorted(group, reverse=True):
            node = group[name]
            if node.name == f"/{MANIFEST}":
                continue
            if isinstance(node, h5py.Group):
                stack.append(node)
            yield node.name, node


def digests(root: h5py.File) -> dict[str, str]:
    """The digest of every element of ``root`` (the root's ``manifest_sha256`` left out)."""
    out = {"/": _digest(root, frozenset({MANIFEST_DIGEST}))}
    out.update((name, _digest(node)) for name, node in _elements(root))
    return out


def seal(root: h5py.File) -> None:
    """Write the manifest of ``root`` (open for writing, otherwise complete), then its
    digest as the root attribute ``manifest_sha256`` (the last thing written)."""
    if MANIFEST in root:
        del root[MANIFEST]
    text = json.dumps({"algorithm": _ALGORITHM, "elements": digests(root)}, sort_keys=True)
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    manifest = root.create_dataset(MANIFEST, data=data, chunks=True, fletcher32=True)
    tag(manifest, "manifest")
    root.attrs[MANIFEST_DIGEST] = _digest(manifest)


def _version(root: h5py.File) -> tuple[int, int]:
    text = str(root.attrs.get(ENCODING_VERSION, "0.0"))
    try:
        major, minor = (int(part) for part in text.split(".")[:2])
    except ValueError:
        return (0, 0)
    return major, minor


def verify(root: h5py.File) -> bool:
    """Check every element of ``root`` against its manifest.

    Returns:
        Whether the file had a manifest (schema 1.0 files have none and are not checked).

    Raises:
        ChecksumError: An element differs from its digest, is missing or was added, or
            the manifest itself is missing (schema 1.1 and later) or damaged.
    """
    stored = root.attrs.get(MANIFEST_DIGEST)
    manifest = root.get(MANIFEST)
    if stored is None and manifest is None:
        if _version(root) >= (1, 1):
            raise ChecksumError("it has no checksum manifest (every file of schema 1.1 has one)")
        return False
    if not isinstance(manifest, h5py.Dataset):
        raise ChecksumError(f"its checksum manifest /{MANIFEST} is missing")
    if stored is None:
        raise ChecksumError(f"the root attribute {MANIFEST_DIGEST} is missing")
    if _digest(manifest) != (stored.decode() if isinstance(stored, bytes) else stored):
        raise ChecksumError(f"its checksum manifest /{MANIFEST} is damaged")
    try:
        content = json.loads(manifest[()].tobytes().decode("utf-8"))
        expected = content["elements"]
        if content["algorithm"] != _ALGORITHM or not isinstance(expected, dict):
            raise ValueError("unknown layout")
    except (ValueError, KeyError, TypeError) as exc:
        raise ChecksumError(f"its checksum manifest /{MANIFEST} is unreadable ({exc})") from exc
    seen = set()
    for name, node in [("/", root), *_elements(root)]:
        seen.add(name)
        want = expected.get(name)
        if want is None:
            raise ChecksumError(f"{name} is not in its checksum manifest (added after writing)")
        skip = frozenset({MANIFEST_DIGEST}) if name == "/" else frozenset()
        if _digest(node, skip) != want:
            what = "the root's attributes" if name == "/" else name
            raise ChecksumError(f"{what} do not match the checksum manifest")
    missing = sorted(set(expected) - seen)
    if missing:
        raise ChecksumError(f"{missing[0]} is in its checksum manifest but not in the file")
    return True


def verify_file(path: Path, root: h5py.File) -> None:
    """:func:`verify` with the error a user sees: one line naming the file and the
    element, and how to read the file anyway."""
    try:
        verify(root)
    except ChecksumError as exc:
        raise RunFileError(
            f"{path} is corrupt: {exc}; it changed after it was written (a disk or copy "
            "error, or an edit); read it anyway with --no-verify (API: verify=False)"
        ) from exc
