"""Synthetic view models for the report tests: a fake ViT, a fake CNN, and a comparison.

The numbers are made up but shaped like real results (local and global heads,
ERF growing with depth, pruning curves that fall off), so that the rendered pages
look like real reports. Nothing here imports torch or inspector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reports import (
    AttentionDistance,
    AttentionMaps,
    AttentionSample,
    CompareReport,
    CompareRun,
    DynamicsLayer,
    ErfLayer,
    Explorer,
    ExplorerLayer,
    ImportanceLayer,
    PruningCurve,
    RedundancyLayer,
    RunHeader,
    RunReport,
    SimilarityMatrix,
    Table,
    WeightsInfo,
)

EVIL_ID = "<img src=x onerror=alert(1)>.png"
EVIL_MODEL = 'vit_<b>bold</b>_"quoted"&<script>alert(2)</script>'
UNIFORM_14 = 116.492227  # METRICS §1: uniform attention over 14×14 patches of 16 px
NOTES = (
    "Mean attention distance is renormalised over patch tokens (METRICS §1); class-token "
    "attention is excluded.",
    "ERF: mean over images of |∂s/∂x| for the centre output position (METRICS §3).",
)


def synthetic_image(seed: int, size: int = 224) -> np.ndarray:
    """A colourful ``uint8 [size, size, 3]`` test image (gradients and a disc)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.3, 0.7, 2)
    disc = ((y - cy) ** 2 + (x - cx) ** 2) < 0.04
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * x + seed)], axis=-1)
    rgb[disc] = rng.uniform(0, 1, 3)
    rgb += rng.normal(0, 0.03, rgb.shape)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _gaussian(shape: tuple[int, int], centre: tuple[float, float], sigma: float) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2))


def _similarity(units: int, level: float, rng: np.random.Generator) -> np.ndarray:
    feats = rng.normal(size=(64, units)) + level * rng.normal(size=(64, 1)) * 3
    m = np.abs(np.corrcoef(feats, rowvar=False))
    np.fill_diagonal(m, 1.0)
    return m


def _effective(m: np.ndarray) -> float:
    ev = np.linalg.eigvalsh(m)
    return float(ev.sum() ** 2 / (ev**2).sum())


def _pruning(kind: str, knee: float) -> PruningCurve:
    frac = np.round(np.linspace(0, 1, 11), 2)
    agree = np.clip(1 - np.maximum(frac - knee, 0) * 2.2, 0.0, 1.0)
    agree[frac <= knee] = 1 - 0.008 * frac[frac <= knee] / max(knee, 1e-9)
    kl = 3.0 * np.maximum(frac - knee * 0.6, 0) ** 2
    return PruningCurve(kind, frac, agree, kl, max_removable=knee, threshold=0.99)


