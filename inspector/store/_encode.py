"""Low-level encoding of arrays and trees into HDF5, shared by the writer and the reader."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from ._schema import ENCODING_TYPE, ENCODING_VERSION, SCHEMA_VERSION, TYPE

__all__ = [
    "checksum_options",
    "decode_name",
    "encode_name",
    "read_attrs",
    "read_tree",
    "tag",
    "write_array",
    "write_strings",
    "write_tree",
]

Tree = Mapping[str, Any]

_COMPRESS_FROM = 4096
"""Arrays of analysis trees larger than this (elements) are stored gzip-compressed."""


_ESCAPES = {"%": "%25", "/": "%2F", "\x00": "%00"}
_UNESCAPES = {v: k for k, v in _ESCAPES.items()}


def encode_name(name: str) -> str:
    """The HDF5 name of a key (a layer path, a note's layer): ``%``, ``/`` and NUL
    percent-encoded. A ``/`` would nest groups (``nn.ModuleDict`` keys may hold any
    character but ``.``) and HDF5 cuts names at NUL; other names are stored as they are.
    """
    return re.sub(r"[%/\x00]", lambda m: _ESCAPES[m.group()], name)


def decode_name(name: str) -> str:
    """The inverse of :func:`encode_name` (names written before it decode to themselves)."""
    return re.sub(r"%(?:25|2F|00)", lambda m: _UNESCAPES[m.group()], name)


def tag(node: h5py.Group | h5py.Dataset, kind: str) -> None:
    node.attrs[ENCODING_TYPE] = TYPE[kind]
    node.attrs[ENCODING_VERSION] = SCHEMA_VERSION


def _attr(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value)


def _overwrite(dataset: h5py.Dataset, array: np.ndarray) -> bool:
    """Write ``array`` into ``dataset`` in place when the layout allows; ``False`` if not.

    Checkpoints rewrite the same datasets again and again; deleting and recreating
    them would leave the freed space unused and grow the file with every checkpoint.
    """
    if dataset.dtype != array.dtype or dataset.ndim != array.ndim:
        return False
    if dataset.shape != array.shape:
        growable = dataset.maxshape[0] is None and dataset.shape[1:] == array.shape[1:]
        if not growable or dataset.chunks is None:
            return False
        dataset.resize(array.shape[0], axis=0)
    if array.size:
        dataset[...] = array
    return True


def checksum_options(array: np.ndarray, *, chunked: bool = False) -> dict[str, Any]:
    """``fletcher32`` (and the chunked layout it needs) for every dataset that can have
    it: not scalars, not empty fixed-size arrays, not variable-length strings (HDF5
    filters do not apply to them). The manifest covers those (``_checksum``)."""
    if h5py.check_string_dtype(array.dtype) is not None or array.dtype.kind == "O":
        return {}
    if array.ndim == 0 or (array.size == 0 and not chunked):
        return {}
    return {"fletcher32": True, **({} if chunked else {"chunks": True})}


def _chunks(array: np.ndarray, chunk_axes: int | None) -> tuple[int, ...] | bool:
    """One chunk per item of the leading axes (e.g. one attention map per chunk)."""
    if chunk_axes is None or array.ndim <= chunk_axes:
        return True
    return (1,) * (array.ndim - chunk_axes) + tuple(max(1, n) for n in array.shape[-chunk_axes:])


def write_array(
    group: h5py.Group,
    name: str,
    array: np.ndarray,
    dims: Sequence[str] | None = None,
    *,
    kind: str = "array",
    compress: bool = False,
    resizable: bool = False,
    chunk_axes: int | None = None,
) -> h5py.Dataset:
    """Write ``array`` as dataset ``name`` with encoding attributes and dimension labels.

    An existing dataset of the same dtype and shape (or one resizable along its first
    axis) is overwritten in place; anything else is replaced.

    Args:
        group: Where to write.
        name: Dataset name.
        array: The data.
        dims: One label per axis, from the axis vocabulary (``AXES``).
        kind: Key of the ``encoding-type`` in ``TYPE``.
        compress: gzip (level 4) with the shuffle filter, chunked.
        resizable: Unlimited first axis (chunked), so later checkpoints can grow it.
        chunk_axes: With ``compress``: the trailing axes that make up one chunk
            (default: h5py's guess).
    """
    array = np.asarray(array)
    if dims is not None and len(dims) != array.ndim:
        raise ValueError(f"{name}: {len(dims)} dimension labels for a {array.ndim}-d array")
    existing = group.get(name)
    if isinstance(existing, h5py.Dataset) and _overwrite(existing, array):
        dataset = existing
    else:
        if existing is not None:
            del group[name]
        options: dict[str, Any] = {}
        if compress and array.size:
            chunks = _chunks(array, chunk_axes)
            options.update(compression="gzip", compression_opts=4, shuffle=True, chunks=chunks)
        if resizable:
            options["maxshape"] = (None, *array.shape[1:])
            options.setdefault("chunks", True)
        options.update(checksum_options(array, chunked="chunks" in options))
        dataset = group.create_dataset(name, data=array, **options)
    tag(dataset, kind)
    if dims is not None:
        for axis, label in enumerate(dims):
            if dataset.dims[axis].label != label:
                dataset.dims[axis].label = label
    return dataset


def write_strings(group: h5py.Group, name: str, values: Sequence[str], dim: str) -> None:
    data = np.array(list(values), dtype=h5py.string_dtype("utf-8"))
    write_array(group, name, data, (dim,), kind="strings", resizable=True)


def write_tree(group: h5py.Group, tree: Tree) -> None:
    """Nested mappings become groups, arrays datasets, everything else attributes.

    Arrays may be given as ``(array, dims)`` pairs to label their dimensions.
    """
    for key, value in tree.items():
        key = encode_name(str(key))
        if isinstance(value, Mapping):
            child = group.require_group(key)
            tag(child, "tree")
            write_tree(child, value)
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], np.ndarray):
            write_array(group, key, value[0], value[1], compress=value[0].size > _COMPRESS_FROM)
        elif isinstance(value, np.ndarray):
            write_array(group, key, value, compress=value.size > _COMPRESS_FROM)
        else:
            group.attrs[key] = _attr(value)


def read_attrs(node: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.attrs.items():
        if key in (ENCODING_TYPE, ENCODING_VERSION):
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, np.generic):
            value = value.item()
        out[decode_name(key)] = value
    return out


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """The inverse of :func:`write_tree` (attributes stay strings; JSON is not decoded)."""
    out: dict[str, Any] = read_attrs(group)
    for name, node in group.items():
        key = decode_name(name)
        if isinstance(node, h5py.Group):
            out[key] = read_tree(node)
        elif node.attrs.get(ENCODING_TYPE) == TYPE["strings"]:
            out[key] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in node[()]]
        else:
            out[key] = node[()]
    return out
