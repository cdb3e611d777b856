"""The attention-map explorer's page data and its one inline script.

Rows are packed 8 bits per key, each scaled to its own maximum, base64 per layer and
image, in a ``<script type="application/json">`` block (data, never executed). The
page's one script is a fixed file, ``templates/report.js`` (the explorer and hover
values on figures); the page's Content-Security-Policy allows exactly that script by its
SHA-256 hash and nothing else, so a report still makes no network request and runs no
other code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
from importlib import resources
from typing import Any

import numpy as np
from markupsafe import Markup
from PIL import Image

from ._errors import ReportError
from ._view_explorer import Explorer, ExplorerLayer

__all__ = ["explorer_context", "packed_size", "script_hash", "script_text"]


@functools.cache
def script_text() -> str:
    """The page script, exactly as the page embeds it."""
    return resources.files("reports").joinpath("templates/report.js").read_text("utf-8")


@functools.cache
def script_hash() -> str:
    """The CSP source that allows the page script (``'sha256-…'``)."""
    digest = hashlib.sha256(script_text().encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def _quantised(rows: np.ndarray) -> np.ndarray:
    """``uint8`` rows, each scaled to its own maximum (0 stays 0)."""
    peak = rows.max(-1, keepdims=True)
    scaled = np.divide(rows, peak, out=np.zeros_like(rows), where=peak > 0)
    return np.rint(scaled * 255).astype(np.uint8)


def _jpeg(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _layer(layer: ExplorerLayer) -> dict[str, Any]:
    packed = _quantised(layer.rows.astype(np.float64))
    cls = np.flatnonzero(layer.queries == -1)
    return {
        "name": layer.name,
        "grid": list(layer.grid),
        "stride": list(layer.stride),
        "origin": list(layer.origin),
        "heads": int(layer.rows.shape[1]),
        "step": layer.query_step,
        "cls": int(cls[0]) if len(cls) else -1,
        "queries": layer.queries.tolist(),
        "key_set": layer.key_set.tolist(),
        "keys": layer.keys.tolist(),
        "rows": [base64.b64encode(image.tobytes()).decode("ascii") for image in packed],
    }


def packed_size(explorer: Explorer) -> int:
    """Bytes of packed rows the explorer puts in a page."""
    return sum(layer.rows.size for layer in explorer.layers)


def explorer_context(explorer: Explorer) -> dict[str, Any]:
    """The explorer section's context: the JSON data block and the choices the static
    page lists (layers, images, what was left out).

    Raises:
        ReportError: The rows exceed :attr:`Explorer.BUDGET` (pick fewer images or
            query rows before building the view).
    """
    size = packed_size(explorer)
    if size > Explorer.BUDGET:
        raise ReportError(
            f"the explorer's rows take {size:,} bytes, over the page budget of "
            f"{Explorer.BUDGET:,}; keep fewer images or every n-th query row"
        )
    data = {
        "images": [
            {"id": image_id, "src": _jpeg(image), "height": image.shape[0], "width": image.shape[1]}
            for image_id, image in explorer.images
        ],
        "layers": [_layer(layer) for layer in explorer.layers],
    }
    # Inside <script> only "</" (and "<!--") could end or confuse the element.
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    steps = sorted({layer.query_step for layer in explorer.layers})
    return {
        "data": Markup(text),
        "layers": [layer.name for layer in explorer.layers],
        "images": [image_id for image_id, _ in explorer.images],
        "steps": steps,
        "left_out": list(explorer.left_out),
    }
