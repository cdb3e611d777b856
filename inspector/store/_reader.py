"""The one reader of run files: plain numpy arrays and dataclasses, no model needed."""

from __future__ import annotations

import json
import os
import re
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from .._errors import AnalysisNotFoundError, RunFileError
from ..analyzers import REGISTRY, AnalysisResult, ResultSchemaError
from ._checksum import verify_file
from ._encode import decode_name, encode_name, read_attrs, read_tree
from ._lock import images_kept
from ._open import ReadTimeout, deadline, open_untrusted
from ._schema import ENCODING_TYPE, ENCODING_VERSION, JSON_ATTRS, SCHEMA_VERSION, TYPE
from ._validate import check_run

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Layer", "LayerList", "Run", "read_run"]


def _decode(attrs: dict[str, Any]) -> dict[str, Any]:
    out = dict(attrs)
    for key in JSON_ATTRS:
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


@dataclass(frozen=True, repr=False)
class Layer:
    """One captured layer of a run.

    Attributes:
        name: Module path (``blocks.3.attn``).
        kind: ``attention`` or ``channel``.
        attrs: Geometry, heads, channels, site, ... (JSON decoded).
        summaries: Per-image summaries ``[sample, head]`` by name (attention layers).
        maps: First-K attention maps (float16) or ``None``.
        moments: Accumulator state (``count``, ``mean``, ``comoment``) or ``None``.
        groups: CKA sums state or ``None``.
        image_groups: CKA pieces per contiguous image group (``hooks.ImageGroups``
            state) or ``None``.
    """

    name: str
    kind: str
    attrs: dict[str, Any]
    summaries: dict[str, np.ndarray] = field(default_factory=dict)
    maps: np.ndarray | None = None
    moments: dict[str, np.ndarray] | None = None
    groups: dict[str, np.ndarray] | None = None
    image_groups: dict[str, np.ndarray] | None = None

    def __repr__(self) -> str:
        units = (
            f"heads={self.attrs.get('heads')}"
            if self.kind == "attention"
            else f"channels={self.attrs.get('channels')}"
        )
        maps = "" if self.maps is None else f", maps={tuple(self.maps.shape)}"
        return f"Layer({self.name!r}, {self.kind}, {units}{maps})"


class LayerList(list["Layer"]):
    """The layers of one kind (a list). Calling it returns itself: ``run.attention_layers()``
    of inspector <= 0.x still works beside the property."""

    def __call__(self) -> LayerList:
        return self


@dataclass(frozen=True, repr=False)
class Run:
    """Everything a run file holds, read into memory.

    Attributes:
        path: The file.
        meta: Root attributes (model, weights, versions, input size, options, timings...).
        complete: Whether the run finished.
        sample_ids: Image ids in the order they were processed.
        labels: Their labels (``-1`` when unknown).
        layers: Captured layers in model order.
        analysis: Analyzer results by name as stored: nested dicts of arrays and
            attributes (``params`` decoded), for forensic reading; :meth:`result` gives
            the typed result.
    """

    path: Path
    meta: dict[str, Any]
    complete: bool
    sample_ids: list[str]
    labels: np.ndarray
    layers: dict[str, Layer]
    analysis: dict[str, dict[str, Any]]

    @property
    def model(self) -> str:
        return str(self.meta.get("model", ""))

    def result(self, name: str) -> AnalysisResult:
        """The typed result of analyzer ``name`` (``DistanceResult``, ...), rebuilt from
        the stored tree through the analyzer registry.

        Raises:
            AnalysisNotFoundError: The run holds no such analysis (the message lists
                the ones it holds).
            RunFileError: The result was written by a newer analyzer version than the
                installed one, or does not match its schema.
        """
        tree = self.analysis.get(name)
        held = ", ".join(self.analysis) or "none"
        if tree is None:
            known = "" if name in REGISTRY else f" (analyzers: {', '.join(REGISTRY)})"
            raise AnalysisNotFoundError(
                f"{self.path} holds no {name!r} analysis{known}; it holds: {held}"
            )
        if name not in REGISTRY:
            raise RunFileError(
                f"{self.path} holds a {name!r} analysis that this inspector does not know "
                f"(analyzers: {', '.join(REGISTRY)}); upgrade inspector to read it"
            )
        stored = str(tree.get("analyzer_version", ""))
        installed = REGISTRY.version(name)
        stored_key = _version_key(stored)
        if stored_key is None:
            raise RunFileError(f"{self.path}: analysis {name!r} has no valid analyzer_version")
        if stored_key > (_version_key(installed) or ()):
            raise RunFileError(
                f"{self.path}: analysis {name!r} was written by analyzer version {stored}, "
                f"newer than this inspector's {installed}; upgrade inspector to read it"
            )
        params = tree.get("params")
        try:
            return REGISTRY.result_type(name).from_tree(
                tree, params if isinstance(params, dict) else {}, stored
            )
        except ResultSchemaError as exc:
            raise RunFileError(
                f"{self.path}: analysis {name!r} does not match its schema ({exc})"
            ) from exc

    @property
    def attention_layers(self) -> LayerList:
        """The captured attention layers, in model order."""
        return LayerList(layer for layer in self.layers.values() if layer.kind == "attention")

    @property
    def channel_layers(self) -> LayerList:
        """The captured channel layers, in model order."""
        return LayerList(layer for layer in self.layers.values() if layer.kind == "channel")

    @property
    def analyses(self) -> list[str]:
        """Names of the analyses the run holds."""
        return list(self.analysis)

    def to_dataframe(self, table: str = "heads") -> pd.DataFrame:
        """One table of the run as a pandas DataFrame (needs ``pip install 'inspector[pandas]'``).

        Columns are ``<analysis>.<field>``, built from the analyzers' declared result
        fields (docs/run-file.md lists them), so every measured field, intervals included,
        is a column.

        Args:
            table: ``heads`` (index layer, head: distance, entropy, prefix mass,
                importance, locality...), ``units`` (index layer, unit: heads and
                channels), ``layers`` (index layer: every per-layer number) or
                ``pruning`` (one row per unit kind and step of the pruning curve).

        Raises:
            InspectorError: pandas is not installed, or ``table`` is unknown.
        """
        from ._frames import to_dataframe

        return to_dataframe(self, table)

    def summary(self) -> str:
        """The run in a few lines: model, weights, images, layers, analyses, then the
        headline numbers per layer (mean attention distance, ERF distance, redundancy;
        pixels)."""
        from ._frames import summary_text

        return summary_text(self)

    def __repr__(self) -> str:
        return (
            f"<Run {self.model!r} weights={self.meta.get('weights_source', '?')} "
            f"images={len(self.sample_ids)} layers={len(self.attention_layers)} attention"
            f"+{len(self.channel_layers)} channel analyses=[{', '.join(self.analysis)}]"
            f"{'' if self.complete else ' INCOMPLETE'} path={str(self.path)!r}>"
        )

    def _repr_html_(self) -> str:
        """The notebook summary: header and per-layer table (escaped HTML)."""
        from ._frames import summary_html

        return summary_html(self)


