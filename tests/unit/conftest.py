"""Fixtures shared by the report tests: the planted ViT and CNN report views."""

from __future__ import annotations

import pytest
from support.report_samples import cnn_report, vit_report


@pytest.fixture(scope="module")
def vit():
    return vit_report()


@pytest.fixture(scope="module")
def cnn():
    return cnn_report()
