"""The command line end to end, in subprocesses (``python -m inspector``) on tiny models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inspector import __version__
from inspector.cli import main
from inspector.images import builtin_images_dir
from inspector.store import read_run

FAST = ["--weights", "random", "--no-report", "--quiet", "--device", "cpu"]


def inspector(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m inspector ARGS``; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "inspector", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_analyze_vit_then_info(tmp_path: Path) -> None:
    analyses = "attention_distance,attention_entropy,head_redundancy,channel_redundancy"
    out = tmp_path / "runs"
    loud = [arg for arg in FAST if arg != "--quiet"]
    done = inspector("analyze", "test_vit", "--limit", "4", "--batch-size", "2",
                     "--analyses", analyses, "--out", str(out), *loud)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # progress as a log shows it: the capture is the only step (no model-pass analyses)
    assert "[1/1] capture: 4 images ..." in done.stderr
    assert "[1/1] capture: done, 4 images in" in done.stderr
    path = out / "test_vit.h5"
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("layer"))
    assert "MAD px" in header and "redund" in header
    assert any(line.startswith("blocks.5.attn") and "attention" in line for line in lines)
    assert any(line.startswith("patch_embed.proj") and "channel" in line for line in lines)
    assert f"run file: {path}" in lines
    assert "Traceback" not in done.stderr
    run = read_run(path)
    assert run.complete and len(run.sample_ids) == 4
    assert not (out / "test_vit.h5.partial").exists()
    assert not (out / "test_vit.html").exists()  # --no-report

    info = inspector("info", str(path))
    assert info.returncode == 0, info.stderr
    assert f"run file:  {path}" in info.stdout
    assert "complete:  yes" in info.stdout
    assert "model:     test_vit (requested 'test_vit', exact)" in info.stdout
    assert "weights:   random - random initialisation requested" in info.stdout
    assert "images:    4 from builtin, input [3, 160, 160]" in info.stdout
    assert "layers:    6 attention (geometry: global 6), 7 channel" in info.stdout
    assert f"analyses:  {', '.join(sorted(analyses.split(',')))}" in info.stdout


def test_analyze_resnet_all_builtin_images(tmp_path: Path) -> None:
    done = inspector("analyze", "test_resnet", "--analyses", "channel_redundancy",
                     "--out", str(tmp_path / "resnet.h5"), *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("conv1.0") and "channel" in line for line in lines)
    assert any(line.startswith("layer4.0.conv2") for line in lines)
    assert f"run file: {tmp_path / 'resnet.h5'}" in done.stdout
    run = read_run(tmp_path / "resnet.h5")
    assert run.sample_ids == sorted(p.name for p in builtin_images_dir().glob("*.jpg"))
    assert len(run.sample_ids) == 9
    assert not run.attention_layers() and run.channel_layers()
    assert set(run.analysis) == {"channel_redundancy"}


def test_misspelled_model_is_one_clean_line(capsys: pytest.CaptureFixture[str]) -> None:
    # in process: a subprocess would spend most of its time importing timm
    assert main(["analyze", "deit_smal", *FAST]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and "deit_smal" in lines[0]
    assert "deit_small_patch16_224" in lines[0]
    assert captured.out == ""


def test_exit_code_1_from_a_subprocess(tmp_path: Path) -> None:
    done = inspector("info", str(tmp_path / "missing.h5"))  # quick: no torch import
    assert done.returncode == 1
    assert done.stderr == f"error: no run file at {tmp_path / 'missing.h5'}\n"
    usage = inspector("analyze")
    assert usage.returncode == 2 and "required: MODEL" in usage.stderr


def test_version() -> None:
    done = inspector("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"inspector {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["analyze"],
        ["frobnicate"],
        ["analyze", "test_vit", "--limit", "many"],
        ["analyze", "test_vit", "--limit", "0"],
        ["analyze", "test_vit", "--analyses", "nonsense"],
    ],
    ids=["no-command", "no-model", "unknown-command", "limit-not-int", "limit-0", "analysis"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_clean_error_and_debug_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.h5"
    assert main(["info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: no run file at {missing}\n"

    assert main(["--debug", "info", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert "RunFileError: no run file at" in err
    assert err.endswith(f"error: no run file at {missing}\n")

    assert main(["info", str(missing), "--debug"]) == 1  # also after the command
    assert "Traceback" in capsys.readouterr().err


def test_info_on_a_file_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("hello\n")
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path} is not a readable HDF5 file")
    assert err.count("\n") == 1


def test_models_glob(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "deit_*"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("8 timm architecture(s) match 'deit_*':")
    line = next(x for x in out.splitlines() if x.strip().startswith("deit_small_patch16_224"))
    assert "12 attention layers (72 heads), geometry known for 12/12" in line

    assert main(["models", "deit_small"]) == 0  # an alias resolves
    assert "deit_small_patch16_224" in capsys.readouterr().out

    assert main(["models", "zz_no_such_*"]) == 1  # no match is an error
    assert "no timm architecture matches" in capsys.readouterr().err

    assert main(["models", "deit_smal"]) == 1  # a misspelling: suggestions
    assert "deit_small_patch16_224" in capsys.readouterr().err


def test_help_shows_defaults_and_named_positionals(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: builtin)", "(default: 16)", "(default: 8)", "(default: 0)",
                    "(default: inspector-runs)", "(default: auto)"):  # fmt: skip
        assert default in text, default
    assert "usage: inspector analyze [-h]" in text and "MODEL" in text
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "RUN.h5 [RUN.h5 ...]" in capsys.readouterr().out


def test_models_no_match_exits_1_and_alias_prefers_the_canonical_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "zzzq*"]) == 1
    assert "no timm architecture matches 'zzzq*'" in capsys.readouterr().err
    assert main(["models", "swin"]) == 0
    out = capsys.readouterr().out
    assert "swin_tiny_patch4_window7_224" in out and "measures:" in out and "windowed" in out


def test_bad_arguments_are_refused_before_torch_loads() -> None:
    code = (
        "import sys; from inspector.cli import main; "
        "rc = main(sys.argv[1:]); print(rc, 'torch' in sys.modules)"
    )
    for args, message in (
        (["--images", "/no/such/folder"], "--images '/no/such/folder': no such file"),
        (["--device", "gpu"], "--device 'gpu' is not one of auto, cpu, cuda"),
        (["--keep-maps", "-1"], "--keep-maps -1 must be 0 (keep none) or more"),
        (["--layers", "blocks.*,"], "holds an empty pattern"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, "analyze", "test_vit", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.stdout.split() == ["2", "False"], (args, done.stderr)
        assert message in done.stderr
