"""The answer to "do heads and channels do the same job?", written from the numbers and
their intervals (METRICS.md §4 like-for-like, §7 intervals): shared by the terminal's
closing line and the reports' verdict section."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ._rows import RunResults, interval_text

__all__ = ["Verdict", "compare_verdict", "verdict"]

LOCAL = 0.5
"""A head is local when its distance interval lies below this share of its reach."""

GLOBAL = 0.8
"""A head is global when its distance interval lies above this share of its reach."""


@dataclass(frozen=True)
class Verdict:
    """Sentences per block and overall.

    Attributes:
        overall: The one-paragraph answer.
        blocks: One sentence per block with both heads and channel groups.
        heads: Which heads are local and which global, against what each can reach.
        images: Images the numbers come from.
    """

    overall: str
    blocks: tuple[str, ...]
    heads: str
    images: int


def _block(name: str) -> str:
    """The block a layer belongs to (``blocks.3.attn`` and ``blocks.3.mlp.fc2`` →
    ``blocks.3``)."""
    return re.split(r"\.(attn|attention|mlp|self_attn)\b", name)[0]


def _compare(head: tuple[float, float, float], group: tuple[float, float, float]) -> str:
    """``same``, ``heads`` (more redundant), ``channels`` or ``open`` (not resolved)."""
    if any(math.isnan(v) for v in (*head[1:], *group[1:])):
        return "open"
    if head[1] > group[2]:
        return "heads"
    if group[1] > head[2]:
        return "channels"
    return "open"


def verdict(results: RunResults, images: int) -> Verdict:
    """Per block and overall: are heads and channel groups redundant in the same way,
    and which heads are local or global (judged against each layer's own reach)."""
    heads = results.heads.layers if results.heads else {}
    channels = results.channels.layers if results.channels else {}
    groups = {n: c.grouped for n, c in channels.items() if c.grouped is not None}
    by_block: dict[str, dict[str, tuple[str, tuple[float, float, float]]]] = {}
    for name, h in heads.items():
        by_block.setdefault(_block(name), {})["head"] = (name, _triple(h))
    for name, g in groups.items():
        by_block.setdefault(_block(name), {}).setdefault("group", (name, _triple(g)))
    sentences: list[str] = []
    tally = {"heads": 0, "channels": 0, "open": 0}
    for block, pair in by_block.items():
        if "head" not in pair or "group" not in pair:
            continue
        h, g = pair["head"][1], pair["group"][1]
        outcome = _compare(h, g)
        tally[outcome] += 1
        said = {
            "heads": "heads are more redundant than channel groups",
            "channels": "channel groups are more redundant than heads",
            "open": f"the intervals overlap: not resolved at {images} images",
        }[outcome]
        sentences.append(
            f"{block}: head redundancy {interval_text(*h)}, channel-group redundancy "
            f"{interval_text(*g)}: {said}."
        )
    width = _group_width(results)
    if sentences:
        overall = (
            f"Like for like (debiased CKA on units of {width} channels, {images} images, "
            f"95 % intervals): channel groups are more redundant than heads in "
            f"{tally['channels']} of {len(sentences)} blocks, heads more in {tally['heads']}, "
            f"not resolved at {images} images in {tally['open']}."
        )
        if tally["open"] == len(sentences):
            overall += f" At {images} images heads and channels cannot be told apart."
    elif groups:
        values = [_triple(g) for g in groups.values()]
        overall = (
            f"No attention heads: channel groups of {width} channels, redundancy from "
            f"{interval_text(*min(values))} to {interval_text(*max(values))} "
            f"over {len(values)} layers ({images} images)."
        )
    elif heads:
        overall = f"No channel groups measured: heads only ({images} images)."
    else:
        overall = "No redundancy was measured."
    return Verdict(overall, tuple(sentences), _heads_sentence(results, images), images)


def _triple(stats: object) -> tuple[float, float, float]:
    def get(key: str) -> float:
        found = getattr(stats, key, None)
        return math.nan if found is None else float(found)

    return get("redundancy"), get("redundancy_low"), get("redundancy_high")


def _group_width(results: RunResults) -> str:
    channels = results.channels.layers if results.channels else {}
    for layer in channels.values():
        if layer.grouped_cka is not None and layer.grouped is not None:
            units = layer.grouped.units + layer.grouped.excluded_units
            return f"{round((layer.units + layer.excluded_units) / units)}"
    return "head width"


def _heads_sentence(results: RunResults, images: int) -> str:
    distance = results.distance.layers if results.distance else {}
    local: list[str] = []
    wide: list[str] = []
    open_: int = 0
    for name, layer in distance.items():
        reach = layer.uniform
        if layer.mean_low is None or layer.mean_high is None or not reach > 0:
            continue
        for head, (low, high) in enumerate(zip(layer.mean_low, layer.mean_high, strict=True)):
            if not (np.isfinite(low) and np.isfinite(high)):
                continue
            if high < LOCAL * reach:
                local.append(f"{name} h{head}")
            elif low > GLOBAL * reach:
                wide.append(f"{name} h{head}")
            else:
                open_ += 1
    if not local and not wide and not open_:
        return ""

    def listed(names: list[str]) -> str:
        shown = ", ".join(names[:8])
        return f"{len(names)} ({shown}{', ...' if len(names) > 8 else ''})" if names else "none"

    return (
        f"Against what each head can reach (uniform attention over its keys or window): "
        f"local heads (interval below {LOCAL:.0%} of reach): {listed(local)}; global heads "
        f"(interval above {GLOBAL:.0%}): {listed(wide)}; in between or not resolved at "
        f"{images} images: {open_}."
    )


def compare_verdict(runs: list[tuple[str, RunResults, int]]) -> tuple[str, ...]:
    """The verdict of each run, then heads of one model against channel groups of another
    (like for like across models): clear only where every layer's interval of one lies
    on one side of every layer's interval of the other."""
    out = [f"{label}: {verdict(results, images).overall}" for label, results, images in runs]
    units: dict[str, list[tuple[float, float, float]]] = {}
    for label, results, _ in runs:
        if results.heads:
            units[f"heads of {label}"] = [_triple(v) for v in results.heads.layers.values()]
        if results.channels:
            groups = [c.grouped for c in results.channels.layers.values() if c.grouped]
            if groups:
                units[f"channel groups of {label}"] = [_triple(g) for g in groups]
    names = list(units)
    images = min((n for *_, n in runs), default=0)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a.split(" of ", 1)[1] == b.split(" of ", 1)[1]:
                continue  # one model's own comparison is in its verdict above
            ta = [t for t in units[a] if not any(math.isnan(v) for v in t)]
            tb = [t for t in units[b] if not any(math.isnan(v) for v in t)]
            if not ta or not tb:
                continue
            span = (
                f"{a}: {interval_text(*min(ta))} to {interval_text(*max(ta))}; "
                f"{b}: {interval_text(*min(tb))} to {interval_text(*max(tb))}"
            )
            if max(t[2] for t in ta) < min(t[1] for t in tb):
                out.append(f"{b} are more redundant than {a} at every depth ({span}).")
            elif max(t[2] for t in tb) < min(t[1] for t in ta):
                out.append(f"{a} are more redundant than {b} at every depth ({span}).")
            else:
                out.append(
                    f"{a} and {b} overlap: not resolved at {images} images across depth ({span})."
                )
    return tuple(out)
