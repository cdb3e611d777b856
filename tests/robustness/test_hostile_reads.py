"""Hostile run files, issue 19: libhdf5's own arithmetic on the global heap, a read
bounded in time and memory by the file's real size, no plugin library loaded, content
checked against the schema before anyone uses it, and what a report's CSV and the
terminal show. Reads that could hang run in a child process with a timeout.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from support import DATA, run_child

import reports
from inspector import RunFileError
from inspector.cli import main
from inspector.store import _reader, read_run
from inspector.store._checksum import seal
from inspector.store._heap import _step, global_heap_problem
from inspector.store._open import ReadTimeout, deadline

GOLDEN = DATA / "golden-run-1.1.h5"
ATT = "layers/blocks.0.attn"
CH = "layers/patch_embed.proj"

READ = (
    "import sys\nfrom inspector import RunFileError\nfrom inspector.store import read_run\n"
    "try:\n    read_run(sys.argv[1], allow_incomplete=True)\n    print('read')\n"
    "except RunFileError as exc:\n    print(exc)\n"
)


def _child(code: str, *args: str, timeout: float = 120, **kwargs: Any) -> Any:
    return run_child(code, *args, timeout=timeout, **kwargs)


# -- the global heap in size_t arithmetic -------------------------------------------------


def test_heap_steps_are_computed_modulo_2_to_the_64() -> None:
    assert _step(1, 5) == 16 + 8  # header + the size aligned to 8
    assert _step(0, 4040) == 4040  # free space: its size as it is
    assert _step(1, 2**64 - 16) == 0  # 16 + (2**64 - 16): wraps to a walk that stands
    assert _step(1, 2**64 - 32) == 2**64 - 16  # a pointer 16 bytes back
    assert _step(1, 2**64 - 8) == 8  # wraps forward by 8 only
    assert _step(0, 2**64 - 1) == 2**64 - 1


def _golden_with_first_object_size(tmp_path: Path, size: int) -> Path:
    data = bytearray(GOLDEN.read_bytes())
    start = data.find(b"GCOL")
    struct.pack_into("<Q", data, start + 16 + 8, size)  # the first object's size field
    path = tmp_path / "wrapped.h5"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("size", "why"),
    [
        (2**64 - 16, "makes libhdf5's walk stand still"),
        (2**64 - 32, "leads outside its collection"),
        (1 << 40, "leads outside its collection"),
    ],
    ids=["wraps-to-0", "wraps-back", "past-the-end"],
)
def test_a_heap_object_whose_size_wraps_is_refused_before_libhdf5_spins(
    tmp_path: Path, size: int, why: str
) -> None:
    """libhdf5 (2.0 here) spins forever on the wrap-to-0 file; the guard of before
    (Python integers: 16 + 2**64 - 16 is a step past the end) let it through."""
    path = _golden_with_first_object_size(tmp_path, size)
    done = _child(READ, str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (
        f"{path} is corrupt (global heap at byte 2048: an object at byte 2064 whose size "
        f"({size}) {why}); libhdf5 would never finish reading it; use an undamaged copy"
    )
    assert global_heap_problem(GOLDEN) is None


# -- time and memory proportional to the file --------------------------------------------


def test_a_one_megabyte_file_may_take_neither_a_gigabyte_nor_ten_seconds() -> None:
    megabyte = 1 << 20
    assert _reader.memory_budget(megabyte) + _reader._HEADROOM < 1 << 30
    assert _reader.time_budget(megabyte) < 10
    assert _reader.memory_budget(100 * megabyte) > 100 * megabyte  # room for real files


def test_a_gzip_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    path = tmp_path / "bomb.h5"
    shutil.copyfile(GOLDEN, path)
    with h5py.File(path, "r+") as handle:
        bomb = handle["analysis"].create_dataset(
            "bomb", shape=(1 << 25,), dtype="f8", chunks=(1 << 20,), compression="gzip"
        )
        for start in range(0, 1 << 25, 1 << 20):
            bomb[start : start + (1 << 20)] = 0.0
    assert path.stat().st_size < 2 << 20  # 256 MiB of zeros in under 2 MB
    started = time.monotonic()
    with pytest.raises(RunFileError, match=r"claim \d+ bytes once read, more than the") as info:
        read_run(path)
    assert time.monotonic() - started < 5
    assert "\n" not in str(info.value)


def test_a_read_past_its_time_limit_is_one_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reader, "time_budget", lambda size: 0.02)
    real = _reader._check_structure

    def slow(root: h5py.File) -> int:
        time.sleep(0.5)  # stands for libhdf5 working on a hostile file
        return real(root)

    monkeypatch.setattr(_reader, "_check_structure", slow)
    with pytest.raises(RunFileError) as info:
        read_run(GOLDEN)
    assert str(info.value).startswith(
        f"{GOLDEN} is corrupt or hostile: reading took longer than 0 s, the limit for a file"
    )


def test_the_deadline_is_scoped() -> None:
    import signal

    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(ReadTimeout), deadline(0.05):
        end = time.monotonic() + 5
        while time.monotonic() < end:
            pass
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with deadline(5):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


# -- HDF5_PLUGIN_PATH -------------------------------------------------------------------


def test_no_library_in_hdf5_plugin_path_is_loaded_while_reading(tmp_path: Path) -> None:
    """libhdf5 2.x loads every library of HDF5_PLUGIN_PATH when it fails to open a file
    (looking for a VOL connector). The child shows it does for plain h5py, and that
    ``read_run`` does not let it."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler to build the planted library")
    source = tmp_path / "planted.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        "__attribute__((constructor)) static void hit(void) {\n"
        '  FILE *f = fopen(getenv("PLANTED_MARKER"), "a");\n'
        '  if (f) { fputs("loaded\\n", f); fclose(f); }\n}\n'
    )
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(plugins / "libplanted.so"), str(source)], check=True
    )
    bad = tmp_path / "not-hdf5.h5"
    bad.write_text("not an HDF5 file")
    marker = tmp_path / "marker"
    env = {"PATH": "/usr/bin:/bin", "HDF5_PLUGIN_PATH": str(plugins), "PLANTED_MARKER": str(marker)}
    code = (
        "import sys\nfrom pathlib import Path\nimport h5py\n"
        "from inspector import RunFileError\nfrom inspector.store import read_run\n"
        "marker = Path(sys.argv[2])\n"
        "for _ in range(2):\n"
        "    try:\n        read_run(sys.argv[1])\n    except RunFileError:\n        pass\n"
        "print('guarded:', marker.exists())\n"
        "try:\n    h5py.File(sys.argv[1], 'r')\nexcept OSError:\n    pass\n"
        "print('plain h5py:', marker.exists())\n"
        "print('path restored:', h5py.h5pl.size() == 1)\n"
    )
    done = _child(code, str(bad), str(marker), env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:3] == [
        "guarded: False",
        "plain h5py: True",  # the threat is real: without the guard it is loaded
        "path restored: True",
    ]


