"""The view model: plain, frozen records of what a report shows, and nothing else.

A caller (``inspector.present``) turns a run file into these records; the
renderer turns them into HTML. The records hold strings, numbers and numpy
arrays only; they validate their shapes and ranges in ``__post_init__`` and have
no other behaviour. Arrays are copied to read-only float64 (``uint8`` for
images) arrays, sequences to tuples. The comparison records are in
:mod:`reports._view_compare`.

Conventions used throughout:

* ``depth`` is a layer's position as a fraction of the network's depth, in
  ``[0, 1]``, so that a CNN and a ViT share one axis;
* distances are in input pixels;
* ``kind`` is ``"head"`` or ``"channel"`` (the axis vocabulary of the run file);
* every tuple of layers is in the model's layer order;
* an empty tuple (or ``None``) means "not measured": the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ._checks import (
    WEIGHT_SOURCES,
    Cell,
    UnitKind,
    as_array,
    as_tuple,
    check_depth,
    check_kind,
    check_range,
    set_field,
)
from ._errors import ViewError

__all__ = [
    "AttentionDistance",
    "AttentionMaps",
    "AttentionSample",
    "ErfLayer",
    "ImportanceLayer",
    "PruningCurve",
    "RedundancyLayer",
    "RunHeader",
    "RunReport",
    "SimilarityMatrix",
    "Table",
    "WeightsInfo",
    "check_sections",
]


@dataclass(frozen=True)
class WeightsInfo:
    """Where the model's weights came from.

    Attributes:
        source: ``"pretrained"``, ``"random"`` (random initialisation; the report shows
            a red banner) or ``"file"``.
        reason: Why this source was used, e.g. ``"--weights auto: offline and not cached"``.
        detail: Pretrained tag, file path or checksum; shown next to the source.
    """

    source: str
    reason: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.source not in WEIGHT_SOURCES:
            raise ViewError(
                f"WeightsInfo.source must be one of {WEIGHT_SOURCES}, got {self.source!r}"
            )


@dataclass(frozen=True)
class RunHeader:
    """What was measured, on what, and when.

    Attributes:
        model: Resolved timm name (or class name of a custom module).
        requested: The name the user typed (``deit_small``); may equal ``model``.
        weights: Weights source and reason.
        image_ids: Identifiers of the analysed images (file names), in sample order.
        input_size: Model input ``(height, width)`` in pixels.
        timings: ``(pass name, seconds)`` pairs, e.g. ``(("capture", 12.5),)``; a mapping
            is accepted too.
        tool_version: inspector version that wrote the run.
        created: Creation time, ISO 8601 UTC.
        n_images: Number of images analysed; defaults to ``len(image_ids)``.
        warnings: Other notices shown under the header (incomplete run, unknown geometry).
        extra: Further ``(label, value)`` facts (timm/torch versions, device, seed).
    """

    model: str
    requested: str
    weights: WeightsInfo
    image_ids: tuple[str, ...]
    input_size: tuple[int, int]
    timings: tuple[tuple[str, float], ...] = ()
    tool_version: str = ""
    created: str = ""
    n_images: int | None = None
    warnings: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.weights, WeightsInfo):
            raise ViewError("RunHeader.weights must be a WeightsInfo")
        ids = as_tuple(self, "image_ids", str)
        if self.n_images is None:
            set_field(self, "n_images", len(ids))
        elif self.n_images < len(ids):
            raise ViewError(f"RunHeader.n_images={self.n_images} < {len(ids)} image ids")
        size = tuple(int(s) for s in self.input_size)
        if len(size) != 2 or min(size) < 1:
            raise ViewError(f"RunHeader.input_size must be (height, width), got {self.input_size}")
        set_field(self, "input_size", size)
        timings = self.timings.items() if isinstance(self.timings, Mapping) else self.timings
        set_field(self, "timings", tuple((str(k), float(v)) for k, v in timings))
        as_tuple(self, "warnings", str)
        set_field(self, "extra", tuple((str(k), str(v)) for k, v in self.extra))


@dataclass(frozen=True)
class AttentionDistance:
    """Mean attention distance of every head of one attention layer (METRICS §1).

    Attributes:
        name: Module path, e.g. ``"blocks.3.attn"``.
        depth: Fraction of network depth.
        head_distance: ``[head]`` mean attention distance in pixels (NaN where unknown).
        uniform_distance: Distance of uniform attention over this layer's key grid
            (the reference line), or ``None``.
        head_distance_std: ``[head]`` standard deviation over images, or ``None``.
        windowed: Windowed attention (Swin): distances are bounded by the window.
        centre_distance: ``[head]`` ``MAD_centre`` (the central query's distance, the
            number comparable with the ERF), or ``None``.
        centre_uniform: ``MAD_centre`` of uniform attention on this grid, or ``None``.
        head_interval: ``[2, head]`` 95 % interval of ``head_distance`` (low, high), or
            ``None``.
        centre_interval: The same for ``centre_distance``, or ``None``.
    """

    name: str
    depth: float
    head_distance: np.ndarray
    uniform_distance: float | None = None
    head_distance_std: np.ndarray | None = None
    windowed: bool = False
    centre_distance: np.ndarray | None = None
    centre_uniform: float | None = None
    head_interval: np.ndarray | None = None
    centre_interval: np.ndarray | None = None

    def __post_init__(self) -> None:
        check_depth(self)
        dist = as_array(self, "head_distance", 1)
        if self.head_distance_std is not None:
            std = as_array(self, "head_distance_std", 1)
            if std.shape != dist.shape:
                raise ViewError(f"{self.name}: head_distance_std shape {std.shape} != {dist.shape}")
        for key in ("head_interval", "centre_interval"):
            if getattr(self, key) is not None:
                bounds = as_array(self, key, 2)
                if bounds.shape != (2, dist.size):
                    raise ViewError(f"{self.name}: {key} shape {bounds.shape} != (2, {dist.size})")


@dataclass(frozen=True)
class ErfLayer:
    """Effective receptive field of one layer (METRICS §3), in input pixels.

    Attributes:
        name: Module path (a convolution, a stage or a transformer block).
        depth: Fraction of network depth.
        mean_distance: ERF-weighted mean distance from the centre, in pixels.
        radius_50: Radius holding 50 % of the ERF mass, or ``None``.
        radius_90: Radius holding 90 % of the ERF mass, or ``None``.
        series: Line label; layers sharing it are drawn as one line (e.g. ``"block
            output"`` and ``"attention branch"``).
        map: ``[row, col]`` ERF map over the input pixels, or ``None``.
        centre: ``(row, col)`` pixel of the gradient's source on ``map``; defaults to
            the map's centre.
        low: 95 % interval of ``mean_distance``, low end, or ``None``.
        high: Its high end, or ``None``.
        theoretical_rf: Theoretical receptive field side in pixels (``inf``: unbounded),
            or ``None`` when not traced.
    """

    name: str
    depth: float
    mean_distance: float
    radius_50: float | None = None
    radius_90: float | None = None
    series: str = "ERF"
    map: np.ndarray | None = None
    centre: tuple[float, float] | None = None
    low: float | None = None
    high: float | None = None
    theoretical_rf: float | None = None

    def __post_init__(self) -> None:
        check_depth(self)
        set_field(self, "mean_distance", float(self.mean_distance))
        if self.map is not None:
            as_array(self, "map", 2)
        if self.centre is not None:
            set_field(self, "centre", (float(self.centre[0]), float(self.centre[1])))


@dataclass(frozen=True)
class AttentionMaps:
    """Per-head attention of one layer for one image, on the layer's token grid.

    Attributes:
        layer: Module path.
        maps: ``[head, row, col]`` attention over the key grid (any non-negative scale;
            each head is shown scaled to its own maximum).
        query: Which queries the map shows, e.g. ``"class token"`` or ``"mean over queries"``.
    """

    layer: str
    maps: np.ndarray
    query: str = "class token"

    def __post_init__(self) -> None:
        as_array(self, "maps", 3)


@dataclass(frozen=True)
class AttentionSample:
    """One image and its attention maps for some layers.

    Attributes:
        image_id: Identifier of the image (file name).
        image: ``[row, col, 3]`` RGB ``uint8`` image as fed to the model.
        layers: One :class:`AttentionMaps` per layer, in layer order.
    """

    image_id: str
    image: np.ndarray
    layers: tuple[AttentionMaps, ...]

    def __post_init__(self) -> None:
        arr = np.asarray(self.image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ViewError(
                f"AttentionSample.image must be uint8 [row, col, 3], got {arr.dtype} {arr.shape}"
            )
        as_array(self, "image", 3, dtype=np.uint8)
        as_tuple(self, "layers", AttentionMaps)


@dataclass(frozen=True)
class SimilarityMatrix:
    """Unit × unit similarity of one layer (METRICS §4).

    Attributes:
        layer: Module path.
        kind: ``"head"`` or ``"channel"``.
        matrix: ``[unit, unit]`` similarity (CKA in ``[0, 1]``, correlation in ``[-1, 1]``).
        measure: Name of the measure, e.g. ``"debiased CKA"`` or ``"Pearson correlation"``.
    """

    layer: str
    kind: UnitKind
    matrix: np.ndarray
    measure: str

    def __post_init__(self) -> None:
        check_kind(self)
        m = as_array(self, "matrix", 2)
        if m.shape[0] != m.shape[1]:
            raise ViewError(f"{self.layer}: similarity matrix must be square, got {m.shape}")


@dataclass(frozen=True)
class RedundancyLayer:
    """Redundancy summary of one layer's heads or channels (METRICS §4).

    The report plots redundancy ``1 − effective_units / units``.

    Attributes:
        name: Module path.
        depth: Fraction of network depth.
        kind: ``"head"`` or ``"channel"``.
        units: Number of units (heads or channels).
        effective_units: Participation ratio of the similarity matrix's eigenvalues.
        mean_similarity: Mean off-diagonal similarity.
        mean_max_similarity: Mean of each unit's largest similarity to another unit.
        measure: Similarity measure, e.g. ``"debiased CKA"``.
        redundancy_low: 95 % interval of the redundancy, low end (None: no interval).
        redundancy_high: Its high end.
        rows: Rows the similarity was estimated from (0: unknown).
        sample_limited: Rows < 5 × the layer's width.
    """

    name: str
    depth: float
    kind: UnitKind
    units: int
    effective_units: float
    mean_similarity: float
    mean_max_similarity: float | None = None
    measure: str = ""
    redundancy_low: float | None = None
    redundancy_high: float | None = None
    rows: int = 0
    sample_limited: bool = False

    def __post_init__(self) -> None:
        check_depth(self)
        check_kind(self)
        if self.units < 1:
            raise ViewError(f"{self.name}: units must be >= 1, got {self.units}")
        eff = float(self.effective_units)
        if not (math.isnan(eff) or 0.0 <= eff <= self.units * (1 + 1e-9)):
            raise ViewError(f"{self.name}: effective_units {eff} outside [0, {self.units}]")
        set_field(self, "effective_units", eff)
        set_field(self, "mean_similarity", float(self.mean_similarity))


@dataclass(frozen=True)
class ImportanceLayer:
    """Normalised importance of every unit of one layer (METRICS §5).

    Attributes:
        name: Module path.
        depth: Fraction of network depth.
        kind: ``"head"`` or ``"channel"``.
        scores: ``[unit]`` importance in ``[0, 1]`` (per-layer L2, then min–max over the model).
    """

    name: str
    depth: float
    kind: UnitKind
    scores: np.ndarray

    def __post_init__(self) -> None:
        check_depth(self)
        check_kind(self)
        check_range(self, "scores", as_array(self, "scores", 1), 0.0, 1.0)


@dataclass(frozen=True)
class PruningCurve:
    """Predictions as units are removed in increasing order of importance (METRICS §5).

    Attributes:
        kind: ``"head"`` or ``"channel"``.
        fraction: ``[step]`` fraction of units removed, ascending, in ``[0, 1]``.
        agreement: ``[step]`` top-1 agreement with the unpruned model, in ``[0, 1]``.
        kl: ``[step]`` mean KL(full ‖ pruned) in nats.
        max_removable: Largest fraction removable with agreement ≥ ``threshold``, or ``None``.
        threshold: Agreement threshold of ``max_removable``.
        low: ``[step]`` 95 % interval of agreement, low end (``max_removable`` reads it),
            or ``None``.
        high: ``[step]`` its high end, or ``None``.
        images: Held-out images of the curve (0: not stated).
        importance_images: Images the order was estimated on (0: not stated).
        accuracy: ``[step]`` top-1 accuracy on labelled held-out images, or ``None``.
        accuracy_low: ``[step]`` its 95 % interval, low end, or ``None``.
        accuracy_high: ``[step]`` its high end, or ``None``.
        labelled: Labelled held-out images the accuracy is measured on (0: not stated).
    """

    kind: UnitKind
    fraction: np.ndarray
    agreement: np.ndarray
    kl: np.ndarray
    max_removable: float | None = None
    threshold: float = 0.99
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    images: int = 0
    importance_images: int = 0
    accuracy: np.ndarray | None = None
    accuracy_low: np.ndarray | None = None
    accuracy_high: np.ndarray | None = None
    labelled: int = 0

    def __post_init__(self) -> None:
        check_kind(self)
        frac = as_array(self, "fraction", 1)
        agree = as_array(self, "agreement", 1)
        kl = as_array(self, "kl", 1)
        if not frac.shape == agree.shape == kl.shape:
            raise ViewError(
                f"PruningCurve({self.kind}): fraction, agreement and kl lengths differ "
                f"({frac.size}, {agree.size}, {kl.size})"
            )
        check_range(self, "fraction", frac, 0.0, 1.0)
        if np.any(np.diff(frac) < 0):
            raise ViewError(f"PruningCurve({self.kind}).fraction must be ascending")
        check_range(self, "agreement", agree, 0.0, 1.0)
        if self.max_removable is not None and not 0.0 <= self.max_removable <= 1.0:
            raise ViewError(f"PruningCurve({self.kind}).max_removable must lie in [0, 1]")


@dataclass(frozen=True)
class Table:
    """A table of numbers, shown on the page and downloadable as CSV and JSON.

    Attributes:
        name: Short name, used as the download file stem and the table's caption.
        columns: Column headings.
        rows: Rows of cells (``str``, ``int``, ``float``, ``bool`` or ``None``).
        description: Optional sentence shown under the caption.
    """

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    description: str = ""

    def __post_init__(self) -> None:
        columns = as_tuple(self, "columns", str)
        rows = tuple(
            tuple(c.item() if isinstance(c, np.generic) else c for c in row) for row in self.rows
        )
        for i, row in enumerate(rows):
            if len(row) != len(columns):
                raise ViewError(
                    f"Table {self.name!r}: row {i} has {len(row)} cells, expected {len(columns)}"
                )
            for cell in row:
                if not isinstance(cell, (str, int, float, bool, type(None))):
                    raise ViewError(
                        f"Table {self.name!r}: cell of type {type(cell).__name__} in row {i}"
                    )
        set_field(self, "rows", rows)


@dataclass(frozen=True)
class RunReport:
    """Everything a single-run report shows; every section but the header is optional.

    Attributes:
        header: Model, weights, images and provenance.
        findings: Headline sentences, written by the caller.
        verdict: The answer to "do heads and channels do the same job?": sentences
            written from the like-for-like numbers and their intervals.
        attention_distance: One record per attention layer.
        erf: One record per layer with an ERF (conv or transformer).
        attention_maps: A few sample images with per-head attention maps.
        similarity: Head × head (or channel × channel) similarity matrices.
        redundancy: Per-layer redundancy summaries (heads and channels).
        importance: Per-layer unit importance.
        pruning: Pruning curves (at most one per kind).
        notes: Method notes: paragraphs stating the conventions used.
        tables: The numbers, as tables with CSV/JSON downloads.
        title: Page title; defaults to ``"inspector report — <model>"``.
        erf_uniform: ERF mean distance of a uniform ERF at the run's input size (the
            reference of the interaction-distance plot), or ``None``.
        erf_warning: Why the ERF series is degenerate (then no ERF finding is written),
            or empty.
        pass_images: How many images each gradient pass used, one sentence each.
    """

    header: RunHeader
    findings: tuple[str, ...] = ()
    verdict: tuple[str, ...] = ()
    attention_distance: tuple[AttentionDistance, ...] = ()
    erf: tuple[ErfLayer, ...] = ()
    attention_maps: tuple[AttentionSample, ...] = ()
    similarity: tuple[SimilarityMatrix, ...] = ()
    redundancy: tuple[RedundancyLayer, ...] = ()
    importance: tuple[ImportanceLayer, ...] = ()
    pruning: tuple[PruningCurve, ...] = ()
    notes: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    title: str = ""
    erf_uniform: float | None = None
    erf_warning: str = ""
    pass_images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.header, RunHeader):
            raise ViewError("RunReport.header must be a RunHeader")
        check_sections(self)
        as_tuple(self, "attention_maps", AttentionSample)
        as_tuple(self, "similarity", SimilarityMatrix)
        as_tuple(self, "importance", ImportanceLayer)
        as_tuple(self, "findings", str)
        as_tuple(self, "verdict", str)
        as_tuple(self, "notes", str)
        as_tuple(self, "tables", Table)
        if not self.title:
            set_field(self, "title", f"inspector report — {self.header.model}")


def check_sections(obj: object) -> None:
    """Validate the section tuples shared by :class:`RunReport` and ``CompareRun``."""
    as_tuple(obj, "attention_distance", AttentionDistance)
    as_tuple(obj, "erf", ErfLayer)
    as_tuple(obj, "redundancy", RedundancyLayer)
    curves: tuple[PruningCurve, ...] = as_tuple(obj, "pruning", PruningCurve)
    kinds = [c.kind for c in curves]
    if len(set(kinds)) != len(kinds):
        raise ViewError(f"{type(obj).__name__}.pruning has more than one curve per kind: {kinds}")
