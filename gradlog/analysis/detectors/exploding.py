"""Exploding gradients: sustained growth, or norms out of range, globally and per tensor."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.phases import overflowed_norm_steps
from gradlog.analysis.registry import detector
from gradlog.analysis.robust import window_len

HINT = (
    "Lower the learning rate, add gradient clipping (see the clipping hint for a threshold), check "
    "normalisation layers and the initialisation of the growing layers."
)


def growth(step: np.ndarray, norm: np.ndarray, cfg: AnalysisConfig) -> tuple[float, float, float]:
    """(late median / early median, early median, late median) of the finite positive norms."""
    ok = np.isfinite(norm) & (norm > 0)
    x = norm[ok]
    if len(x) < 2 * cfg.min_window:
        return float("nan"), float("nan"), float("nan")
    w = window_len(len(x), cfg.window_frac, cfg.min_window)
    early, late = float(np.median(x[:w])), float(np.median(x[-w:]))
    return late / early, early, late


def onset(step: np.ndarray, norm: np.ndarray, level: float) -> int:
    """The first step after which the finite positive norm stays above ``level``.

    When the norm ends at or below ``level`` (a dip at the very end), the first step above it.
    """
    ok = np.isfinite(norm) & (norm > 0)
    s, x = step[ok], norm[ok]
    if len(x) == 0:
        return int(step[0])
    below = np.flatnonzero(x <= level)
    if len(below) == 0:
        return int(s[0])
    if below[-1] + 1 < len(x):
        return int(s[below[-1] + 1])
    above = np.flatnonzero(x > level)
    return int(s[above[0]]) if len(above) else int(s[0])


def start_step(
    step: np.ndarray, norm: np.ndarray, ratio: float, early: float, cfg: AnalysisConfig
) -> int:
    """Where the explosion starts: sustained growth past exploding_onset_factor x the early
    median, else the first norm above exploding_abs_norm."""
    if ratio > cfg.exploding_growth:
        return onset(step, norm, cfg.exploding_onset_factor * early)
    over = np.flatnonzero(np.isfinite(norm) & (norm > cfg.exploding_abs_norm))
    return int(step[over[0]]) if len(over) else int(step[0])


def global_norms(frames: RunFrames, st: pl.DataFrame) -> np.ndarray:
    """The steps' global norms; where the stored one overflowed (inf with no non-finite element
    recorded: a float64 gradient beyond the float32 range in a schema 2 run), the norm of the
    per-tensor norms."""
    norm = st["grad_norm"].to_numpy().astype(np.float64)
    over = overflowed_norm_steps(frames)
    if over:
        redo = (
            frames.grad.filter(pl.col("step").is_in(list(over)))
            .group_by("step")
            .agg((pl.col("norm") ** 2).sum().sqrt().alias("n"))
        )
        by_step = dict(zip(redo["step"].to_list(), redo["n"].to_list(), strict=True))
        steps = st["step"].to_list()
        norm = np.array([by_step.get(s, v) for s, v in zip(steps, norm, strict=True)])
    return norm


@detector("exploding")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Global or per-tensor norm grew > exploding_growth x, or exceeded exploding_abs_norm."""
    out: list[Finding] = []
    st = frames.steps.sort("step")
    step, norm = st["step"].to_numpy(), global_norms(frames, st)
    ratio, early, late = growth(step, norm, cfg)
    finite = np.isfinite(norm)
    peak = float(np.max(norm[finite])) if finite.any() else float("nan")
    if ratio > cfg.exploding_growth or peak > cfg.exploding_abs_norm:
        why = (
            f"grew {ratio:.3g}x (median {early:.3g} -> {late:.3g})"
            if ratio > cfg.exploding_growth
            else f"reached {peak:.3g} (> {cfg.exploding_abs_norm:.3g})"
        )
        out.append(
            make(
                frames.run_id,
                "exploding",
                Kind.EXPLODING,
                Severity.ERROR,
                f"The global gradient norm {why}.",
                HINT,
                steps=(start_step(step, norm, ratio, early, cfg), int(step[-1])),
                growth=ratio,
                early_median=early,
                late_median=late,
                peak=peak,
            )
        )
    hits: list[tuple[float, str, int, int, float, float, float]] = []
    for tensor, v in frames.by_tensor("step", "norm"):
        ok = np.isfinite(v["norm"]) & (v["norm"] > 0)
        s, n = v["step"][ok], v["norm"][ok]
        if len(n) == 0:
            continue
        r, e, la = growth(s, n, cfg)
        pk = float(n.max())
        if r > cfg.exploding_growth or pk > cfg.exploding_abs_norm:
            s0 = start_step(s, n, r, e, cfg)
            hits.append((r if not np.isnan(r) else pk, tensor, s0, int(s[-1]), e, la, pk))
    hits.sort(reverse=True)
    for r, tensor, s0, s1, e, la, pk in hits[: cfg.max_tensor_findings]:
        out.append(
            make(
                frames.run_id,
                "exploding",
                Kind.EXPLODING,
                Severity.WARNING,
                f"The gradient norm of {tensor} "
                + (
                    f"grew {r:.3g}x (median {e:.3g} -> {la:.3g}, peak {pk:.3g})."
                    if r > cfg.exploding_growth
                    else f"reached {pk:.3g} (above {cfg.exploding_abs_norm:.3g})."
                ),
                HINT,
                tensor=tensor,
                steps=(s0, s1),
                growth=r,
                early_median=e,
                late_median=la,
                peak=pk,
                tensors_affected=len(hits),
            )
        )
    return out
