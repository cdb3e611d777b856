"""The one writer of run files: a temporary ``.partial`` file, checkpoints, atomic renames."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import RunFileError
from ._checksum import seal
from ._encode import checksum_options, encode_name, tag, write_array, write_strings, write_tree
from ._lock import images_kept
from ._open import open_untrusted
from ._schema import ACCUMULATOR_DIMS, ENCODING_TYPE, MAP_DIMS, SCHEMA_VERSION, TYPE

__all__ = ["RunWriter", "os_reason", "partial_path", "scratch_path"]

# What must be equal for --resume to continue a partial file.
_FINGERPRINT = "fingerprint"


def os_reason(exc: BaseException) -> str:
    """Why an operating-system write failed, in a few words (h5py buries the errno in
    a long message: ``... errno = 28, error message = 'No space left on device' ...``)."""
    text = str(exc)
    found = re.search(r"errno = (\d+), error message = '([^']*)'", text)
    code = getattr(exc, "errno", None) or (int(found.group(1)) if found else None)
    message = found.group(2) if found else (getattr(exc, "strerror", None) or text)
    if code == errno.ENOSPC or "No space left" in text:
        return "disk full (no space left on device)"
    if code:  # libhdf5 words the same errno differently at write and at close
        return os.strerror(code)
    return message.splitlines()[0] if message else type(exc).__name__


def _load_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_trim()


def release_freed_memory() -> None:
    """Give the memory freed after a checkpoint back to the operating system.

    glibc raises its mmap threshold after large blocks are freed, so the next copies of
    wide covariances land on heaps that keep the freed pages: without this, peak memory
    grew by a fifth between 64 and 512 images of ``deit_small`` (the longer run writes
    checkpoints). ``malloc_trim`` is glibc's; elsewhere this does nothing.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


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


MAX_STORED_COVARIANCE = 512
"""Layers wider than this keep only the diagonal of their co-moment, and no CKA sums, in
a complete run file: their analyses are stored, and a 1536-wide float64 co-moment alone
is 19 MB per layer. The ``.partial`` file keeps everything (resume needs it)."""


