"""The one reader of run files: plain numpy arrays and dataclasses, no model needed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import RunFileError
from ._encode import decode_name, encode_name, read_attrs, read_tree
from ._schema import ENCODING_TYPE, ENCODING_VERSION, JSON_ATTRS, PENDING, SCHEMA_VERSION, TYPE

__all__ = ["Layer", "Run", "read_run"]


def _decode(attrs: dict[str, Any]) -> dict[str, Any]:
    out = dict(attrs)
    for key in JSON_ATTRS:
        if isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


@dataclass(frozen=True)
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
    """

    name: str
    kind: str
    attrs: dict[str, Any]
    summaries: dict[str, np.ndarray] = field(default_factory=dict)
    maps: np.ndarray | None = None
    moments: dict[str, np.ndarray] | None = None
    groups: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Run:
    """Everything a run file holds, read into memory.

    Attributes:
        path: The file.
        meta: Root attributes (model, weights, versions, input size, options, timings...).
        complete: Whether the run finished.
        sample_ids: Image ids in the order they were processed.
        labels: Their labels (``-1`` when unknown).
        layers: Captured layers in model order.
        analysis: Analyzer results by name: nested dicts of arrays and attributes.
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

    def attention_layers(self) -> list[Layer]:
        return [layer for layer in self.layers.values() if layer.kind == "attention"]

    def channel_layers(self) -> list[Layer]:
        return [layer for layer in self.layers.values() if layer.kind == "channel"]


def _check_version(path: Path, node: h5py.File) -> None:
    if node.attrs.get(ENCODING_TYPE) != TYPE["root"]:
        raise RunFileError(f"{path} is an HDF5 file but not an inspector run file")
    version = str(node.attrs.get(ENCODING_VERSION, "0"))
    if int(version.split(".")[0]) > int(SCHEMA_VERSION.split(".")[0]):
        raise RunFileError(
            f"{path} uses run-file schema {version}, newer than this inspector's "
            f"{SCHEMA_VERSION}; upgrade inspector to read it"
        )


def _read_layer(name: str, group: h5py.Group, rows: int | None) -> Layer:
    """One layer; with ``rows``, per-image datasets are cut to that many rows (the rows an
    incomplete file's last finished checkpoint covers)."""
    attrs = _decode(read_attrs(group))
    summaries = (
        {decode_name(k): v[:rows] for k, v in group["summaries"].items()}
        if "summaries" in group
        else {}
    )
    return Layer(
        name=name,
        kind=str(attrs.pop("kind")),
        attrs=attrs,
        summaries=summaries,
        maps=group["maps"][:rows] if "maps" in group else None,
        moments={k: v[()] for k, v in group["moments"].items()} if "moments" in group else None,
        groups={k: v[()] for k, v in group["groups"].items()} if "groups" in group else None,
    )


def read_run(path: str | Path, *, allow_incomplete: bool = False) -> Run:
    """Read a run file.

    Raises:
        RunFileError: Missing, not HDF5, not a run file, a newer schema, corrupt, or
            incomplete (unless ``allow_incomplete``).
    """
    path = Path(path)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        hint = (
            f" ({partial.name} holds an unfinished run: finish it with "
            "`inspector analyze ... --resume`)"
            if partial.exists()
            else ""
        )
        raise RunFileError(f"no run file at {path}{hint}")
    if path.is_dir():
        raise RunFileError(f"{path} is a folder, not a run file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise RunFileError(f"{path} is not a readable HDF5 file ({exc})") from exc
    try:
        with handle:
            _check_version(path, handle)
            meta = _decode(read_attrs(handle))
            complete = bool(meta.pop("complete", False))
            if not complete and not allow_incomplete:
                raise RunFileError(
                    f"{path} is an incomplete run ({meta.get('images_done', 0)} images done); "
                    "finish it with `inspector analyze ... --resume`"
                )
            if not complete and PENDING in meta:
                raise RunFileError(
                    f"{path} was stopped while writing the checkpoint of batch "
                    f"{meta[PENDING]}: its saved state mixes two checkpoints"
                )
            # An incomplete file may hold rows of a checkpoint that failed part way.
            rows = None if complete else int(meta.get("images_done", 0))
            samples = handle.get("samples")
            ids = read_tree(samples).get("ids", []) if samples is not None else []
            labels = samples["labels"][()] if samples is not None else np.zeros(0, np.int64)
            ids, labels = ids[:rows], labels[:rows]
            layers: dict[str, Layer] = {}
            if "layers" in handle:
                group = handle["layers"]
                order = json.loads(group.attrs.get("order", "[]"))
                # Layers missing from ``order`` (never written by this writer) come last.
                order += sorted(decode_name(k) for k in group if decode_name(k) not in order)
                for name in order:
                    if encode_name(name) in group:
                        layers[name] = _read_layer(name, group[encode_name(name)], rows)
            analysis = {}
            if "analysis" in handle:
                for key, group in handle["analysis"].items():
                    name = decode_name(key)
                    tree = read_tree(group)
                    tree["params"] = json.loads(tree.get("params", "{}"))
                    analysis[name] = tree
    except RunFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise RunFileError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    return Run(path, meta, complete, list(ids), labels, layers, analysis)
