"""Hint: the gradient noise scale B_simple = tr(Sigma)/|G|^2 (McCandlish et al. 2018, App. A).

Needs the norm of a small-batch gradient (batch B_small) and of the large-batch gradient (B_big) at
the same steps. The large one is the recorded global norm (``steps.grad_norm``: after all-reduce /
accumulation) or the scalar ``grad_norm_big``. The small one comes from the scalar
``grad_norm_small`` (log the norm of one micro-batch's gradient) or, where ranks recorded local
gradients that differ, from the mean of the per-rank squared norms (then ``grad_norm_big`` is
needed). B_small is the config's ``batch_size``; B_big = B_small * world_size * ``grad_accum``
(config, default 1) unless the scalars ``batch_small``/``batch_big`` are logged.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector


def noise_scale(
    small_sq: np.ndarray, big_sq: np.ndarray, b_small: float, b_big: float
) -> tuple[float, float, float]:
    """(B_simple, |G|^2 estimate, tr(Sigma) estimate) from mean squared norms."""
    s, b = float(np.mean(small_sq)), float(np.mean(big_sq))
    g2 = (b_big * b - b_small * s) / (b_big - b_small)
    tr = (s - b) / (1.0 / b_small - 1.0 / b_big)
    return (tr / g2 if g2 > 0 else float("inf")), g2, tr


@detector("hint.batch_size")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """B_simple against the batch size used; info finding with the suggestion."""
    conf = frames.run.meta.get("config") or {}
    bs = conf.get("batch_size") if isinstance(conf, dict) else None
    accum = conf.get("grad_accum", 1) if isinstance(conf, dict) else 1
    st = frames.steps.filter(pl.col("grad_norm").is_finite()).sort("step")
    differ = (
        frames.run.world_size > 1
        and st.height > 0
        and (
            float(st["rank_norm_spread"].fill_null(0).max()) > 1e-6  # type: ignore[arg-type]
        )
    )
    small, big = frames.scalar("grad_norm_small"), frames.scalar("grad_norm_big")
    base = st.select(
        "step", pl.col("rank_sqnorm_mean").alias("rank_sq"), (pl.col("grad_norm") ** 2).alias("sq")
    )
    if small.height:
        base = base.join(small.select("step", (pl.col("value") ** 2).alias("small")), on="step")
    elif differ:
        base = base.with_columns(pl.col("rank_sq").alias("small"))
    else:
        return []
    if big.height:
        base = base.join(big.select("step", (pl.col("value") ** 2).alias("big")), on="step")
    elif not differ:
        base = base.with_columns(pl.col("sq").alias("big"))
    else:
        return []
    small_sq, big_sq = base["small"].to_numpy(), base["big"].to_numpy()
    factor = float(frames.run.world_size * (accum if isinstance(accum, int) and accum > 0 else 1))
    b_small_s, b_big_s = frames.scalar("batch_small")["value"], frames.scalar("batch_big")["value"]
    if len(b_small_s) and len(b_big_s):
        b_small, b_big = float(b_small_s.median()), float(b_big_s.median())  # type: ignore[arg-type]
    elif isinstance(bs, (int, float)) and bs > 0:
        b_small, b_big = float(bs), float(bs) * factor
    else:
        return []
    ok = np.isfinite(small_sq) & np.isfinite(big_sq)
    if ok.sum() < cfg.gns_min_steps or b_big <= b_small:
        return []
    b_simple, g2, tr = noise_scale(small_sq[ok], big_sq[ok], b_small, b_big)
    if not np.isfinite(b_simple) or b_simple <= 0:
        return []
    verdict = (
        "larger batches would still speed up training per step"
        if b_big < b_simple / 2
        else "larger batches would mostly waste compute"
        if b_big > 2 * b_simple
        else "the batch size is near the critical batch size"
    )
    return [
        make(
            frames.run_id,
            "hint.batch_size",
            Kind.BATCH_SIZE,
            Severity.INFO,
            f"Gradient noise scale B_simple = {b_simple:.3g} samples (batch used: {b_big:g}); "
            f"{verdict}.",
            f"A batch size near {b_simple:.3g} balances steps and compute (McCandlish et al. "
            "2018).",
            b_simple=b_simple,
            g_sq=g2,
            trace_sigma=tr,
            batch_small=b_small,
            batch_big=b_big,
            steps_used=int(ok.sum()),
        )
    ]
