"""Render inspector results to one self-contained HTML page.

The caller builds a view model (:class:`RunReport` or :class:`CompareReport`)
from plain strings, numbers and numpy arrays; :func:`render_run_report` and
:func:`render_compare_report` turn it into HTML, and :func:`write_report` writes
it atomically. This package never imports torch, h5py, ``inspector`` or ``hooks``.
"""

from __future__ import annotations

from ._errors import ReportError as ReportError
from ._errors import ViewError as ViewError
from ._render import render_compare_report as render_compare_report
from ._render import render_run_report as render_run_report
from ._render import write_report as write_report
from ._sections import SectionList as SectionList
from ._sections import SectionSpec as SectionSpec
from ._sections import no_context as no_context
from ._sections_compare import COMPARE_SECTIONS as COMPARE_SECTIONS
from ._sections_run import RUN_SECTIONS as RUN_SECTIONS
from ._view import AttentionDistance as AttentionDistance
from ._view import AttentionMaps as AttentionMaps
from ._view import AttentionSample as AttentionSample
from ._view import DynamicsLayer as DynamicsLayer
from ._view import ErfLayer as ErfLayer
from ._view import ImportanceLayer as ImportanceLayer
from ._view import PruningCurve as PruningCurve
from ._view import RedundancyLayer as RedundancyLayer
from ._view import RunHeader as RunHeader
from ._view import RunReport as RunReport
from ._view import SimilarityMatrix as SimilarityMatrix
from ._view import Table as Table
from ._view import WeightsInfo as WeightsInfo
from ._view_compare import CompareReport as CompareReport
from ._view_compare import CompareRun as CompareRun
from ._view_explorer import Explorer as Explorer
from ._view_explorer import ExplorerLayer as ExplorerLayer

__all__ = [
    "COMPARE_SECTIONS",
    "RUN_SECTIONS",
    "AttentionDistance",
    "AttentionMaps",
    "AttentionSample",
    "CompareReport",
    "CompareRun",
    "DynamicsLayer",
    "ErfLayer",
    "Explorer",
    "ExplorerLayer",
    "ImportanceLayer",
    "PruningCurve",
    "RedundancyLayer",
    "ReportError",
    "RunHeader",
    "RunReport",
    "SectionList",
    "SectionSpec",
    "SimilarityMatrix",
    "Table",
    "ViewError",
    "WeightsInfo",
    "no_context",
    "render_compare_report",
    "render_run_report",
    "write_report",
]
