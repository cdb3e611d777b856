"""Names and versions of the run-file schema (the prose spec is docs/run-file.md).

Every group and dataset carries ``encoding-type`` and ``encoding-version``; readers
refuse a major version newer than theirs. Layer paths and the keys of analysis trees
are HDF5 names with ``%``, ``/`` and NUL percent-encoded (``_encode.encode_name``), so an
``nn.ModuleDict`` key holding ``/`` stays one name.
"""

from __future__ import annotations

from .._axes import AXES, DIM_LABELS

__all__ = [
    "ACCUMULATOR_DIMS",
    "AXES",
    "DIM_LABELS",
    "ENCODING_TYPE",
    "ENCODING_VERSION",
    "JSON_ATTRS",
    "MAP_DIMS",
    "SCHEMA_VERSION",
    "TYPE",
]

SCHEMA_VERSION = "1.0"
"""Version of the whole layout, stored on the root as ``encoding-version``."""

ENCODING_TYPE = "encoding-type"
ENCODING_VERSION = "encoding-version"

TYPE = {
    "root": "inspector-run",
    "samples": "samples",
    "layers": "layers",
    "attention": "attention-layer",
    "channel": "channel-layer",
    "array": "array",
    "strings": "string-array",
    "maps": "attention-maps",
    "moments": "moments",
    "group-sums": "group-sums",
    "image-group-sums": "image-group-sums",
    "summaries": "summaries",
    "analysis": "analysis",
    "result": "analysis-result",
    "tree": "dict",
}

MAP_DIMS = {
    4: ("sample", "head", "query", "key"),
    5: ("sample", "window", "head", "query", "key"),
}
"""Dimension labels of ``layers/<path>/maps`` by rank (5-d when an image is split into
several attention sequences, e.g. windows)."""

ACCUMULATOR_DIMS = {
    ("moments", "count", 0): (),
    ("moments", "mean", 1): ("feature",),
    ("moments", "comoment", 2): ("feature", "feature"),
    ("moments", "comoment", 1): ("feature",),  # variances only (wide layers)
    ("groups", "count", 0): (),
    ("groups", "sum", 1): ("feature",),
    ("groups", "shift", 1): ("feature",),
    ("groups", "cross", 2): ("feature", "feature"),
    ("groups", "weighted", 2): ("feature", "group"),
    ("groups", "norms", 2): ("group", "group"),
    ("image_groups", "images", 0): (),
    ("image_groups", "count", 1): ("image_group",),
    ("image_groups", "sum", 2): ("image_group", "feature"),
    ("image_groups", "shift", 2): ("image_group", "feature"),
    ("image_groups", "cross", 3): ("image_group", "feature", "feature"),
    ("image_groups", "weighted", 3): ("image_group", "feature", "group"),
    ("image_groups", "norms", 3): ("image_group", "group", "group"),
}
"""Dimension labels of the accumulator states by (group, field, rank)."""

JSON_ATTRS = frozenset(
    {
        "alternatives",
        "data_config",
        "fingerprint",
        "geometry",
        "input_size",
        "module_order",
        "options",
        "order",
        "params",
        "site",
        "timings",
    }
)
"""Attributes of the root, ``layers/``, a layer or an analysis result stored as JSON
text; the reader decodes exactly these."""
