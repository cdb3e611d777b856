"""Names and versions of the run-file schema (the prose spec is docs/run-file.md).

Every group and dataset carries ``encoding-type`` and ``encoding-version``; readers
refuse a major version newer than theirs.
"""

from __future__ import annotations

__all__ = ["AXES", "ENCODING_TYPE", "ENCODING_VERSION", "SCHEMA_VERSION", "TYPE"]

SCHEMA_VERSION = "1.0"
"""Version of the whole layout, stored on the root as ``encoding-version``."""

ENCODING_TYPE = "encoding-type"
ENCODING_VERSION = "encoding-version"

AXES = ("sample", "token", "channel", "head", "query", "key", "layer", "window", "unit", "step")
"""The one axis vocabulary: HDF5 dimension labels use only these names (plus ``y``/``x``
for pixel maps and ``feature``/``group`` for accumulators)."""

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
    "summaries": "summaries",
    "analysis": "analysis",
    "result": "analysis-result",
    "tree": "dict",
}
