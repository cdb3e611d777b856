"""The run file (HDF5): one writer, one reader, a versioned schema (docs/run-file.md)."""

from ._frames import TABLES as TABLES
from ._frames import table_rows as table_rows
from ._frames import to_dataframe as to_dataframe
from ._lock import claim_output as claim_output
from ._lock import images_kept as images_kept
from ._lock import refuse_existing as refuse_existing
from ._reader import Layer as Layer
from ._reader import LayerList as LayerList
from ._reader import Run as Run
from ._reader import read_run as read_run
from ._schema import DIM_LABELS as DIM_LABELS
from ._schema import ENCODING_TYPE as ENCODING_TYPE
from ._schema import ENCODING_VERSION as ENCODING_VERSION
from ._schema import JSON_ATTRS as JSON_ATTRS
from ._schema import SCHEMA_VERSION as SCHEMA_VERSION
from ._schema import TYPE as TYPE
from ._writer import RunWriter as RunWriter
from ._writer import partial_path as partial_path

__all__ = [
    "DIM_LABELS",
    "ENCODING_TYPE",
    "ENCODING_VERSION",
    "JSON_ATTRS",
    "SCHEMA_VERSION",
    "TABLES",
    "TYPE",
    "Layer",
    "LayerList",
    "Run",
    "RunWriter",
    "claim_output",
    "images_kept",
    "partial_path",
    "read_run",
    "refuse_existing",
    "table_rows",
    "to_dataframe",
]
