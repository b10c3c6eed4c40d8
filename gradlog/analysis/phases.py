"""A run's health phases: the healthy segment before its gradients or loss went non-finite or the
loss diverged. Detectors that assume a healthy run (plateau, convergence, weight decay, lr too
low, dying units) read only that segment; the others say where it ended."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.robust import window_len


def overflowed_norm_steps(frames: RunFrames) -> set[int]:
    """Steps whose stored global norm is non-finite although the recorded per-tensor non-finite
    counts are all 0: a float64 gradient whose norm overflowed float32, not a NaN/Inf."""
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