# -- content checked against the schema ---------------------------------------------------


def _replace(group: h5py.Group, name: str, data: Any) -> None:
    attrs = dict(group[name].attrs) if name in group else {}
    if name in group:
        del group[name]
    created = group.create_dataset(name, data=data)
    for key, value in attrs.items():
        created.attrs[key] = value


def _sealed(tmp_path: Path, edit: Callable[[h5py.File], None]) -> Path:
    """The golden file edited and re-sealed: its checksums match, only the reader's
    schema checks can refuse it."""
    path = tmp_path / "edited.h5"
    shutil.copyfile(GOLDEN, path)
    with h5py.File(path, "r+") as handle:
        edit(handle)
        seal(handle)
    return path


def _image_groups(
    layer: h5py.Group, layout: list[int], closed: list[int], pieces: int | None = None
) -> None:
    """An ``image_groups`` state (CKA pieces of closed image groups) with ``pieces``
    entries per piece (default: one per closed group)."""
    group = layer.create_group("image_groups")
    group["layout"] = np.array(layout, np.int64)
    group["closed"] = np.array(closed, np.int64)
    n, g = len(closed) if pieces is None else pieces, layout[2]
    group["count"] = np.full(n, 64, np.int64)
    for key in ("frob", "quad", "sum_weighted", "norms"):
        group[key] = np.zeros((n, g, g))
    for key in ("trace", "sum_sq"):
        group[key] = np.zeros((n, g))


INCONSISTENT = {
    "summary-7-rows": (
        lambda f: _replace(f[f"{ATT}/summaries"], "distance", np.zeros((7, 2), np.float32)),
        "summary 'distance' of layer 'blocks.0.attn' has 7 rows for 2 images",
    ),
    "heads-1e15": (
        lambda f: f[ATT].attrs.__setitem__("heads", 10**15),
        "layer 'blocks.0.attn' declares 1000000000000000 heads",
    ),
    "summary-3-heads": (
        lambda f: _replace(f[f"{ATT}/summaries"], "entropy", np.zeros((2, 3), np.float32)),
        "summary 'entropy' of layer 'blocks.0.attn' has 3 heads, the layer 2",
    ),
    "maps-5-heads": (
        lambda f: _replace(f[ATT], "maps", np.zeros((1, 5, 101, 101), np.float16)),
        "the maps of layer 'blocks.0.attn' have shape (1, 5, 101, 101) for 2 images of 2 heads",
    ),
    "labels-3-for-2": (
        lambda f: _replace(f["samples"], "labels", np.zeros(3, np.int64)),
        "samples/labels has 3 entries for 2 image ids",
    ),
    "comoment-5x5": (
        lambda f: _replace(f[f"{CH}/moments"], "comoment", np.zeros((5, 5))),
        "the moments of layer 'patch_embed.proj' do not fit together (mean (64,), "
        "comoment (5, 5), count ())",
    ),
    "input-size-text": (
        lambda f: f.attrs.__setitem__("input_size", '"big"'),
        "root attribute 'input_size' is 'big', not [channels, height, width]",
    ),
    "images-done-99": (
        lambda f: f.attrs.__setitem__("images_done", 99),
        "it claims 99 images done but lists 2 image ids",
    ),
    "channels-text": (
        lambda f: f[CH].attrs.__setitem__("channels", "many"),
        "layer 'patch_embed.proj' declares 'many' channels",
    ),
    "image-group-out-of-range": (
        lambda f: _image_groups(f[ATT], layout=[4, 2, 2, 32], closed=[0, 7]),
        "image_groups of layer 'blocks.0.attn': closed is not distinct group indices below 4",
    ),
    "image-group-pieces-short": (
        lambda f: _image_groups(f[ATT], layout=[2, 2, 2, 32], closed=[0, 1], pieces=1),
        "image_groups of layer 'blocks.0.attn': count does not hold one entry per closed group",
    ),
    "complete-string-false": (
        lambda f: f.attrs.__setitem__("complete", "false"),
        "its attribute 'complete' is 'false', not a boolean",
    ),
}


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_an_inconsistent_file_is_refused_naming_the_element(tmp_path: Path, case: str) -> None:
    edit, problem = INCONSISTENT[case]
    path = _sealed(tmp_path, edit)
    with pytest.raises(RunFileError) as info:
        read_run(path, allow_incomplete=True)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is inconsistent ({problem})"), message
    assert message.endswith("run the analysis again")


