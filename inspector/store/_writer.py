"""The one writer of run files: a temporary ``.partial`` file, checkpoints, atomic rename."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import RunFileError
from ._encode import encode_name, tag, write_array, write_strings, write_tree
from ._schema import ACCUMULATOR_DIMS, ENCODING_TYPE, MAP_DIMS, PENDING, SCHEMA_VERSION, TYPE

__all__ = ["RunWriter", "os_reason", "partial_path"]

# What must be equal for --resume to continue a partial file.
_FINGERPRINT = "fingerprint"


def os_reason(exc: OSError) -> str:
    """Why an operating-system write failed, in a few words (h5py buries the errno in
    a long message: ``... errno = 28, error message = 'No space left on device' ...``)."""
    text = str(exc)
    found = re.search(r"errno = (\d+), error message = '([^']*)'", text)
    code = exc.errno if exc.errno is not None else int(found.group(1)) if found else None
    message = found.group(2) if found else (exc.strerror or text)
    if code == errno.ENOSPC or "No space left" in text:
        return "disk full (no space left on device)"
    return message.splitlines()[0] if message else type(exc).__name__


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

        Two phases keep the previous checkpoint usable for as long as possible. First
        the per-image rows (ids, labels, summaries, first-K maps) are appended and
        flushed: the reader reads only the first ``images_done`` rows of an incomplete
        file, so rows past it are harmless, and a failure here (a full disk: this is
        where the file grows) leaves the previous checkpoint intact. Then the
        ``checkpoint_pending`` attribute is set and flushed, the accumulators and layer
        attributes are overwritten in place (no new space needed), the counters are
        updated and the attribute is deleted. A process stopped in between leaves the
        attribute behind, and the reader refuses to resume from such a file instead of
        mixing two checkpoints.

        Args:
            layers: Per layer path: ``attrs`` (kind, geometry, ...), ``summaries``
                (``[sample, head]`` arrays), ``maps`` (float16 first-K maps),
                ``moments`` and ``groups`` (accumulator states).
            ids: Sample ids of every image done so far.
            labels: Their labels (``-1`` when unknown).
            batches_done: Batches these cover.
            order: Layer paths in model order.

        Raises:
            RunFileError: Writing failed (disk full, I/O error); the message says
                whether ``--resume`` can continue from the file.
        """
        try:
            self._append_rows(layers, ids, labels)
            self.file.flush()
        except OSError as exc:
            raise self._failure(exc, resumable=True) from exc
        try:
            self.file.attrs[PENDING] = batches_done
            self.file.flush()
        except OSError as exc:
            raise self._failure(exc, resumable=True) from exc
        try:
            self._overwrite_state(layers, order)
            self.file.attrs["batches_done"] = batches_done
            self.file.attrs["images_done"] = len(ids)
            del self.file.attrs[PENDING]
            self.file.flush()
        except OSError as exc:
            raise self._failure(exc, resumable=False) from exc

    def _append_rows(
        self, layers: Mapping[str, Mapping[str, Any]], ids: list[str], labels: np.ndarray
    ) -> None:
        """Phase 1: per-image rows and new groups (everything that may need new space)."""
        samples = self.file.require_group("samples")
        tag(samples, "samples")
        write_strings(samples, "ids", ids, "sample")
        write_array(samples, "labels", np.asarray(labels, np.int64), ("sample",), resizable=True)
        root = self.file.require_group("layers")
        tag(root, "layers")
        for name, data in layers.items():
            group = self._layer_group(root, name, data["attrs"]["kind"])
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

    def _overwrite_state(self, layers: Mapping[str, Mapping[str, Any]], order: list[str]) -> None:
        """Phase 2: accumulators and layer attributes, in place once they exist."""
        root = self.file["layers"]
        root.attrs["order"] = json.dumps(order)
        for name, data in layers.items():
            group = self._layer_group(root, name, data["attrs"]["kind"])
            _set(group, data["attrs"])
            for key in ("moments", "groups"):
                state = data.get(key)
                if state is None:
                    continue
                node = group.require_group(key)
                tag(node, "moments" if key == "moments" else "group-sums")
                for field, array in state.items():
                    array = np.asarray(array)
                    write_array(node, field, array, ACCUMULATOR_DIMS.get((key, field, array.ndim)))

    @staticmethod
    def _layer_group(root: h5py.Group, name: str, kind: str) -> h5py.Group:
        key = encode_name(name)
        if key in root:
            return root[key]
        group = root.create_group(key)
        tag(group, kind)
        group.attrs["kind"] = kind
        return group

    def _failure(self, exc: OSError, *, resumable: bool) -> RunFileError:
        """A one-line error for a failed write: what, why, and whether --resume works."""
        reason = os_reason(exc)
        if resumable:
            how = (
                "the work checkpointed so far is kept there; free some space and run the "
                "same command with --resume to continue"
            )
        else:
            how = (
                "the checkpoint being written was cut short, so the file cannot be resumed; "
                "free some space and run the command again without --resume"
            )
        return RunFileError(f"writing {self.partial} failed: {reason}; {how}")

    def write_analysis(
        self, name: str, tree: Mapping[str, Any], params: Mapping[str, Any], version: str
    ) -> None:
        """Store one analyzer's result (replacing an earlier one of the same name).

        Raises:
            RunFileError: Writing failed; the capture state is intact, so ``--resume``
                continues (it reruns the analyses).
        """
        try:
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
        except OSError as exc:
            raise self._failure(exc, resumable=True) from exc

    def set_attrs(self, **attrs: Any) -> None:
        _set(self.file, attrs)

    def finish(self) -> Path:
        """Mark the run complete and move it to its final path (atomic rename)."""
        try:
            self.file.attrs["complete"] = True
            self.file.attrs["schema"] = SCHEMA_VERSION
            self.file.close()
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise self._failure(exc, resumable=True) from exc
        return self.path

    def close(self) -> None:
        """Close without completing: the ``.partial`` file stays for ``--resume``.

        Called while another error propagates, so a second failure here (the disk is
        still full) is not raised over the first: what is on disk stays as the last
        successful flush left it, and the reader judges it.
        """
        if self.file.id.valid:
            # The error being handled already says that writing failed.
            with contextlib.suppress(OSError):
                self.file.flush()
            with contextlib.suppress(OSError):
                self.file.close()
