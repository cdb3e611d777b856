"""Hostile content: markup in model and layer names stays text in every report; a run
file holds only numbers and strings and cannot make the reader run code or read other
files. (Markup in image and model names in the run report: test_report_data.py; no
network requests from a report: test_reports.py and test_reports_browser.py.)
"""

from __future__ import annotations

import base64
import pickle
import resource
import struct
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import h5py
import numpy as np
import pytest
import torch
from support import DATA, Page
from torch import nn

import hooks
from inspector import RunFileError, analyze
from inspector.present import write_compare_report
from inspector.store import Run, read_run

GOLDEN = DATA / "golden-run-1.0.h5"
EVIL_MODEL = "<script>alert('model')</script>Net"
EVIL_ATTENTION = "<script>alert('layer')</script>"  # a '/' too: one HDF5 name, not two
EVIL_CONV = "<img src=x onerror=alert(2)>"


def assert_inert(html: str, *literals: str) -> None:
    """No script element, no event handler, no <img src=x>, in the page and in its SVG
    figures (names end up in axis labels and legends); each literal shown as text."""
    page = Page(html)
    assert not [tag for tag, _ in page.tags if tag == "script"], "a script element"
    assert not [a for _, a in page.tags if any(k.startswith("on") for k in a)], "a handler"
    assert not [a for tag, a in page.tags if tag == "img" and a.get("src") == "x"]
    svgs = [a["src"] for tag, a in page.tags if tag == "img" and "svg" in (a.get("src") or "")]
    assert svgs, "no SVG figure"
    for src in svgs:
        header, _, data = (src or "").partition(",")
        assert header.endswith(";base64"), header
        for element in ElementTree.fromstring(base64.b64decode(data)).iter():
            assert not element.tag.endswith("script"), "a script element in a figure"
            assert not [k for k in element.attrib if k.startswith("on")], "a handler in a figure"
    text = "".join(page.text)
    for literal in literals:
        assert literal in text, f"{literal!r} is not shown as text"


