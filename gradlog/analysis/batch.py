"""Findings across the runs of a batch: sweeps and runs that fell behind comparable ones."""

from __future__ import annotations

import math
from typing import Any

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity
from gradlog.analysis.outliers import outlier_findings
from gradlog.analysis.result import RunResult
from gradlog.analysis.sweep import sweep_findings

BATCH_DETECTORS = ("sweep", "outliers")
"""Names that ``AnalysisConfig.disabled`` may hold besides the per-run detectors."""


def outcome(r: RunResult) -> float | None:
    """Lower is better: projected (else final) loss; inf when the run diverged or went NaN."""
    if any(
        f.kind in (Kind.DIVERGENCE, Kind.NONFINITE) and f.severity is Severity.ERROR
        for f in r.findings
    ):
        return math.inf
    c = r.convergence or {}
    val = c.get("projected_loss") if c.get("projected_loss") is not None else c.get("final_loss")
    return float(val) if isinstance(val, (int, float)) else None


def batch_table(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per run: what the batch detectors compare."""
    rows = []
    for r in results:
        c = r.convergence or {}
        out = outcome(r)
        rows.append(
            {
                "run_id": r.run_id,
                "name": r.name,
                "config": r.config,
                "outcome": out,
                "failed": out is not None and not math.isfinite(out),
                "initial_loss": c.get("initial_loss"),
                "final_loss": c.get("final_loss"),
                "nonnegative": c.get("nonnegative"),
                **{k: r.summary.get(k) for k in ("lr", "update_ratio_peak", "update_ratio_median")},
            }
        )
    return rows


def batch_findings(results: list[RunResult], cfg: AnalysisConfig) -> list[Finding]:
    """Sweep and outlier findings over ``results`` (either can be disabled by name)."""
    table = batch_table(results)
    out: list[Finding] = []
    if "sweep" not in cfg.disabled and len(results) >= cfg.sweep_min_runs:
        out += sweep_findings(table, cfg)
    if "outliers" not in cfg.disabled:
        out += outlier_findings(table, cfg)
    return out