def _version_key(version: str) -> tuple[int, ...] | None:
    """``"1.2"`` as ``(1, 2)``; ``None`` when it is not dot-separated integers."""
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return None


def _check_version(path: Path, node: h5py.File) -> None:
    if node.attrs.get(ENCODING_TYPE) != TYPE["root"]:
        raise RunFileError(f"{path} is an HDF5 file but not an inspector run file")
    version = str(node.attrs.get(ENCODING_VERSION, "0"))
    if int(version.split(".")[0]) > int(SCHEMA_VERSION.split(".")[0]):
        raise RunFileError(
            f"{path} uses run-file schema {version}, newer than this inspector's "
            f"{SCHEMA_VERSION}; upgrade inspector to read it"
        )


_FILTERS = frozenset({h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32})
"""The only HDF5 filters a run file may use; any other would make HDF5 look for a plugin
library to load."""

_MAX_DEPTH = 16
"""Groups nest at most this deep (a run file needs 6)."""


def _plain_type(dtype: np.dtype) -> bool:
    """Numbers, booleans and strings: what the writer stores (no references, opaque
    bytes, compounds or variable-length sequences)."""
    if h5py.check_string_dtype(dtype) is not None:
        return True
    return dtype.fields is None and dtype.kind in "biuf" and h5py.check_vlen_dtype(dtype) is None


def _check_attrs(node: h5py.HLObject) -> None:
    for key in node.attrs:
        attribute = node.attrs.get_id(key)
        if not _plain_type(attribute.dtype):
            raise ValueError(f"attribute {key!r} of {node.name} has type {attribute.dtype}")
        if (
            attribute.get_storage_size() > _MAX_ATTRIBUTE_ITEMS * 16
            or np.prod(attribute.shape or (), dtype=np.float64) > _MAX_ATTRIBUTE_ITEMS
        ):
            raise ValueError(f"attribute {key!r} of {node.name} has shape {attribute.shape}")


def _check_dataset(dataset: h5py.Dataset) -> int:
    """Check one dataset; returns the bytes reading it would take."""
    if not _plain_type(dataset.dtype):
        raise ValueError(f"{dataset.name} has type {dataset.dtype}")
    if dataset.is_virtual or dataset.external:
        raise ValueError(f"{dataset.name} keeps its data in other files")
    plist = dataset.id.get_create_plist()
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in _FILTERS:
            raise ValueError(f"{dataset.name} needs HDF5 filter {code} (a plugin)")
    return int(np.prod(dataset.shape, dtype=np.float64)) * dataset.dtype.itemsize