class HostileNet(nn.Module):
    """Layers named by ``nn.ModuleDict`` keys that hold markup (attribute names cannot)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 32, stride=32)  # 224 px -> a 7x7 grid
        self.blocks = nn.ModuleDict(
            {
                EVIL_CONV: nn.Conv2d(16, 16, 1),
                EVIL_ATTENTION: nn.MultiheadAttention(16, 4, batch_first=True),
            }
        )
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.blocks[EVIL_CONV](self.embed(x)).relu().flatten(2).transpose(1, 2)
        out, _ = self.blocks[EVIL_ATTENTION](tokens, tokens, tokens, need_weights=False)
        return self.head(out.mean(1))


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    torch.manual_seed(0)
    model = type(EVIL_MODEL, (HostileNet,), {})().eval()
    geometry = hooks.TokenGeometry(kind="global", prefix=0, grid=(7, 7), stride=(32.0, 32.0))
    return analyze(
        model, "builtin", out=tmp_path_factory.mktemp("hostile"), limit=2, batch_size=2,
        progress=False, geometry={"blocks.*": geometry}, erf_images=2,
    )  # fmt: skip


def test_markup_layer_names_round_trip_as_one_name(hostile_run: Run) -> None:
    attention, conv = f"blocks.{EVIL_ATTENTION}", f"blocks.{EVIL_CONV}"
    assert list(hostile_run.layers) == ["embed", conv, attention]
    assert attention in hostile_run.analysis["attention_distance"]["layers"]
    assert conv in hostile_run.analysis["channel_redundancy"]["layers"]
    with h5py.File(hostile_run.path, "r") as handle:  # '/' percent-encoded, not a subgroup
        assert sorted(handle["layers"]) == sorted(["embed", conv, attention.replace("/", "%2F")])


def test_markup_in_layer_and_model_names_is_text_in_the_run_report(hostile_run: Run) -> None:
    html = hostile_run.path.with_suffix(".html").read_text(encoding="utf-8")
    assert_inert(html, EVIL_MODEL, f"blocks.{EVIL_ATTENTION}", f"blocks.{EVIL_CONV}")


def test_markup_in_layer_and_model_names_is_text_in_the_compare_report(
    hostile_run: Run, tmp_path: Path
) -> None:
    path = write_compare_report([hostile_run, read_run(GOLDEN)], tmp_path / "compare.html")
    html = path.read_text(encoding="utf-8")
    assert_inert(html, EVIL_MODEL)
    assert "http://" not in html and "https://" not in html


# -- the run file holds only plain data ----------------------------------------------------


def _plain(dtype: np.dtype) -> bool:
    if h5py.check_string_dtype(dtype) is not None:
        return True
    return dtype.fields is None and dtype.kind in "biuf"


@pytest.mark.parametrize("which", ["hostile", "golden"])
def test_every_dataset_and_attribute_is_a_number_bool_or_string(
    which: str, hostile_run: Run
) -> None:
    path = hostile_run.path if which == "hostile" else GOLDEN
    found: list[str] = []
    with h5py.File(path, "r") as handle:

        def check(name: str, node: Any) -> None:
            for key in node.attrs:
                dtype = node.attrs.get_id(key).dtype
                assert _plain(dtype), f"{name} attribute {key}: {dtype}"
            if isinstance(node, h5py.Dataset):
                assert _plain(node.dtype), f"{name}: {node.dtype}"
                assert not node.is_virtual and not node.external, name
            found.append(name)

        check("/", handle)
        handle.visititems(check)
    assert len(found) > 50


class AuditLog:
    """Audit events (PEP 578) raised while ``active``; one hook for the whole session,
    since audit hooks cannot be removed."""

    WATCHED = ("pickle.find_class", "exec", "marshal.loads", "os.system",
               "subprocess.Popen", "ctypes.dlopen", "socket.connect")  # fmt: skip

    def __init__(self) -> None:
        self.active = False
        self.events: list[str] = []
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event in self.WATCHED:
            self.events.append(event)


AUDIT = AuditLog()


def test_reading_a_run_file_never_unpickles_or_runs_code(
    hostile_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the reader unpickled something")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    AUDIT.events.clear()
    AUDIT.active = True
    try:
        runs = [read_run(hostile_run.path), read_run(GOLDEN)]
    finally:
        AUDIT.active = False
    assert AUDIT.events == []
    assert [len(run.sample_ids) for run in runs] == [2, 2]


# -- hostile structure: links, cycles, plugins ---------------------------------------------


def _copy_of_golden(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.h5"
    path.write_bytes(GOLDEN.read_bytes())
    return path


@pytest.mark.parametrize(
    ("plant", "found"),
    [
        (lambda f, o: f["analysis/attention_distance"].__setitem__(
            "x", h5py.ExternalLink(str(o), "/")), "ExternalLink"),
        (lambda f, o: f["analysis/attention_distance"].__setitem__(
            "x", h5py.SoftLink("/analysis")), "SoftLink"),
        (lambda f, o: f["analysis/attention_distance"].__setitem__("x", f["analysis"]),
         "linked twice"),
        (lambda f, o: f["analysis/attention_distance"].create_dataset(
            "x", data=np.zeros(4), external=[(str(o), 0, 32)]), "other files"),
        (lambda f, o: f["analysis/attention_distance"].create_dataset(
            "x", data=np.zeros(4, dtype=h5py.opaque_dtype("V8"))), "type"),
        (lambda f, o: f["analysis/attention_distance"].attrs.__setitem__(
            "x", f["layers"].ref), "type"),
    ],
    ids=["external-link", "soft-link-loop", "hard-link-cycle", "external-storage",
         "opaque-data", "object-reference"],
)  # fmt: skip
def test_hostile_structure_is_refused_before_reading(
    tmp_path: Path, plant: Any, found: str
) -> None:
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["secret"] = np.arange(8.0)
    path = _copy_of_golden(tmp_path)
    with h5py.File(path, "r+") as handle:
        plant(handle, other)
    with pytest.raises(RunFileError, match=found) as info:
        read_run(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    path = _copy_of_golden(tmp_path)
    with h5py.File(path, "r+") as handle:
        handle["analysis/attention_distance"].create_group("/".join(["g"] * 40))
    with pytest.raises(RunFileError, match="nested deeper than 16"):
        read_run(path)


def test_an_unknown_filter_is_refused_before_hdf5_looks_for_a_plugin(tmp_path: Path) -> None:
    path = _copy_of_golden(tmp_path)
    with h5py.File(path, "r+") as handle:
        group = handle["analysis/attention_distance"]
        group.create_dataset("x", data=np.zeros(64), chunks=(64,), fletcher32=True)
    read_run(path)  # a built-in filter is fine
    plist_filter = 32001  # Blosc's registered id: HDF5 would search HDF5_PLUGIN_PATH
    with h5py.File(path, "r+") as handle:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((8,))
        dcpl.set_filter(plist_filter, h5py.h5z.FLAG_OPTIONAL)
        space = h5py.h5s.create_simple((8,))
        h5py.h5d.create(handle["analysis"].id, b"y", h5py.h5t.NATIVE_DOUBLE, space, dcpl=dcpl)
    with pytest.raises(RunFileError, match="filter 32001"):
        read_run(path)


def test_a_dataset_claiming_more_memory_than_the_file_could_hold_is_refused(
    tmp_path: Path,
) -> None:
    """A chunked dataset whose chunks were never written reads as fill values: 80 GB from
    a 270 KB file, were it read."""
    path = _copy_of_golden(tmp_path)
    with h5py.File(path, "r+") as handle:
        group = handle["analysis/attention_distance"]
        group.create_dataset("x", shape=(10**10,), dtype="f8", chunks=(1 << 16,))
    with pytest.raises(
        RunFileError, match=r"claim .* bytes once read, more than the \d+ a file of"
    ) as info:
        read_run(path)
    assert "\n" not in str(info.value)


def test_a_string_claiming_gigabytes_is_refused_without_allocating_them(tmp_path: Path) -> None:
    """libhdf5 allocates the length a variable-length string declares before it finds the
    data missing (3 GB and 10 s for one attribute, before the reader capped its address
    space while reading)."""
    with h5py.File(GOLDEN, "r") as handle:
        fingerprint = handle.attrs["fingerprint"]
    length = len(fingerprint.encode() if isinstance(fingerprint, str) else fingerprint)
    data = bytearray(GOLDEN.read_bytes())
    # A stored variable-length string is (uint32 length, uint64 heap address, uint32 index).
    found = [data.find(struct.pack("<IQ", length, address)) for address in _heap_collections(data)]
    (at,) = [offset for offset in found if offset >= 0]
    data[at : at + 4] = struct.pack("<I", 0xF000_0000)  # 3.75 GiB
    path = tmp_path / "bomb.h5"
    path.write_bytes(bytes(data))
    before = resource.getrlimit(resource.RLIMIT_AS)
    started = time.perf_counter()
    with pytest.raises(RunFileError, match="corrupt") as info:
        read_run(path)
    assert time.perf_counter() - started < 5
    assert "\n" not in str(info.value)
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # the cap is put back


def _heap_collections(data: bytes) -> list[int]:
    """File offsets of HDF5 global heap collections (signature ``GCOL``)."""
    offsets, at = [], data.find(b"GCOL")
    while at >= 0:
        offsets.append(at)
        at = data.find(b"GCOL", at + 1)
    return offsets


HEAP_LOOP = DATA / "golden-run-1.0-heap-loop.bin"
"""Bytes 2751–4743 of a run file the fuzzer made (tests/robustness/test_fuzz.py): the golden file
with another part of itself copied over its first global heap collection, leaving a
free-space entry of size 0 there. libhdf5 walks a collection object by object, and
that entry makes the walk stand still: reading any string attribute never returned."""


def test_a_global_heap_that_would_hang_libhdf5_is_refused(tmp_path: Path) -> None:
    import subprocess

    golden = (DATA / "golden-run-1.0.h5").read_bytes()
    damaged = tmp_path / "heap-loop.h5"
    damaged.write_bytes(golden[:2751] + HEAP_LOOP.read_bytes() + golden[4744:])
    # In a child process: if the check broke, libhdf5's loop would hang this test run.
    script = (
        "import sys\nfrom inspector import RunFileError\nfrom inspector.store import read_run\n"
        "try:\n    read_run(sys.argv[1], allow_incomplete=True)\n"
        "except RunFileError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(damaged)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (
        f"{damaged} is corrupt (global heap at byte 2048: an object at byte 2856 whose "
        "size (0) makes libhdf5's walk stand still); libhdf5 would never finish reading it; "
        "use an undamaged copy"
    )


def test_global_heap_walk_accepts_real_files_and_finds_a_standing_walk(tmp_path: Path) -> None:
    from inspector.store._heap import global_heap_problem

    golden = (DATA / "golden-run-1.0.h5").read_bytes()
    assert golden.count(b"GCOL") == 3
    path = tmp_path / "run.h5"
    path.write_bytes(golden)
    assert global_heap_problem(path) is None
    # A collection whose first object is a free-space entry (index 0) of size 0.
    collection = b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", 4096)
    collection += struct.pack("<HHIQ", 0, 0, 0, 0) + bytes(4096 - 32)
    path.write_bytes(b"\x00" * 100 + collection + b"tail")
    assert global_heap_problem(path) == (
        "global heap at byte 100: an object at byte 116 whose size (0) makes libhdf5's "
        "walk stand still"
    )
    # The same with a real object first and the free space after it: the walk ends.
    collection = b"GCOL\x01\x00\x00\x00" + struct.pack("<Q", 4096)
    collection += struct.pack("<HHIQ", 1, 1, 0, 5) + b"hello\x00\x00\x00"
    collection += struct.pack("<HHIQ", 0, 0, 0, 4096 - 16 - 24) + bytes(4096 - 16 - 24 - 16)
    path.write_bytes(collection)
    assert global_heap_problem(path) is None
    path.write_bytes(b"")
    assert global_heap_problem(path) is None
