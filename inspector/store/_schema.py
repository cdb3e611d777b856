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
    "MANIFEST",
    "MANIFEST_DIGEST",
    "MAP_DIMS",
    "SCHEMA_VERSION",
    "TYPE",
]

SCHEMA_VERSION = "1.1"
"""Version of the whole layout, stored on the root as ``encoding-version``.

1.1 added checksums: ``fletcher32`` on every chunked dataset and the manifest
(:data:`MANIFEST`, :data:`MANIFEST_DIGEST`). 1.0 files (no manifest) are still read."""

MANIFEST = "manifest"
"""Dataset at the root holding the SHA-256 digest of every element, as JSON (1.1)."""

MANIFEST_DIGEST = "manifest_sha256"
"""Root attribute holding the digest of :data:`MANIFEST`, written last (1.1)."""

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
    "manifest": "checksum-manifest",
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
    ("image_groups", "layout", 1): ("layout",),  # groups, images, column groups, size
    ("image_groups", "closed", 1): ("image_group",),
    ("image_groups", "count", 1): ("image_group",),
    ("image_groups", "frob", 3): ("image_group", "group", "group"),
    ("image_groups", "trace", 2): ("image_group", "group"),
    ("image_groups", "quad", 3): ("image_group", "group", "group"),
    ("image_groups", "sum_sq", 2): ("image_group", "group"),
    ("image_groups", "sum_weighted", 3): ("image_group", "group", "group"),
    ("image_groups", "norms", 3): ("image_group", "group", "group"),
    ("image_groups", "summary", 2): ("image_group", "statistic"),
    ("image_groups", "open", 1): ("open_group",),
    ("image_groups", "open_images", 1): ("open_group",),
    ("image_groups", "open_count", 1): ("open_group",),
    ("image_groups", "open_sum", 2): ("open_group", "feature"),
    ("image_groups", "open_shift", 2): ("open_group", "feature"),
    ("image_groups", "open_cross", 3): ("open_group", "feature", "feature"),
    ("image_groups", "open_weighted", 3): ("open_group", "feature", "group"),
    ("image_groups", "open_norms", 3): ("open_group", "group", "group"),
}
"""Dimension labels of the accumulator states by (group, field, rank)."""

JSON_ATTRS = frozenset(
    {
        "alternatives",
        "data_config",
        "failed_analyses",
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