_INFLATION = 64
"""How many times its size a file's datasets may take in memory once read, beyond
:data:`_FLOOR`. The writer compresses only attention maps (float16 probabilities, about
2:1); a file that claims more (a gzip bomb, or a corrupt shape whose missing chunks would
be read as fill values) is refused before anything is allocated."""

_FLOOR = 64 << 20
"""Bytes any file's datasets may take once read, whatever its size (64 MiB)."""

_SECONDS = 5.0
_SECONDS_PER_MB = 1.0
"""The wall-clock budget of one read: 5 s plus 1 s per MB of file (a 1 MB run file
reads in well under a second; the limit only stops hostile files)."""


def memory_budget(size: int) -> int:
    """Bytes the datasets of a file of ``size`` bytes may take once read."""
    return _FLOOR + _INFLATION * size


def time_budget(size: int) -> float:
    """Seconds reading a file of ``size`` bytes may take."""
    return _SECONDS + _SECONDS_PER_MB * size / 1e6


_MAX_ATTRIBUTE_ITEMS = 1 << 16
"""Attributes are scalars or short arrays (dimension labels); more is corruption."""


def _check_structure(root: h5py.File) -> int:
    """Refuse what the writer never produces and a hostile file could use, before any
    data is read: soft and external links (they read other files, or loop), objects
    linked twice (cycles), nesting deeper than :data:`_MAX_DEPTH`, virtual or external
    storage, filters other than gzip, shuffle and fletcher32 (HDF5 would load a plugin
    library for them), and types other than numbers, booleans and strings.

    Returns:
        The bytes its datasets take once read.

    Raises:
        ValueError: What was found (the caller adds the file name).
    """
    seen = {root.id}
    stack: list[tuple[h5py.Group, int]] = [(root, 0)]
    _check_attrs(root)
    budget = memory_budget(os.path.getsize(root.filename))
    claimed = 0
    while stack:
        group, depth = stack.pop()
        for name in group:
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise ValueError(f"{group.name}/{name} is a {type(link).__name__}")
            node = group[name]
            if node.id in seen:
                raise ValueError(f"{node.name} is linked twice")
            seen.add(node.id)
            _check_attrs(node)
            if isinstance(node, h5py.Dataset):
                claimed += _check_dataset(node)
                if claimed > budget:
                    raise ValueError(
                        f"its datasets claim {claimed} bytes once read, more than the "
                        f"{budget} a file of its size may take"
                    )
            elif isinstance(node, h5py.Group):
                if depth + 1 >= _MAX_DEPTH:
                    raise ValueError(f"{node.name} is nested deeper than {_MAX_DEPTH} levels")
                stack.append((node, depth + 1))
            else:
                raise ValueError(f"{group.name}/{name} is a {type(node).__name__}")
    return claimed


def _read_layer(name: str, group: h5py.Group) -> Layer:
    attrs = _decode(read_attrs(group))
    summaries = (
        {decode_name(k): v[()] for k, v in group["summaries"].items()}
        if "summaries" in group
        else {}
    )
    return Layer(
        name=name,
        kind=str(attrs.pop("kind")),
        attrs=attrs,
        summaries=summaries,
        maps=group["maps"][()] if "maps" in group else None,
        moments={k: v[()] for k, v in group["moments"].items()} if "moments" in group else None,
        groups={k: v[()] for k, v in group["groups"].items()} if "groups" in group else None,
        image_groups={k: v[()] for k, v in group["image_groups"].items()}
        if "image_groups" in group
        else None,
    )


_CORRUPT = (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError, MemoryError)
"""What h5py, numpy and json raise on damaged files: h5py reports many HDF5 errors as a
plain ``RuntimeError`` ("Error iterating over attributes (ran off end of input buffer
while decoding)"); ``json.JSONDecodeError`` and ``UnicodeDecodeError`` are
``ValueError``s."""


_HEADROOM = 256 << 20
"""Address space a read may take beyond what its datasets need (256 MiB): libhdf5's
metadata cache, Python objects, one string attribute at a time."""


@contextmanager
def _address_space_ceiling(extra: int) -> Iterator[None]:
    """Cap the process's address space at its current size plus ``extra`` bytes for the
    duration of the block (Linux; elsewhere, or under a lower limit, nothing changes).

    libhdf5 trusts the length a variable-length string declares (up to 4 GiB each) and
    allocates it before it finds the data missing: a damaged or hostile 300 KB file took
    3 GB and 10 s per string. Under the cap the allocation fails at once and the read
    ends in an error. The previous limit is put back on exit.
    """
    statm = Path("/proc/self/statm")
    if not sys.platform.startswith("linux") or not statm.exists():
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    current = int(statm.read_text().split()[0]) * resource.getpagesize()
    ceiling = current + extra
    unlimited = resource.RLIM_INFINITY
    if (soft != unlimited and soft <= ceiling) or (hard != unlimited and hard < ceiling):
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", str(exc)).strip()


