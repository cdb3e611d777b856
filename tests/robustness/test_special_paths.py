"""Paths that are not what they seem (issue 19): named pipes, devices and folders where a
file is expected, files at ``--out`` that are not run files, links planted where the
writer puts its scratch and lock files. Whatever could block runs in a child process
with a timeout, so that a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from support import DATA, run_child

from inspector import RunFileError
from inspector.cli import main
from inspector.images import builtin_images_dir
from inspector.pipeline._plan import output_path
from inspector.store import RunWriter, claim_output, partial_path, refuse_existing
from inspector.store._writer import scratch_path

GOLDEN = DATA / "golden-run-1.1.h5"


def _child(code: str, *args: str, timeout: float = 180, **kwargs: Any) -> Any:
    return run_child(code, *args, timeout=timeout, **kwargs)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line and not line.startswith("warning:")]


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


CLI = "import sys\nfrom inspector.cli import main\nsys.exit(main(sys.argv[1:]))\n"


@pytest.mark.parametrize("command", ["info", "report", "compare"])
def test_a_named_pipe_given_as_the_run_file_is_one_clean_line(tmp_path: Path, command: str) -> None:
    pipe = _fifo(tmp_path / "run.h5")
    args = {
        "info": ["info", str(pipe)],
        "report": ["report", str(pipe), "-o", str(tmp_path / "r.html")],
        "compare": ["compare", str(GOLDEN), str(pipe), "-o", str(tmp_path / "c.html")],
    }[command]
    done = _child(CLI, *args, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert _error_lines(done.stderr) == [
        f"error: {pipe} is a named pipe (FIFO), not a regular file; give the path of an "
        "inspector run file (.h5)"
    ]


def test_a_link_to_a_device_and_a_folder_are_refused_as_run_files(tmp_path: Path) -> None:
    zero = tmp_path / "zero.h5"
    zero.symlink_to("/dev/zero")
    done = _child(CLI, "info", str(zero), timeout=120)
    assert done.returncode == 1
    assert _error_lines(done.stderr) == [
        f"error: {zero} is a character device, not a regular file; give the path of an "
        "inspector run file (.h5)"
    ]
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    with pytest.raises(RunFileError, match="is a folder, not a run file"):
        from inspector.store import read_run

        read_run(folder)


def test_a_named_pipe_among_the_images_is_skipped_with_its_reason(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(builtin_images_dir() / "astronaut.jpg", folder / "a.jpg")
    _fifo(folder / "b.png")
    shutil.copy(builtin_images_dir() / "coffee.jpg", folder / "c.jpg")
    code = (
        "import sys\nfrom inspector.images import open_images\n"
        "import torchvision.transforms as T\n"
        "images = open_images(sys.argv[1], T.Compose([T.Resize((32, 32)), T.ToTensor()]))\n"
        "print(images.ids)\nprint(images.skipped)\n"
        "print(sum(len(ids) for _, ids, _ in images.batches(2)))\n"
    )
    done = _child(code, str(folder))
    assert done.returncode == 0, done.stderr[-2000:]
    ids, skipped, read = done.stdout.splitlines()
    assert ids == "['a.jpg', 'c.jpg']" and read == "2"
    assert skipped == f"[('{folder / 'b.png'}', 'a named pipe (FIFO), not a regular file')]"
    assert done.stderr.count("skipped") == 1  # one warning line, not two


def test_a_named_pipe_as_the_only_image_is_a_clean_error(tmp_path: Path) -> None:
    pipe = _fifo(tmp_path / "photo.jpg")
    code = (
        "import sys\nfrom inspector import ImageError\nfrom inspector.images import open_images\n"
        "try:\n    open_images(sys.argv[1], lambda image: image)\n"
        "except ImageError as exc:\n    print(exc)\n"
    )
    done = _child(code, str(pipe))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "holds no readable image (1 unreadable or too large; first problem: a named pipe" in (
        done.stdout
    )


def test_a_named_pipe_as_the_weights_file_is_refused(tmp_path: Path) -> None:
    pipe = _fifo(tmp_path / "weights.safetensors")
    code = (
        "import sys\nfrom torch import nn\nfrom inspector import WeightsError\n"
        "from inspector._models import load_weights_file\n"
        "try:\n    load_weights_file(nn.Linear(2, 2), sys.argv[1])\n"
        "except WeightsError as exc:\n    print(exc)\n"
    )
    done = _child(code, str(pipe))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (
        f"Weights {str(pipe)!r} is a named pipe (FIFO), not a regular file; expected "
        "'auto', 'pretrained', 'random' or a .safetensors/.pth/.pt/.bin file."
    )


# -- --out -------------------------------------------------------------------------------


def _user_hdf5(path: Path) -> bytes:
    with h5py.File(path, "w") as handle:
        handle["experiment/results"] = np.arange(10.0)
        handle.attrs["owner"] = "somebody else"
    return path.read_bytes()


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("kind", ["other-hdf5", "text", "pipe"])
def test_out_never_replaces_a_file_that_is_not_a_run(
    tmp_path: Path, kind: str, overwrite: bool
) -> None:
    path = tmp_path / "mine.h5"
    if kind == "other-hdf5":
        before = _user_hdf5(path)
    elif kind == "text":
        path.write_text("notes I keep in a file named .h5\n")
        before = path.read_bytes()
    else:
        _fifo(path)
        before = None
    with pytest.raises(RunFileError) as info:
        refuse_existing(path, overwrite=overwrite)
    assert str(info.value) == (
        f"{path} already exists and is not an inspector run file; inspector never replaces "
        "it, even with --overwrite: give another --out, or move it away"
    )
    if before is not None:
        assert path.read_bytes() == before


def test_the_cli_refuses_an_unrelated_hdf5_file_at_out_even_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.H5"  # upper case: still a file, not a folder
    before = _user_hdf5(path)
    args = ["analyze", "test_vit", "--weights", "random", "--limit", "1", "--quiet"]
    assert main([*args, "--out", str(path), "--overwrite", "--no-report"]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: {path} already exists and is not an inspector run file")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.H5"]


def test_a_run_file_is_replaced_only_with_overwrite() -> None:
    # (the full behaviour: test_outputs.py); here only that a run file is recognised.
    with pytest.raises(RunFileError, match="already holds a complete run of test_vit"):
        refuse_existing(GOLDEN)
    refuse_existing(GOLDEN, overwrite=True)


@pytest.mark.parametrize("name", ["RUN.H5", "run.Hdf5", "run.h5"])
def test_out_ending_in_h5_in_any_case_is_a_file(tmp_path: Path, name: str) -> None:
    assert output_path(tmp_path / name, "test_vit") == tmp_path / name


# -- links planted at the writer's paths -------------------------------------------------


def test_a_symlink_planted_at_the_scratch_path_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    final = tmp_path / "run.h5"
    writer = RunWriter(final, {"model": "m"}, "{}")
    scratch_path(final).symlink_to(victim)  # planted after the writer started
    writer.checkpoint({}, ["a.jpg"], np.zeros(1, np.int64), batches_done=1, order=[])
    assert victim.read_text() == "precious"
    assert not scratch_path(final).exists() and not scratch_path(final).is_symlink()
    with h5py.File(partial_path(final), "r") as handle:
        assert handle.attrs["images_done"] == 1
    scratch_path(final).symlink_to(victim)
    assert writer.finish() == final
    assert victim.read_text() == "precious"


def test_a_symlink_planted_at_the_lock_path_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    final = tmp_path / "run.h5"
    (tmp_path / "run.h5.lock").symlink_to(victim)
    claim = claim_output(final)
    with pytest.raises(RunFileError, match=r"cannot create the lock file .*run\.h5\.lock"):
        claim.__enter__()
    assert victim.read_text() == "precious"


def test_the_skipped_images_warning_is_given_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``resolve`` (what ``inspector analyze`` runs) used to repeat the warning that
    ``open_images`` had already logged."""
    import logging

    from inspector import AnalyzeOptions
    from inspector.pipeline import resolve

    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(builtin_images_dir() / "astronaut.jpg", folder / "a.jpg")
    (folder / "b.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="inspector"):
        resolve("test_vit", str(folder), AnalyzeOptions(weights="random", device="cpu"))
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].startswith("skipped 1 image file(s) from")
