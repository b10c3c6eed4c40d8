"""A run's health phases: the healthy segment before its gradients or loss went non-finite or the
loss diverged. Detectors that assume a healthy run (plateau, convergence, weight decay, lr too
low, dying units) read only that segment; the others say where it ended."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.robust import window_len


def overflowed_norm_steps(frames: RunFrames) -> set[int]:
    """Steps whose stored global norm is non-finite although the recorded per-tensor non-finite
    counts are all 0: a float64 gradient whose norm overflowed float32 (schema 2 stored it as
    float32; schema 3 as float64, where only a norm beyond 1.8e308 overflows), not a NaN/Inf."""
    steps = frames.steps
    bad = steps.filter(~pl.col("grad_norm").is_finite() & pl.col("grad_norm").is_not_null())
    if bad.is_empty() or frames.grad.is_empty():
        return set()
    counted = frames.grad.group_by("step").agg((pl.col("nonfinite") > 0).any().alias("nf"))
    clean = counted.filter(~pl.col("nf"))["step"]
    return {int(s) for s in bad["step"].to_list() if s in set(clean.to_list())}


def nonfinite_grad_steps(frames: RunFrames) -> list[int]:
    """Steps (not skipped by a GradScaler) whose gradients held NaN/Inf: a recorded non-finite
    count, or a non-finite global norm at a step without per-tensor evidence against it."""
    skipped = set(frames.steps.filter(pl.col("skipped").fill_null(False))["step"].to_list())
    grad_bad = frames.grad.filter(pl.col("nonfinite") > 0)["step"].unique().to_list()
    norm_bad = frames.steps.filter(~pl.col("grad_norm").is_finite())["step"].to_list()
    overflow = overflowed_norm_steps(frames)
    return sorted({int(s) for s in grad_bad + norm_bad} - skipped - overflow)


@dataclass(frozen=True)
class Phases:
    """Where the healthy part of a run ends (``healthy_end`` excluded; None: never)."""

    healthy_end: int | None
    reason: str
    """``nonfinite gradients``, ``nonfinite loss``, ``divergence`` or ``""``."""
    last_finite_step: int | None
    last_finite_loss: float | None

    @property
    def broken(self) -> bool:
        return self.healthy_end is not None


def divergence_start(step: np.ndarray, loss: np.ndarray, cfg: AnalysisConfig) -> int | None:
    """The step at the best rolling median of a finite loss that then diverged (the loss detector's
    rule: the final median above divergence_factor x the best and above the start), else None."""
    w = window_len(len(loss), cfg.window_frac, cfg.min_window)
    if len(loss) < 2 * cfg.min_window:
        return None
    roll = pl.Series(loss).rolling_median(w, min_samples=w).to_numpy()
    best_i = int(np.nanargmin(roll))
    best, start, end = float(roll[best_i]), float(np.median(loss[:w])), float(np.median(loss[-w:]))
    if end - best > (cfg.divergence_factor - 1) * max(abs(best), 1e-12) and end > start:
        return int(step[best_i])
    return None


def phases(frames: RunFrames, cfg: AnalysisConfig) -> Phases:
    """The run's phases (cached on ``frames``)."""
    key = f"phases:{cfg.loss_name}"
    if key in frames.cache:
        cached: Phases = frames.cache[key]
        return cached
    step, loss = frames.loss(cfg.loss_name)
    ok = np.isfinite(loss)
    last_step = int(step[ok][-1]) if ok.any() else None
    last_loss = float(loss[ok][-1]) if ok.any() else None
    candidates: list[tuple[int, str]] = []
    grads = nonfinite_grad_steps(frames)
    if grads:
        candidates.append((grads[0], "nonfinite gradients"))
    if (~ok).any():
        # a non-finite loss at a step the GradScaler skipped did not touch the weights
        skipped = set(frames.steps.filter(pl.col("skipped").fill_null(False))["step"].to_list())
        applied = [int(s) for s in step[~ok] if int(s) not in skipped]
        if applied:
            candidates.append((applied[0], "nonfinite loss"))
    div = divergence_start(step[ok], loss[ok], cfg) if ok.sum() else None
    if div is not None:
        candidates.append((div, "divergence"))
    end, reason = min(candidates) if candidates else (None, "")
    out = Phases(end, reason, last_step, last_loss)
    frames.cache[key] = out
    return out


def healthy_loss(frames: RunFrames, cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray]:
    """Steps and finite loss values of the healthy segment."""
    step, loss = frames.loss(cfg.loss_name)
    end = phases(frames, cfg).healthy_end
    keep = np.isfinite(loss) & (step < end if end is not None else True)
    return step[keep], loss[keep]


FP16_MAX = 65504.0
"""The largest finite float16 value: a scaled gradient beyond it overflows to Inf."""
OVERFLOW_EDGE = FP16_MAX / 16
"""A skip whose non-finite tensors' largest finite value x loss scale reaches this (within 16x
of the fp16 maximum) shows the scaled gradients at the edge of the fp16 range: an overflow."""


