"""Precision: gradient values outside the fp16 range (after loss scaling), loss-scale behaviour."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.phases import scaler_skips
from gradlog.analysis.registry import detector


@detector("precision")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Underflow/overflow shares from the exponent histograms; skipped steps; collapsed scale."""
    out: list[Finding] = []
    st = frames.steps
    amp = st["loss_scale"].drop_nulls().len() > 0
    h = frames.hist
    if not h.is_empty():
        tot = h.select(
            pl.col(
                "nonzero",
                "below_fp16_normal",
                "below_fp16_subnormal",
                "above_fp16_max",
                "below_bf16_normal",
            ).sum()
        ).row(0, named=True)
        nz = max(float(tot["nonzero"]), 1.0)
        under, flush = tot["below_fp16_normal"] / nz, tot["below_fp16_subnormal"] / nz
        over = tot["above_fp16_max"] / nz
        scale = 2.0**frames.loss_scale_shift
        sev = Severity.WARNING if amp else Severity.INFO
        if under > cfg.precision_underflow_frac:
            out.append(
                make(
                    frames.run_id,
                    "precision",
                    Kind.PRECISION,
                    sev,
                    f"{under:.1%} of nonzero gradient values (x loss scale {scale:g}) are below "
                    f"the fp16 normal range and {flush:.1%} would flush to zero in fp16"
                    + ("." if amp else " (this run is not fp16; it matters if you switch)."),
                    "Use a (larger) GradScaler loss scale or bf16, whose range matches fp32.",
                    steps=(int(h["step"].min()), int(h["step"].max())),  # type: ignore[arg-type]
                    share_below_fp16_normal=under,
                    share_flush_fp16=flush,
                    loss_scale=scale,
                    share_below_bf16_normal=tot["below_bf16_normal"] / nz,
                )
            )
        if over > cfg.precision_overflow_frac:
            out.append(
                make(
                    frames.run_id,
                    "precision",
                    Kind.PRECISION,
                    sev,
                    f"{over:.2g} of gradient values (x loss scale {scale:g}) exceed the fp16 "
                    "maximum.",
                    "Lower the initial loss scale or use bf16; check for exploding layers.",
                    share_above_fp16_max=over,
                    loss_scale=scale,
                )
            )
    if amp:
        skipped = st.filter(pl.col("skipped").fill_null(False))
        lstep, lval = frames.loss(cfg.loss_name)
        nan_loss = pl.Series([int(x) for x in lstep[~np.isfinite(lval)]], dtype=pl.Int64)
        # skips at a non-finite loss, and skips whose NaN/Inf the scale does not explain, are
        # real NaNs (the nonfinite detector's), not overflows
        faults = pl.Series([k.step for k in scaler_skips(frames, cfg) if k.fault], dtype=pl.Int64)
        skipped = skipped.filter(
            ~pl.col("step").is_in(nan_loss.implode()) & ~pl.col("step").is_in(faults.implode())
        )
        share = skipped.height / max(st.height, 1)
        if skipped.height:
            frequent = share > cfg.precision_skip_frac
            out.append(
                make(
                    frames.run_id,
                    "precision",
                    Kind.PRECISION,
                    Severity.WARNING if frequent else Severity.INFO,
                    f"The GradScaler skipped {skipped.height} of {st.height} steps ({share:.1%})"
                    + (
                        "."
                        if frequent
                        else ": routine, it probes for the largest scale that does not overflow."
                    ),
                    "Frequent overflow: lower the initial scale / growth, find the overflowing "
                    "layer, or train in bf16."
                    if frequent
                    else "Nothing to do while skips stay rare; each one costs a step's data.",
                    steps=(int(skipped["step"].min()), int(skipped["step"].max())),  # type: ignore[arg-type]
                    skipped_steps=skipped.height,
                    skipped_share=share,
                )
            )
        ls = st.filter(pl.col("loss_scale").is_not_null()).sort("step")
        last = float(ls["loss_scale"][-1])
        top = float(ls["loss_scale"].max())  # type: ignore[arg-type]
        if last < cfg.precision_min_loss_scale:
            out.append(
                make(
                    frames.run_id,
                    "precision",
                    Kind.PRECISION,
                    Severity.ERROR,
                    f"The loss scale collapsed to {last:.3g} (max {top:.3g}).",
                    "Gradients overflow even unscaled: there are non-finite values in the forward "
                    "pass; find the first non-finite tensor and fix it, or use bf16.",
                    steps=(int(ls["step"][0]), int(ls["step"][-1])),
                    final_loss_scale=last,
                )
            )
    return out
