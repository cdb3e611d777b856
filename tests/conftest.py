"""Fixtures, and the tiers: a test's folder (unit, integration, robustness, browser, slow)
is its marker, so ``-m unit`` runs one tier and the default run leaves out ``slow`` and
``fuzz`` (pyproject.toml). Helpers live in the ``support`` package beside this file."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TRAINED_VIT

TIERS = ("unit", "integration", "robustness", "browser", "slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).resolve().parent
    for item in items:
        tier = Path(item.fspath).resolve().relative_to(root).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def trained_vit_path() -> Path:
    if not TRAINED_VIT.exists():
        pytest.skip(f"trained ViT-Ti weights not found at {TRAINED_VIT} (only in the dev sandbox)")
    return TRAINED_VIT
