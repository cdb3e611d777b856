"""The one writer of run files: a temporary ``.partial`` file, checkpoints, atomic rename."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import RunFileError
from ._encode import tag, write_array, write_strings, write_tree
from ._schema import ACCUMULATOR_DIMS, ENCODING_TYPE, MAP_DIMS, SCHEMA_VERSION, TYPE

__all__ = ["RunWriter", "partial_path"]

# What must be equal for --resume to continue a partial file.
_FINGERPRINT = "fingerprint"


def _set(node: h5py.Group, attrs: Mapping[str, Any]) -> None:
    """Numbers and strings as attributes; anything else as JSON text."""
    for key, value in attrs.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str):
            value = str(value)  # str subclasses (torch's TorchVersion) confuse h5py
        plain = isinstance(value, (str, int, float, bool))
        node.attrs[key] = value if plain else json.dumps(value, default=str)


def _differences(stored: Any, wanted: str) -> str:
    """Which settings of two fingerprints differ, as ``key: old -> new`` text."""
    try:
        before, after = json.loads(stored), json.loads(wanted)
    except (TypeError, ValueError):
        return "model, images or options differ"
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "model, images or options differ"
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys)


def partial_path(path: Path) -> Path:
    """Where a run is written until it is complete."""
    return path.with_name(path.name + ".partial")


class RunWriter:
    """Writes one run file. Nothing is at ``path`` until :meth:`finish` renames it there.

    Args:
        path: Final location of the run file.
        meta: Root attributes (model, weights, versions, input size, options, ...).
        fingerprint: What a resumed run must match (model, images, options), as JSON.
        resume: Continue ``path.partial`` if it exists and matches ``fingerprint``.
    """

    def __init__(
        self, path: Path, meta: Mapping[str, Any], fingerprint: str, *, resume: bool = False
    ) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        if self.path.exists() and self.path.is_dir():
            raise RunFileError(f"output {self.path} is a directory; give a file path or --out DIR")
        if not self.path.parent.is_dir():
            raise RunFileError(
                f"output folder {self.path.parent} does not exist or is not a folder"
            )
        self.resumed = False
        if resume and self.partial.exists():
            self.file = self._open_partial(fingerprint)
            self.resumed = True
        else:
            if self.partial.exists():
                self.partial.unlink()
            try:
                self.file = h5py.File(self.partial, "w")
            except OSError as exc:
                raise RunFileError(f"cannot create {self.partial}: {exc}") from exc
            tag(self.file, "root")
            self.file.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.file.attrs[_FINGERPRINT] = fingerprint
            self.file.attrs["complete"] = False
            self.file.attrs["batches_done"] = 0
            self.file.attrs["images_done"] = 0
        _set(self.file, meta)
        self._maps_written: dict[str, int] = {}

    def _open_partial(self, fingerprint: str) -> h5py.File:
        try:
            handle = h5py.File(self.partial, "r+")
        except OSError as exc:
            raise RunFileError(
                f"cannot resume: {self.partial} is unreadable ({exc}); delete it and run again"
            ) from exc
        if handle.attrs.get(ENCODING_TYPE) != TYPE["root"]:
            handle.close()
            raise RunFileError(
                f"cannot resume: {self.partial} is not an inspector run file; delete it"
            )
        stored = handle.attrs.get(_FINGERPRINT)
        if stored != fingerprint:
            handle.close()
            raise RunFileError(
                f"cannot resume: {self.partial} was started with other settings "
                f"({_differences(stored, fingerprint)}); "
                "run with the same settings, or without --resume to start over"
            )
        return handle

    @property
    def batches_done(self) -> int:
        return int(self.file.attrs["batches_done"])

    @property
    def images_done(self) -> int:
        return int(self.file.attrs["images_done"])

    def checkpoint(
        self,
        layers: Mapping[str, Mapping[str, Any]],
        ids: list[str],
        labels: np.ndarray,
        *,
        batches_done: int,
        order: list[str],
    ) -> None:
        """Store the capture state so far; a crash after this loses no earlier batch.

        Args:
            layers: Per layer path: ``attrs`` (kind, geometry, ...), ``summaries``
                (``[sample, head]`` arrays), ``maps`` (float16 first-K maps),
                ``moments`` and ``groups`` (accumulator states).
            ids: Sample ids of every image done so far.
            labels: Their labels (``-1`` when unknown).
            batches_done: Batches these cover.
            order: Layer paths in model order.
        """
        samples = self.file.require_group("samples")
        tag(samples, "samples")
        write_strings(samples, "ids", ids, "sample")
        write_array(samples, "labels", np.asarray(labels, np.int64), ("sample",), resizable=True)
        root = self.file.require_group("layers")
        tag(root, "layers")
        root.attrs["order"] = json.dumps(order)
        for name, data in layers.items():
            group = root.require_group(name)
            attrs = data["attrs"]
            tag(group, attrs["kind"])
            _set(group, attrs)
            for key, array in data.get("summaries", {}).items():
                summaries = group.require_group("summaries")
                tag(summaries, "summaries")
                dims = ("sample", "head")[: array.ndim] + ("unit",) * max(0, array.ndim - 2)
                write_array(summaries, key, array, dims, resizable=True)
            maps = data.get("maps")
            if maps is not None and maps.size and self._maps_written.get(name) != len(maps):
                dims = MAP_DIMS[maps.ndim]
                write_array(
                    group,
                    "maps",
                    maps,
                    dims,
                    kind="maps",
                    compress=True,
                    resizable=True,
                    chunk_axes=2,
                )
                self._maps_written[name] = len(maps)
            for key in ("moments", "groups"):
                state = data.get(key)
                if state is None:
                    continue
                node = group.require_group(key)
                tag(node, "moments" if key == "moments" else "group-sums")
                for field, array in state.items():
                    array = np.asarray(array)
                    write_array(node, field, array, ACCUMULATOR_DIMS.get((key, field, array.ndim)))
        self.file.attrs["batches_done"] = batches_done
        self.file.attrs["images_done"] = len(ids)
        self.file.flush()

    def write_analysis(
        self, name: str, tree: Mapping[str, Any], params: Mapping[str, Any], version: str
    ) -> None:
        analysis = self.file.require_group("analysis")
        tag(analysis, "analysis")
        if name in analysis:
            del analysis[name]
        group = analysis.create_group(name)
        tag(group, "result")
        group.attrs["params"] = json.dumps(params)
        group.attrs["analyzer_version"] = version
        write_tree(group, tree)
        self.file.flush()

    def set_attrs(self, **attrs: Any) -> None:
        _set(self.file, attrs)

    def finish(self) -> Path:
        """Mark the run complete and move it to its final path (atomic rename)."""
        self.file.attrs["complete"] = True
        self.file.attrs["schema"] = SCHEMA_VERSION
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        """Close without completing: the ``.partial`` file stays for ``--resume``."""
        if self.file.id.valid:
            self.file.flush()
            self.file.close()
