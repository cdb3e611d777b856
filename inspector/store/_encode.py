"""Low-level encoding of arrays and trees into HDF5, shared by the writer and the reader."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from ._schema import ENCODING_TYPE, ENCODING_VERSION, SCHEMA_VERSION, TYPE

__all__ = ["read_attrs", "read_tree", "tag", "write_array", "write_strings", "write_tree"]

Tree = Mapping[str, Any]


def tag(node: h5py.Group | h5py.Dataset, kind: str) -> None:
    node.attrs[ENCODING_TYPE] = TYPE[kind]
    node.attrs[ENCODING_VERSION] = SCHEMA_VERSION


def _attr(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float, np.integer, np.floating, np.bool_)):
        return value
    return json.dumps(value)


def write_array(
    group: h5py.Group,
    name: str,
    array: np.ndarray,
    dims: Sequence[str] | None = None,
    *,
    kind: str = "array",
    compress: bool = False,
    resizable: bool = False,
) -> h5py.Dataset:
    """Write ``array`` as dataset ``name`` with encoding attributes and dimension labels."""
    array = np.asarray(array)
    if name in group:
        del group[name]
    options: dict[str, Any] = {}
    if compress and array.size > 1024:
        options.update(compression="gzip", compression_opts=4, shuffle=True, chunks=True)
    if resizable:
        options.update(maxshape=(None, *array.shape[1:]), chunks=True)
    dataset = group.create_dataset(name, data=array, **options)
    tag(dataset, kind)
    if dims is not None:
        if len(dims) != array.ndim:
            raise ValueError(f"{name}: {len(dims)} dimension labels for a {array.ndim}-d array")
        for axis, label in enumerate(dims):
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
        if isinstance(value, Mapping):
            child = group.require_group(key)
            tag(child, "tree")
            write_tree(child, value)
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], np.ndarray):
            write_array(group, key, value[0], value[1])
        elif isinstance(value, np.ndarray):
            write_array(group, key, value)
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
        out[key] = value
    return out


def read_tree(group: h5py.Group) -> dict[str, Any]:
    """The inverse of :func:`write_tree` (attributes stay strings; JSON is not decoded)."""
    out: dict[str, Any] = read_attrs(group)
    for key, node in group.items():
        if isinstance(node, h5py.Group):
            out[key] = read_tree(node)
        elif node.attrs.get(ENCODING_TYPE) == TYPE["strings"]:
            out[key] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in node[()]]
        else:
            out[key] = node[()]
    return out