def test_complete_is_a_boolean_and_false_is_incomplete(tmp_path: Path) -> None:
    path = _sealed(tmp_path, lambda f: f.attrs.__setitem__("complete", False))
    with pytest.raises(RunFileError, match="is an incomplete run"):
        read_run(path)
    assert read_run(path, allow_incomplete=True).complete is False
    assert read_run(GOLDEN).complete is True


def test_an_inconsistent_file_is_one_clean_line_for_report_and_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _sealed(tmp_path, INCONSISTENT["summary-7-rows"][0])
    for args in (
        ["report", str(path), "-o", str(tmp_path / "r.html")],
        ["compare", str(path), str(GOLDEN), "-o", str(tmp_path / "c.html")],
        ["info", str(path)],
    ):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path} is inconsistent (summary 'distance'"), err
        assert err.count("\n") == 1 and "--debug" not in err
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "c.html").exists()


def test_a_view_error_is_a_known_error_of_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whatever the checks miss and the report's view model refuses is a clean line
    naming the file (formerly ``error (ViewError): ...`` and "run with --debug")."""
    from inspector.present import _report

    def refuse(run: Any) -> Any:
        raise reports.ViewError("pruning fractions must increase")

    monkeypatch.setattr(_report, "run_view", refuse)
    assert main(["report", str(GOLDEN), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"error: {GOLDEN} holds data its report cannot show (ViewError: pruning fractions "
        "must increase); the file is inconsistent (edited, or not written by inspector): "
        "run the analysis again\n"
    )


# -- what the report's CSV and the terminal show ------------------------------------------


def test_csv_cells_that_start_like_a_formula_are_text() -> None:
    from reports._tables import table_csv

    table = reports.Table(
        name="layers",
        description="names from the model",
        columns=("=layer", "value"),
        rows=(
            ('=HYPERLINK("http://x","click")', -1.5),
            ("+cmd", 2.0),
            ("-2+3", None),
            ("@SUM(A1)", 1.0),
            ("\tlead", 0.0),
            ("blocks.0.attn", -0.25),
        ),
    )
    lines = table_csv(table).splitlines()
    assert lines == [
        "'=layer,value",
        '"\'=HYPERLINK(""http://x"",""click"")",-1.5',
        "'+cmd,2.0",
        "'-2+3,",
        "'@SUM(A1),1.0",
        "'\tlead,0.0",
        "blocks.0.attn,-0.25",  # numbers, negative ones too, stay numbers
    ]


def test_warnings_are_one_logged_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from inspector import _cli

    def noisy(args: Any) -> int:
        for _ in range(3):
            np.log(np.zeros(1))  # numpy: RuntimeWarning, divide by zero
            warnings.warn("torch says\nsomething", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setitem(_cli._COMMANDS, "info", noisy)
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # Python would show each of the three
        assert main(["info", "x.h5"]) == 0
    assert warnings.showwarning is shown  # put back
    assert capsys.readouterr().err.splitlines() == [
        "warning: RuntimeWarning: divide by zero encountered in log",
        "warning: UserWarning: torch says something",
    ]


def test_control_characters_of_a_run_file_are_escaped_in_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _sealed(tmp_path, lambda f: f.attrs.__setitem__("model", "evil\x1b[2J\x07\u202enet"))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "evil\\x1b[2J\\x07\\u202enet" in out


@pytest.mark.parametrize("module", ["hooks", "reports"])
def test_hooks_and_reports_errors_are_known_to_the_cli(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hooks
    from inspector import _cli

    error = (
        hooks.HookError("a hook said no")
        if module == "hooks"
        else reports.ReportError("a report said no")
    )

    def fails(args: Any) -> int:
        raise error

    monkeypatch.setitem(_cli._COMMANDS, "info", fails)
    assert main(["info", "x.h5"]) == 1
    assert capsys.readouterr().err == f"error: {error}\n"  # not "error (HookError): ..."