@dataclass(frozen=True)
class ScalerSkip:
    """A GradScaler skip at a finite loss, with the evidence that tells probing from a fault."""

    step: int
    scale: float
    high_water: float | None
    """The largest loss scale of the steps before (None at the first step)."""
    initial: bool
    """No step before it was applied: the scaler is still searching its first scale."""
    consecutive: int
    """Skipped steps in a row ending here (1: the step before was applied)."""
    grew: bool
    """The scale is larger than at the step before: the scaler just grew it."""
    tensors: list[str]
    """The tensors whose recorded gradient held NaN/Inf, output side first."""
    recorded: int
    """Tensors recorded at the step."""
    peak: float | None
    """The largest finite value of those tensors x the loss scale (None: none recorded)."""

    @property
    def probing(self) -> bool:
        """Right after the scale grew, at its high-water mark, or in the initial search: where
        the scaler probes for overflow."""
        if self.initial or self.grew or self.high_water is None or not math.isfinite(self.scale):
            return True
        return self.scale >= self.high_water

    @property
    def overflow(self) -> bool:
        """The non-finite tensors' finite values reach the edge of the fp16 range."""
        return self.peak is not None and self.peak >= OVERFLOW_EDGE

    @property
    def fault(self) -> bool:
        """A real NaN/Inf, not the scaler's probing: non-finite gradients at a scale below its
        high-water mark that did not just grow (one the scaler halved to after an overflow),
        whose finite values stay far from the fp16 maximum an overflow reaches."""
        return bool(self.tensors) and not self.probing and not self.overflow


def _skip_tensors(frames: RunFrames, steps: list[int]) -> pl.DataFrame:
    """step, tensor, nonfinite, absmax of the recorded gradients at ``steps`` (ranks merged: the
    counts add, absmax takes the max), read from the parts: the frames hold no absmax."""
    empty = pl.DataFrame(
        schema={"step": pl.Int64, "tensor": pl.String, "nonfinite": pl.Int64, "absmax": pl.Float64}
    )
    lf = frames.run.scan("tensors")
    if lf is None or not steps:
        return empty
    wanted = pl.Series(steps, dtype=pl.Int64).implode()
    return (
        lf.filter((pl.col("kind") == "grad") & pl.col("step").cast(pl.Int64).is_in(wanted))
        .group_by(pl.col("step").cast(pl.Int64), pl.col("tensor").cast(pl.String))
        .agg(
            pl.col("nonfinite").cast(pl.Int64).sum(),
            pl.col("absmax").cast(pl.Float64).max(),
        )
        .collect()
    )


def scaler_skips(frames: RunFrames, cfg: AnalysisConfig) -> list[ScalerSkip]:
    """The GradScaler's skipped steps at which the loss was finite (or not logged), each with
    its scale history and non-finite tensors (cached on ``frames``). Skips at a non-finite loss
    are real NaNs of the forward pass or the batch and are left to the nonfinite detector."""
    key = f"scaler_skips:{cfg.loss_name}"
    if key in frames.cache:
        cached: list[ScalerSkip] = frames.cache[key]
        return cached
    st = frames.steps.select("step", "loss_scale", "skipped").sort("step")
    step = st["step"].to_numpy().astype(np.int64)
    skipped = st["skipped"].fill_null(False).to_numpy().astype(bool)
    scale = st["loss_scale"].cast(pl.Float64).to_numpy()
    lstep, lval = frames.loss(cfg.loss_name)
    bad_loss = {int(s) for s in lstep[~np.isfinite(lval)]}
    idx = [i for i in np.flatnonzero(skipped) if int(step[i]) not in bad_loss]
    rows = _skip_tensors(frames, [int(step[i]) for i in idx])
    order = frames.run.catalogue.select(
        pl.col("tensor").cast(pl.String), pl.col("backward_order").fill_null(1 << 30)
    )
    rows = rows.join(order, on="tensor", how="left").sort("step", "backward_order", "tensor")
    nf = pl.col("nonfinite") > 0
    per_step = {
        int(r["step"]): r
        for r in rows.group_by("step", maintain_order=True)
        .agg(
            pl.len().alias("recorded"),
            pl.col("tensor").filter(nf).alias("bad"),
            pl.col("absmax").filter(nf).max().alias("peak"),
        )
        .iter_rows(named=True)
    }
    pos = np.arange(len(step))
    streak = pos - np.maximum.accumulate(np.where(~skipped, pos, -1))  # skips in a row
    top = np.maximum.accumulate(np.where(np.isfinite(scale), scale, -np.inf))
    applied = np.cumsum(~skipped)  # applied steps up to and including each row
    out: list[ScalerSkip] = []
    for i in idx:
        s = int(step[i])
        got = per_step.get(s)
        sc = float(scale[i])
        hw = float(top[i - 1]) if i > 0 and np.isfinite(top[i - 1]) else None
        peak = got["peak"] if got is not None else None
        out.append(
            ScalerSkip(
                step=s,
                scale=sc,
                high_water=hw,
                initial=bool(applied[i] == 0),
                consecutive=int(streak[i]),
                grew=bool(i > 0 and scale[i] > scale[i - 1]),
                tensors=[str(t) for t in got["bad"]] if got is not None else [],
                recorded=int(got["recorded"]) if got is not None else 0,
                peak=float(peak) * sc if peak is not None and np.isfinite(sc) else None,
            )
        )
    frames.cache[key] = out
    return out
