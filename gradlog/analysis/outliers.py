"""Across a batch: runs that fell an order of magnitude behind a comparable run.

A single run cannot know what loss is achievable; a comparable run (a config that differs in at
most one hyperparameter, see :mod:`gradlog.analysis.groups`) shows it.
"""

from __future__ import annotations

import math

import numpy as np

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.groups import differing_keys, is_number
from gradlog.analysis.result import BatchRow


def _usable(r: BatchRow) -> bool:
    """A finished comparison point: not failed, a non-negative loss with finite levels."""
    init, final = r.initial_loss, r.final_loss
    return (
        not r.failed
        and r.nonnegative
        and is_number(init)
        and is_number(final)
        and math.isfinite(init)
        and math.isfinite(final)
        and init > 0
    )


def outlier_findings(runs: list[BatchRow], cfg: AnalysisConfig) -> list[Finding]:
    """Warnings for runs whose final loss is >= outlier_factor x that of a comparable run and
    above it by >= outlier_min_gap of their own initial loss (so two runs that both reached
    ~0 are not told apart by noise).

    Failed (diverged, NaN)
    runs have their own errors and are left out. The kind is lr_too_high when the run has the
    largest learning rate among the comparable runs and its largest update was above
    ``update_ratio_high`` of the weights; else plateau.
    """
    usable = [r for r in runs if _usable(r)]
    out: list[Finding] = []
    for r in usable:
        peers = [(s, differing_keys(r.config, s.config, cfg)) for s in usable if s is not r]
        peers = [(s, d) for s, d in peers if len(d) <= 1]
        if not peers:
            continue
        best, keys = min(peers, key=lambda p: float(p[0].final_loss or 0))
        final, initial = float(r.final_loss or 0), float(r.initial_loss or 0)
        best_loss = float(best.final_loss or 0)
        factor = final >= cfg.outlier_factor * best_loss and final - best_loss >= (
            cfg.outlier_min_gap * initial
        )
        if not (factor or behind_spread(r, [s for s, _ in peers], cfg)):
            continue
        out.append(_finding(r, best, keys, [s for s, _ in peers], cfg))
    return out


def behind_spread(r: BatchRow, peers: list[BatchRow], cfg: AnalysisConfig) -> bool:
    """Whether ``r`` ended more than outlier_spread robust spreads above its comparable runs'
    median final loss, and by at least outlier_min_gap of the progress they made (the rule
    that works for cross-entropy, whose losses never differ 10x)."""
    losses = np.array([float(s.final_loss or 0) for s in peers])
    med = float(np.median(losses))
    spread = max(1.4826 * float(np.median(np.abs(losses - med))), cfg.outlier_min_spread * abs(med))
    gap = float(r.final_loss or 0) - med
    progress = float(r.initial_loss or 0) - med
    return (
        gap > cfg.outlier_spread * spread and progress > 0 and gap >= cfg.outlier_min_gap * progress
    )


def _name(r: BatchRow) -> str:
    return r.label


def _finding(
    r: BatchRow,
    best: BatchRow,
    keys: list[str],
    peers: list[BatchRow],
    cfg: AnalysisConfig,
) -> Finding:
    final, initial = float(r.final_loss or 0), float(r.initial_loss or 0)
    best_loss = float(best.final_loss or 0)
    ratio = final / best_loss if best_loss > 0 else math.inf
    lr, peak = r.lr, r.update_ratio_peak
    other_lrs = [float(s.lr) for s in peers if s.lr is not None and is_number(s.lr)]
    largest = (
        is_number(lr) and len(other_lrs) == len(peers) and float(lr) > max(other_lrs, default=0)
    )
    high = largest and is_number(peak) and float(peak) > cfg.update_ratio_high
    differs = f"differs only in {keys[0]}" if keys else "differs only in seed or name"
    message = (
        f"{_name(r)} ended at loss {final:.4g} ({final / initial:.0%} of its initial "
        f"{initial:.4g}), {ratio:.3g}x the {best_loss:.4g} of {_name(best)}, which {differs}."
    )
    if high:
        message += (
            f" It has the largest lr of the {len(peers) + 1} ({lr:.3g}; others <= "
            f"{max(other_lrs):.3g}) and its largest update was {peak:.2g} of the weights' norm."
        )
        hint = (
            f"Lower the learning rate toward that of {_name(best)} ({best.lr:.3g}); "
            "add warmup if a high peak learning rate is needed."
            if best.lr is not None and is_number(best.lr)
            else "Lower the learning rate; add warmup if a high peak learning rate is needed."
        )
    else:
        hint = (
            f"Compare it with {_name(best)}: what differs ({keys[0] if keys else 'the seed'}) "
            "made it stall; see its own findings (plateau, update ratio, dead units)."
        )
    return make(
        r.run_id,
        "outliers",
        Kind.LR_TOO_HIGH if high else Kind.PLATEAU,
        Severity.WARNING,
        message,
        hint,
        final_loss=final,
        initial_loss=initial,
        best_run=best.run_id,
        best_loss=best_loss,
        loss_ratio=ratio,
        comparable_runs=len(peers),
        differs_in=keys[0] if keys else "",
        extra={
            k: v
            for k, v in (
                ("lr", lr),
                ("max_other_lr", max(other_lrs) if other_lrs else None),
                ("update_ratio_peak", peak),
                ("update_ratio_median", r.update_ratio_median),
            )
            if is_number(v)
        },
    )