def _model_order(
    values: dict[str, Any], layers: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """``values`` keyed by layer path, in the model's order (captured layers, then the
    recorded module order), whatever order HDF5 listed them in."""
    rank = {name: i for i, name in enumerate(meta.get("module_order") or [])}
    first = {name: i for i, name in enumerate(layers)}
    return dict(
        sorted(
            values.items(),
            key=lambda item: (rank.get(item[0], first.get(item[0], len(rank))), item[0]),
        )
    )


def read_run(path: str | Path, *, allow_incomplete: bool = False, verify: bool = True) -> Run:
    """Read a run file.

    Args:
        path: The run file.
        allow_incomplete: Read a run that did not finish (a ``.partial`` file).
        verify: Check every element against the file's checksum manifest (schema 1.1);
            ``False`` reads a damaged file as it is, for forensics.

    Raises:
        RunFileError: Missing, not HDF5, not a run file, a newer schema, corrupt (a
            checksum that does not match, naming the element), or incomplete (unless
            ``allow_incomplete``).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        partial = path.with_name(path.name + ".partial")
        kept = images_kept(partial) if partial.exists() else 0
        hint = (
            f" ({partial} holds an unfinished run of {kept} images: finish it with "
            "`inspector analyze ... --resume`)"
            if kept
            else ""
        )
        raise RunFileError(f"no run file at {path}{hint}")
    if path.is_dir():
        raise RunFileError(f"{path} is a folder, not a run file")
    try:
        handle = open_untrusted(path)
    except (OSError, RuntimeError, ValueError) as exc:
        raise RunFileError(f"{path} is not a readable HDF5 file ({_one_line(exc)})") from exc
    size = path.stat().st_size
    try:
        with handle, deadline(time_budget(size)):
            with _address_space_ceiling(_HEADROOM):
                _check_version(path, handle)
                claimed = _check_structure(handle)
            if verify:
                with _address_space_ceiling(2 * claimed + _HEADROOM):
                    verify_file(path, handle)
            run = _read(path, handle, allow_incomplete, 2 * claimed + size)
    except RunFileError:
        raise
    except ReadTimeout as exc:
        raise RunFileError(
            f"{path} is corrupt or hostile: {exc}, the limit for a file of {size} bytes "
            "(a damaged file can make libhdf5 work without end); check where it came from"
        ) from exc
    except _CORRUPT as exc:
        raise RunFileError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    return run


def _read(path: Path, handle: h5py.File, allow_incomplete: bool, needs: int) -> Run:
    """Everything in ``handle``, its structure checked; ``needs`` bytes of memory."""
    with _address_space_ceiling(needs + _HEADROOM):
        meta = _decode(read_attrs(handle))
        complete = _complete(path, meta.pop("complete", False))
        if not complete and not allow_incomplete:
            raise RunFileError(
                f"{path} is an incomplete run ({meta.get('images_done', 0)} images done); "
                "finish it with `inspector analyze ... --resume`"
            )
        samples = handle.get("samples")
        ids = read_tree(samples).get("ids", []) if samples is not None else []
        labels = samples["labels"][()] if samples is not None else np.zeros(0, np.int64)
        layers: dict[str, Layer] = {}
        if "layers" in handle:
            group = handle["layers"]
            order = json.loads(group.attrs.get("order", "[]"))
            # Layers missing from ``order`` (never written by this writer) come last.
            order += sorted(decode_name(k) for k in group if decode_name(k) not in order)
            for name in order:
                if encode_name(name) in group:
                    layers[name] = _read_layer(name, group[encode_name(name)])
        analysis = {}
        if "analysis" in handle:
            for key, group in handle["analysis"].items():
                name = decode_name(key)
                tree = read_tree(group)
                tree["params"] = json.loads(tree.get("params", "{}"))
                if isinstance(tree.get("layers"), dict):  # HDF5 sorts names as strings
                    tree["layers"] = _model_order(tree["layers"], layers, meta)
                analysis[name] = tree
    run = Run(path, meta, complete, list(ids), labels, layers, analysis)
    problem = check_run(run)
    if problem is not None:
        raise RunFileError(
            f"{path} is inconsistent ({problem}); it was not written by inspector as it "
            "is, or was damaged: run the analysis again"
        )
    return run


def _complete(path: Path, value: Any) -> bool:
    """The root attribute ``complete``: a boolean, nothing else (the string ``"false"``
    would be true for ``bool``)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise RunFileError(
        f"{path} is inconsistent (its attribute 'complete' is {value!r}, not a boolean); "
        "it was not written by inspector as it is, or was damaged: run the analysis again"
    )