def vit_report(
    *,
    layers: int = 3,
    heads: int = 3,
    images: Sequence[np.ndarray] | None = None,
    image_ids: Sequence[str] | None = None,
    model: str = "vit_tiny_fake",
    weights: WeightsInfo | None = None,
    seed: int = 0,
    explorer: bool = True,
) -> RunReport:
    """A run report of a fake ViT (14×14 tokens of 16 px, 224-px input); its explorer
    holds every query row (:func:`planted_explorer`)."""
    rng = np.random.default_rng(seed)
    images = list(images) if images is not None else [synthetic_image(i) for i in range(2)]
    ids = list(image_ids) if image_ids is not None else [f"img_{i}.png" for i in range(len(images))]
    ids[0] = EVIL_ID if image_ids is None else ids[0]
    attn, erf, sims, red, imp, rows = [], [], [], [], [], []
    for i in range(layers):
        depth = (i + 1) / layers
        name = f"blocks.{i}.attn"
        local = np.clip(rng.normal(25 + 80 * depth, 10, heads), 5, 120)
        glob = np.clip(rng.normal(105, 6, heads), 60, 125)
        dist = np.where(rng.uniform(size=heads) < depth, glob, local)
        std = np.abs(rng.normal(4, 1, heads))
        attn.append(AttentionDistance(name, depth, dist, UNIFORM_14, std, windowed=False))
        sigma = 8 + 40 * depth
        erf.append(
            ErfLayer(
                f"blocks.{i}",
                depth,
                sigma * 1.2533,
                radius_50=1.1774 * sigma,
                radius_90=2.1460 * sigma,
                series="block output",
                map=_gaussian((224, 224), (111.5, 111.5), sigma),
            )
        )
        sim = _similarity(heads, depth, rng)
        sims.append(SimilarityMatrix(name, "head", sim, "debiased CKA"))
        eff = _effective(sim)
        off = float(sim[~np.eye(heads, dtype=bool)].mean())
        red.append(RedundancyLayer(name, depth, "head", heads, eff, off, None, "debiased CKA"))
        imp.append(ImportanceLayer(name, depth, "head", rng.uniform(0, 1, heads)))
        rows.append(
            (name, depth, float(dist.mean()), float(np.nanmax(dist)), erf[-1].mean_distance, eff)
        )
    samples = []
    for img, image_id in zip(images, ids, strict=False):
        per_layer = [
            AttentionMaps(
                a.name,
                np.stack(
                    [
                        _gaussian((14, 14), rng.uniform(0, 13, 2), 1 + 5 * h / heads)
                        for h in range(heads)
                    ]
                ),
                "class token",
            )
            for a in attn
        ]
        samples.append(AttentionSample(image_id, img, tuple(per_layer)))
    header = RunHeader(
        model=model,
        requested="vit_fake",
        weights=weights or WeightsInfo("pretrained", "", "augreg_in21k_ft_in1k"),
        image_ids=tuple(ids),
        input_size=(224, 224),
        timings={"capture": 3.21, "gradient": 8.4, "ablation": 20.0},
        tool_version="0.1.0",
        created="2026-11-26T16:30:00Z",
        extra=(("timm", "1.0.0"), ("torch", "2.4.0")),
    )
    table = Table(
        "per-layer",
        (
            "layer",
            "depth",
            "mean head distance (px)",
            "max head distance (px)",
            "ERF mean (px)",
            "effective heads",
        ),
        tuple(rows),
        "One row per attention layer.",
    )
    return RunReport(
        header=header,
        findings=(
            f"Early layers mix local (≈{attn[0].head_distance.min():.0f} px) and global heads.",
            "The last layer's heads are all global (> 100 px).",
        ),
        attention_distance=tuple(attn),
        erf=tuple(erf),
        attention_maps=tuple(samples),
        similarity=tuple(sims),
        redundancy=tuple(red),
        importance=tuple(imp),
        pruning=(_pruning("head", 0.3),),
        notes=NOTES,
        tables=(table,),
        dynamics=_dynamics([a.name for a in attn], heads, rng, vit=True),
        verdict=(
            "Interaction is input-dependent: in the attention heads (D median 0.30 nats).",
            "Not translation equivariant from the first measured layer: blocks.0 has E = 0.950.",
        ),
        explorer=planted_explorer(images, ids, [a.name for a in attn], heads) if explorer else None,
    )


