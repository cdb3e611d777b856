"""The dependency arrows of DESIGN.md §3 and the packaging of the generic top-level names."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hooks
import inspector
import reports

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports not installed: install the dev extra (pip install -e '.[dev]')")
    result = subprocess.run(
        [exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout and "KEPT" in result.stdout


def test_generic_top_level_names_belong_to_this_distribution() -> None:
    for package in (hooks, reports, inspector):
        assert Path(package.__file__).resolve().is_relative_to(REPO), package.__file__