def _drop_image_groups(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A complete run keeps the closed image groups' small pieces only: a group still
    open at the end (images skipped) holds full ``p × p`` sums and feeds no interval."""
    state = data.get("image_groups")
    if state is None or "open" not in state:
        return data
    kept = {key: value for key, value in state.items() if not key.startswith("open")}
    return {**data, "image_groups": kept}


def _compacted_note(units: int) -> str:
    return (
        f"{units} units > {MAX_STORED_COVARIANCE}: co-moment diagonal only, "
        "no CKA sums (analyses computed from the full state)"
    )


def _compact(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """One layer's in-memory capture state as :func:`_copy_compact` stores it."""
    data = _drop_image_groups(data)
    moments = data.get("moments")
    comoment = None if moments is None else np.asarray(moments["comoment"])
    if comoment is None or comoment.ndim != 2 or comoment.shape[0] <= MAX_STORED_COVARIANCE:
        return data
    return {
        **{key: value for key, value in data.items() if key != "groups"},
        "attrs": {**data["attrs"], "compacted": _compacted_note(comoment.shape[0])},
        "moments": {**moments, "comoment": np.diagonal(comoment).copy()},
    }


def _drop_open_groups(group: h5py.Group) -> None:
    sums = group.get("image_groups")
    if sums is not None:
        for name in [n for n in sums if n.startswith("open")]:
            del sums[name]


def _copy_compact(layers: h5py.Group, handle: h5py.File) -> None:
    """Copy ``layers`` into ``handle``, compacting the accumulators of wide layers."""
    target = handle.create_group("layers")
    for key, value in layers.attrs.items():
        target.attrs[key] = value
    for key, group in layers.items():
        comoment = group.get("moments/comoment")
        wide = comoment is not None and comoment.ndim == 2
        wide = wide and comoment.shape[0] > MAX_STORED_COVARIANCE
        if not wide:
            layers.copy(group, target, name=key)
            _drop_open_groups(target[key])
            continue
        copy = target.create_group(key)
        for attr, value in group.attrs.items():
            copy.attrs[attr] = value
        copy.attrs["compacted"] = _compacted_note(comoment.shape[0])
        for child in group:
            if child == "groups":
                continue
            if child != "moments":
                group.copy(group[child], copy, name=child)
                continue
            moments = copy.create_group("moments")
            for attr, value in group["moments"].attrs.items():
                moments.attrs[attr] = value
            for name, dataset in group["moments"].items():
                data = np.diagonal(dataset[()]).copy() if name == "comoment" else dataset[()]
                created = moments.create_dataset(name, data=data, **checksum_options(data))
                for attr, value in dataset.attrs.items():
                    created.attrs[attr] = value
                if name == "comoment":
                    created.dims[0].label = "feature"
        _drop_open_groups(copy)


def partial_path(path: Path) -> Path:
    """Where a run is written until it is complete."""
    return path.with_name(path.name + ".partial")


def scratch_path(path: Path) -> Path:
    """Where the next version of the run is written before it replaces the ``.partial``."""
    return path.with_name(path.name + ".tmp")


def _fsync(path: Path) -> None:
    """Push a file (or a folder's entries) to the disk, so a rename survives a power cut.
    A file is opened without following a symbolic link."""
    if path.is_dir():
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    else:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _is_write_error(exc: BaseException) -> bool:
    """h5py reports failed writes as ``OSError`` or as a plain ``RuntimeError`` (a flush
    that fails part way: "Unable to synchronously flush file (file write failed ...)")."""
    return isinstance(exc, OSError) or type(exc) is RuntimeError


class RunWriter:
    """Writes one run file. Nothing is at ``path`` until :meth:`finish` renames it there.

    A written file is never modified in place: HDF5 files are not crash-safe while open
    for writing (a process stopped, or a disk that fills, in the middle of a write can
    leave a file that no longer opens). Every checkpoint writes the whole capture state
    to ``path.tmp`` and renames it onto ``path.partial`` (after ``fsync``), and
    :meth:`finish` copies the ``.partial`` into ``path.tmp``, adds the analyses and
    renames it onto ``path``. Whatever stops the process, the ``.partial`` file holds
    the last completed checkpoint and any file at ``path`` is complete. Unchanged
    attention maps and the capture state are copied between files without decoding
    (``H5Ocopy``). The cost: twice the file's size on disk while a checkpoint is written.

    Args:
        path: Final location of the run file.
        meta: Root attributes (model, weights, versions, input size, options, ...).
        fingerprint: What a resumed run must match (model, images, options), as JSON.
        resume: Continue ``path.partial`` if it exists and matches ``fingerprint``.

    Raises:
        RunFileError: The output cannot be created, or a resume does not match.
    """

    def __init__(
        self, path: Path, meta: Mapping[str, Any], fingerprint: str, *, resume: bool = False
    ) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.scratch = scratch_path(self.path)
        if self.path.exists() and self.path.is_dir():
            raise RunFileError(f"output {self.path} is a directory; give a file path or --out DIR")
        if not self.path.parent.is_dir():
            raise RunFileError(
                f"output folder {self.path.parent} does not exist or is not a folder"
            )
        self._meta = dict(meta)
        self._extra: dict[str, Any] = {}
        self._analysis: dict[str, tuple[Mapping[str, Any], Mapping[str, Any], str]] = {}
        self._staged: tuple[Any, ...] | None = None
        self.resumed = False
        try:
            self.scratch.unlink(missing_ok=True)  # left by a process stopped mid-write
        except OSError as exc:
            raise RunFileError(f"cannot create {self.partial}: {exc}") from exc
        if resume and self.partial.exists():
            self._root = self._resume_root(fingerprint)
            self.resumed = True
            return
        self._root = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            _FINGERPRINT: fingerprint,
            "batches_done": 0,
            "images_done": 0,
        }
        try:
            self.partial.unlink(missing_ok=True)
            self._replace(self.partial, self._write_root)
        except (OSError, RunFileError) as exc:
            cause = exc.__cause__ if isinstance(exc, RunFileError) else exc
            reason = os_reason(cause) if cause is not None else str(exc)
            raise RunFileError(f"cannot create {self.partial}: {reason}") from exc

    def _resume_root(self, fingerprint: str) -> dict[str, Any]:
        try:
            handle = open_untrusted(self.partial)
        except (OSError, RunFileError) as exc:
            raise RunFileError(
                f"cannot resume: {self.partial} is unreadable ({exc}); delete it and run again"
            ) from exc
        with handle:
            if handle.attrs.get(ENCODING_TYPE) != TYPE["root"]:
                raise RunFileError(
                    f"cannot resume: {self.partial} is not an inspector run file; delete it"
                )
            stored = handle.attrs.get(_FINGERPRINT)
            if stored != fingerprint:
                raise RunFileError(
                    f"cannot resume: {self.partial} was started with other settings "
                    f"({_differences(stored, fingerprint)}); "
                    "run with the same settings, or without --resume to start over"
                )
            keys = ("created", _FINGERPRINT, "batches_done", "images_done")
            return {key: handle.attrs[key] for key in keys if key in handle.attrs}

    @property
    def batches_done(self) -> int:
        return int(self._root["batches_done"])

    @property
    def images_done(self) -> int:
        return int(self._root["images_done"])

    # -- writing a new version of the file ---------------------------------------------------

    def _replace(self, target: Path, fill: Callable[[h5py.File], None]) -> None:
        """Write ``fill`` into the scratch file, then rename it onto ``target``.

        Raises:
            RunFileError: Writing failed; ``target`` is unchanged and no scratch is left.
        """
        try:
            # A scratch file left by a stopped process, or anything planted there (a
            # symbolic link to a victim file), is removed, never followed: the name is
            # unlinked and the file created exclusively (O_CREAT | O_EXCL).
            self.scratch.unlink(missing_ok=True)
            # No chunk cache: every chunk goes to the file when written, so a failed
            # write fails there, not later when a dataset is closed or collected (a
            # failed write at close leaves libhdf5 holding buffers it cannot write).
            handle = h5py.File(self.scratch, "x", rdcc_nbytes=0)
        except (OSError, FileExistsError) as exc:
            raise self._failure(exc) from exc
        try:
            fill(handle)
            seal(handle)  # the checksum manifest, last
            handle.flush()  # fail here, while the handle can still be discarded cleanly
            handle.close()
            _fsync(self.scratch)
            os.replace(self.scratch, target)
        except BaseException as exc:
            # The groups and datasets that ``fill`` opened live on in the traceback's
            # frames; closed later by the garbage collector, after the file, they print
            # destructor tracebacks (or crash libhdf5). Drop them first, then the file.
            traceback.clear_frames(exc.__traceback__)
            self._discard(handle)
            if _is_write_error(exc):
                raise self._failure(exc) from exc
            raise  # Ctrl-C twice, or a bug: the previous version stays
        with contextlib.suppress(OSError):  # best effort: not every file system allows it
            _fsync(target.parent)

    def _discard(self, handle: h5py.File) -> None:
        """Drop a half-written scratch file: free its space first, so that HDF5 can
        close it (closing flushes, and would fail again on a full disk)."""
        with contextlib.suppress(OSError):
            os.truncate(self.scratch, 0)
        if handle.id.valid:
            with contextlib.suppress(OSError, RuntimeError):
                handle.close()
        with contextlib.suppress(OSError):
            self.scratch.unlink(missing_ok=True)

    def _failure(self, exc: BaseException) -> RunFileError:
        """A one-line error for a failed write: what, why, what the ``.partial`` file
        really holds (counted in the file, not taken from memory: the images done since
        the last checkpoint are not in it) and how to go on."""
        held = images_kept(self.partial) if self.partial.is_file() else 0
        if held:
            kept = (
                f"the run so far ({held} images) is kept in {self.partial}; free some "
                "space and run the same command with --resume to continue"
            )
        else:
            kept = (
                "no image was kept (the run had not reached its first checkpoint); free "
                "some space and run the same command again"
            )
        return RunFileError(f"cannot write {self.scratch}: {os_reason(exc)}; {kept}")

    def _write_root(self, handle: h5py.File, **extra: Any) -> None:
        tag(handle, "root")
        _set(handle, self._meta)
        _set(handle, self._extra)
        _set(handle, {**self._root, "complete": False, **extra})

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

        The state goes to a new file that replaces the ``.partial`` file once complete;
        a failure or a stop before that leaves the previous checkpoint as it was.

        Args:
            layers: Per layer path: ``attrs`` (kind, geometry, ...), ``summaries``
                (``[sample, head]`` arrays), ``maps`` (float16 first-K maps),
                ``moments`` and ``groups`` (accumulator states).
            ids: Sample ids of every image done so far.
            labels: Their labels (``-1`` when unknown).
            batches_done: Batches these cover.
            order: Layer paths in model order.

        Raises:
            RunFileError: Writing failed (disk full, I/O error); the ``.partial`` file
                still holds the previous checkpoint, and the message says so.
        """
        counters = {"batches_done": batches_done, "images_done": len(ids)}

        def fill(handle: h5py.File) -> None:
            self._write_root(handle, **counters)
            self._write_capture(handle, layers, ids, labels, order)

        self._replace(self.partial, fill)
        self._root |= counters
        self._staged = None
        release_freed_memory()

    def stage(
        self,
        layers: Mapping[str, Mapping[str, Any]],
        ids: list[str],
        labels: np.ndarray,
        *,
        batches_done: int,
        order: list[str],
    ) -> None:
        """Keep the final capture state for :meth:`finish` without a checkpoint.

        The ``.partial`` file keeps the last checkpoint: a crash before :meth:`finish`
        loses the batches after it, as a crash during the pass would. Arguments as for
        :meth:`checkpoint`.
        """
        self._staged = (layers, ids, labels, order)
        self._root |= {"batches_done": batches_done, "images_done": len(ids)}

    def _write_capture(
        self,
        handle: h5py.File,
        layers: Mapping[str, Mapping[str, Any]],
        ids: list[str],
        labels: np.ndarray,
        order: list[str],
    ) -> None:
        """``samples/`` and ``layers/`` of a capture state (maps of the first images are
        copied from the last checkpoint when it holds them already)."""
        samples = handle.create_group("samples")
        tag(samples, "samples")
        write_strings(samples, "ids", ids, "sample")
        labels_array = np.asarray(labels, np.int64)
        write_array(samples, "labels", labels_array, ("sample",), resizable=True)
        root = handle.create_group("layers")
        tag(root, "layers")
        root.attrs["order"] = json.dumps(order)
        with h5py.File(self.partial, "r") as previous:
            for name, data in layers.items():
                self._write_layer(root, name, data, previous)

    def _write_layer(
        self, root: h5py.Group, name: str, data: Mapping[str, Any], previous: h5py.File
    ) -> None:
        group = root.create_group(encode_name(name))
        tag(group, data["attrs"]["kind"])
        _set(group, data["attrs"])
        for key, array in data.get("summaries", {}).items():
            summaries = group.require_group("summaries")
            tag(summaries, "summaries")
            dims = ("sample", "head")[: array.ndim] + ("unit",) * max(0, array.ndim - 2)
            write_array(summaries, key, array, dims, resizable=True)
        maps = data.get("maps")
        if maps is not None and maps.size:
            old = previous.get(f"layers/{encode_name(name)}/maps")
            # The maps of the first K images never change once written: copy the
            # compressed chunks instead of compressing them again.
            if isinstance(old, h5py.Dataset) and old.shape == maps.shape:
                previous.copy(old, group, name="maps")
            else:
                dims = MAP_DIMS[maps.ndim]
                write_array(
                    group, "maps", maps, dims, kind="maps", compress=True, resizable=True,
                    chunk_axes=2,
                )  # fmt: skip
        for key in ("moments", "groups", "image_groups"):
            state = data.get(key)
            if state is None:
                continue
            node = group.create_group(key)
            tag(node, {"moments": "moments", "groups": "group-sums"}.get(key, "image-group-sums"))
            for field, array in state.items():
                array = np.asarray(array)
                write_array(node, field, array, ACCUMULATOR_DIMS.get((key, field, array.ndim)))

    def write_analysis(
        self, name: str, tree: Mapping[str, Any], params: Mapping[str, Any], version: str
    ) -> None:
        """Keep one analyzer's result for :meth:`finish` (replacing one of the same name)."""
        self._analysis[name] = (tree, params, version)

    def set_attrs(self, **attrs: Any) -> None:
        """Root attributes written by the next checkpoint or :meth:`finish`."""
        self._extra |= attrs

    def finish(self) -> Path:
        """Write the complete run (capture state, analyses) and move it to its final path.

        Raises:
            RunFileError: Writing failed; the ``.partial`` file is unchanged, so
                ``--resume`` continues (it reruns the analyses).
        """

        def fill(handle: h5py.File) -> None:
            self._write_root(handle, complete=True, schema=SCHEMA_VERSION)
            if self._staged is not None:
                layers, ids, labels, order = self._staged
                compact = {name: _compact(data) for name, data in layers.items()}
                self._write_capture(handle, compact, ids, labels, order)
            else:
                with h5py.File(self.partial, "r") as previous:
                    if "samples" in previous:
                        previous.copy(previous["samples"], handle, name="samples")
                    if "layers" in previous:
                        _copy_compact(previous["layers"], handle)
            if self._analysis:
                analysis = handle.create_group("analysis")
                tag(analysis, "analysis")
            for name, (tree, params, version) in self._analysis.items():
                group = analysis.create_group(encode_name(name))
                tag(group, "result")
                group.attrs["params"] = json.dumps(params)
                group.attrs["analyzer_version"] = version
                write_tree(group, tree)

        self._replace(self.path, fill)
        self._staged = None  # views of the capture's sums: let them go with it
        with contextlib.suppress(OSError):
            self.partial.unlink()
        return self.path

    def close(self) -> None:
        """Stop without completing: the ``.partial`` file stays for ``--resume``.

        Nothing is open between checkpoints; this only removes a scratch file that a
        stopped write may have left.
        """
        with contextlib.suppress(OSError):
            self.scratch.unlink(missing_ok=True)