def planted_explorer(
    images: Sequence[np.ndarray],
    ids: Sequence[str],
    layers: Sequence[str],
    heads: int,
    step: int = 1,
) -> Explorer:
    """Explorer rows with a known answer on a 14×14 grid of 16 px (class token first,
    then every ``step``-th token): head ``h`` of query ``(r, c)`` attends most to
    ``(r, (c + h) % 14)``, the class token to ``(7, 7)``; every other key a tenth as much."""
    cells = np.arange(196)
    spatial = cells[(cells // 14 % step == 0) & (cells % 14 % step == 0)]
    queries = np.concatenate([[-1], spatial])
    target = np.zeros((heads, len(queries)), dtype=np.int64)
    for h in range(heads):
        target[h, 0] = 7 * 14 + 7
        target[h, 1:] = (spatial // 14) * 14 + (spatial % 14 + h) % 14
    rows = np.full((len(images), heads, len(queries), 196), 0.1)
    for h in range(heads):
        rows[:, h, np.arange(len(queries)), target[h]] = 1.0
    zeros = np.zeros(len(queries))
    return Explorer(
        tuple(zip(ids, images, strict=True)),
        tuple(
            ExplorerLayer(name, (14, 14), (16, 16), (8, 8), queries, zeros, cells[None], rows, step)
            for name in layers
        ),
    )


def _dynamics(
    names: Sequence[str], heads: int, rng: np.random.Generator, *, vit: bool
) -> tuple[DynamicsLayer, ...]:
    """Input dependence and equivariance records: heads for a ViT, ERF maps for both."""
    out = []
    for i, name in enumerate(names):
        depth = (i + 1) / len(names)
        if vit:
            out.append(DynamicsLayer(name, depth, "attention heads", rng.uniform(0.05, 0.3, heads)))
        e = 0.95 if vit else 0.999 - 0.02 * depth
        out.append(
            DynamicsLayer(
                name.removesuffix(".attn"),
                depth,
                "block output",
                dependence=0.1 * depth,
                dependence_nats=0.2 * depth,
                dependence_low=0.15 * depth,
                dependence_high=0.25 * depth,
                equivariance=e,
                equivariance_low=e - 0.01,
                equivariance_high=min(1.0, e + 0.01),
                sub_equivariance=e - 0.1,
                unaligned=0.5,
            )
        )
    return tuple(out)


def cnn_report(*, layers: int = 4, channels: int = 16, seed: int = 1) -> RunReport:
    """A run report of a fake 4-stage CNN: ERF, channel similarity, importance, pruning."""
    rng = np.random.default_rng(seed)
    erf, sims, red, imp, rows = [], [], [], [], []
    for i in range(layers):
        depth = (i + 1) / layers
        name = f"layer{i + 1}"
        sigma = 3 + 14 * depth
        erf.append(
            ErfLayer(
                name,
                depth,
                sigma * 1.2533,
                1.1774 * sigma,
                2.146 * sigma,
                map=_gaussian((224, 224), (112, 112), sigma),
                centre=(112.0, 112.0),
            )
        )
        sim = _similarity(channels, 0.5 * depth, rng)
        eff = _effective(sim)
        off = float(sim[~np.eye(channels, dtype=bool)].mean())
        sims.append(SimilarityMatrix(name, "channel", sim, "Pearson correlation"))
        red.append(
            RedundancyLayer(
                name,
                depth,
                "channel",
                channels,
                eff,
                off,
                float(np.sort(sim, 1)[:, -2].mean()),
                "Pearson correlation",
            )
        )
        imp.append(ImportanceLayer(name, depth, "channel", rng.beta(1, 4, channels)))
        rows.append((name, depth, erf[-1].mean_distance, eff, 1 - eff / channels))
    header = RunHeader(
        model="resnet_fake",
        requested="resnet_fake",
        weights=WeightsInfo("random", "--weights auto: offline and no cached weights"),
        image_ids=tuple(f"img_{i}.jpg" for i in range(4)),
        input_size=(224, 224),
        timings=(("capture", 1.0),),
        tool_version="0.1.0",
        created="2026-11-26T16:31:00Z",
    )
    table = Table(
        "per-layer",
        ("layer", "depth", "ERF mean (px)", "effective channels", "redundancy"),
        tuple(rows),
    )
    return RunReport(
        header=header,
        erf=tuple(erf),
        similarity=tuple(sims),
        redundancy=tuple(red),
        importance=tuple(imp),
        pruning=(_pruning("channel", 0.2),),
        notes=NOTES,
        tables=(table,),
        dynamics=_dynamics([f"layer{i + 1}" for i in range(layers)], 0, rng, vit=False),
    )


def compare_report(vit: RunReport | None = None, cnn: RunReport | None = None) -> CompareReport:
    """A comparison of the fake ViT and the fake CNN."""
    runs = []
    for label, rep in (("fake ViT", vit or vit_report()), ("fake CNN", cnn or cnn_report())):
        runs.append(
            CompareRun(
                label,
                rep.header.model,
                rep.header.weights,
                rep.attention_distance,
                rep.erf,
                rep.redundancy,
                rep.pruning,
                rep.dynamics,
                images=len(rep.header.image_ids),
                pass_images=(f"ERF pass: {len(rep.header.image_ids)} images",),
            )
        )
    return CompareReport(
        tuple(runs),
        created="2026-11-26T16:32:00Z",
        tool_version="0.1.0",
        findings=("The ViT's heads look farther than the CNN's ERF at every depth.",),
        notes=NOTES,
    )


# The sections each shipped report has, in order (their HTML ids).
RUN_SECTIONS = (
    "verdict",
    "findings",
    "distance",
    "mad",
    "attention-maps",
    "explorer",
    "erf-maps",
    "dynamics",
    "similarity",
    "redundancy",
    "importance",
    "pruning",
    "numbers",
    "methods",
)

COMPARE_SECTIONS = (
    "verdict",
    "runs",
    "findings",
    "distance",
    "dynamics",
    "redundancy",
    "pruning",
    "numbers",
    "methods",
)
