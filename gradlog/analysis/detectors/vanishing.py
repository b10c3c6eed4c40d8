"""Vanishing gradients: input-side |g|/|w| orders of magnitude below output-side, persisting."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector


def relative_norms(frames: RunFrames) -> pl.DataFrame:
    """step, tensor, rel = |g| / |w| where the parameter was recorded, else the gradient RMS."""
    g = frames.grad.select("step", "tensor", "norm", "rms")
    if frames.param.is_empty():
        return g.select("step", "tensor", pl.col("rms").alias("rel"))
    pn = frames.param.select("step", "tensor", pl.col("norm").alias("pn"))
    g = g.filter(pl.col("step").is_in(pn["step"].unique().implode()))  # a cheap join after
    return g.join(pn, on=["step", "tensor"]).select(
        "step", "tensor", (pl.col("norm") / pl.col("pn")).alias("rel")
    )


@detector("vanishing")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Quarter of tensors nearest the input vs nearest the output, per time quarter of the run."""
    cat = frames.run.catalogue
    weights = cat.filter(pl.col("ndim") >= 2) if (cat["ndim"] >= 2).sum() >= 2 else cat
    if weights.height < 2:
        return []
    order = weights.sort("depth")["tensor"].to_list()
    k = max(1, len(order) // 4)
    inputs, outputs = set(order[:k]), set(order[-k:])
    rel = relative_norms(frames).filter(pl.col("rel").is_finite() & (pl.col("rel") > 0))
    if rel.is_empty():
        return []
    steps = np.sort(rel["step"].unique().to_numpy())
    edges = np.quantile(steps, [0, 0.25, 0.5, 0.75, 1.0])
    ratios: list[float] = []
    for q in range(4):
        lo, hi = edges[q], edges[q + 1]
        part = rel.filter(
            (pl.col("step") >= lo) & ((pl.col("step") < hi) if q < 3 else (pl.col("step") <= hi))
        )
        a = part.filter(pl.col("tensor").is_in(list(inputs)))["rel"]
        b = part.filter(pl.col("tensor").is_in(list(outputs)))["rel"]
        if len(a) and len(b):
            ratios.append(float(a.median()) / float(b.median()))  # type: ignore[arg-type]
    if not ratios:
        return []
    low = [r < cfg.vanishing_ratio for r in ratios]
    if sum(low) / len(ratios) < cfg.vanishing_persist:
        return []
    med = float(np.median(ratios))
    first = sorted(inputs, key=order.index)[0]
    return [
        make(
            frames.run_id,
            "vanishing",
            Kind.VANISHING,
            Severity.WARNING,
            f"Input-side gradients are {med:.2g}x the output-side ones relative to their weights "
            f"(median over {len(ratios)} time quarters; input side starts at {first}).",
            "Use residual connections or normalisation, a non-saturating activation (ReLU/GELU "
            "instead of sigmoid/tanh), or a better-scaled initialisation (He/Xavier).",
            tensor=first,
            steps=(int(steps[0]), int(steps[-1])),
            ratio_median=med,
            ratio_min=min(ratios),
            quarters_below=sum(low),
            threshold=cfg.vanishing_ratio,
        )
    ]
