"""Findings across the runs of a batch: sweeps, runs that fell behind comparable ones, the ranking
and the sweep charts. Reads only per-run results."""

from __future__ import annotations

import dataclasses
import math

from gradlog.analysis.charts import SweepChart, SweepPoint
from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity
from gradlog.analysis.outliers import outlier_findings
from gradlog.analysis.result import BatchResult, BatchRow, RankEntry, RunResult
from gradlog.analysis.sweep import log_scale, sweep_findings, sweep_sets

BATCH_DETECTORS = ("sweep", "outliers")
"""Names that ``AnalysisConfig.disabled`` may hold besides the per-run detectors."""

MAX_SWEEP_CHARTS = 4


def outcome(r: RunResult) -> float | None:
    """Lower is better: projected (else final) loss; inf when the run diverged or its loss or
    gradients went non-finite (whatever its projection or final loss)."""
    if any(
        f.kind in (Kind.DIVERGENCE, Kind.NONFINITE) and f.severity is Severity.ERROR
        for f in r.findings
    ):
        return math.inf
    c = r.convergence
    if c is None:
        return None
    if c.failed:
        return math.inf
    return c.projected_loss if c.projected_loss is not None else c.final_loss


def batch_rows(results: list[RunResult]) -> list[BatchRow]:
    """One row per run: what the batch detectors compare."""
    rows = []
    for r in results:
        c = r.convergence
        out = outcome(r)
        rows.append(
            BatchRow(
                run_id=r.run_id,
                name=r.name,
                config=dict(r.config),
                outcome=out,
                failed=out is not None and not math.isfinite(out),
                initial_loss=c.initial_loss if c else None,
                final_loss=c.final_loss if c else None,
                nonnegative=bool(c.nonnegative) if c else False,
                lr=r.summary.lr,
                update_ratio_peak=r.summary.update_ratio_peak,
                update_ratio_median=r.summary.update_ratio_median,
            )
        )
    return rows


def batch_findings(results: list[RunResult], cfg: AnalysisConfig) -> list[Finding]:
    """Sweep and outlier findings over ``results`` (either can be disabled by name)."""
    rows = batch_rows(results)
    out: list[Finding] = []
    if "sweep" not in cfg.disabled and len(results) >= cfg.sweep_min_runs:
        out += sweep_findings(rows, cfg)
    if "outliers" not in cfg.disabled:
        out += outlier_findings(rows, cfg)
    return out


def observed(r: RunResult) -> float | None:
    """The loss a run actually reached: its final level, or for a run that diverged or went
    non-finite the last finite loss of its healthy segment (else its last finite logged loss)."""
    c = r.convergence
    if c is None:
        return None
    if c.last_healthy_loss is not None:
        return c.last_healthy_loss
    if math.isfinite(c.final_loss) and not c.failed:
        return c.final_loss
    return c.last_finite_loss if c.last_finite_loss is not None else None


def ranking(results: list[RunResult]) -> list[RankEntry]:
    """Runs with an outcome, best first: healthy runs by the loss they reached (the projection
    only breaks ties), then the runs that failed (diverged, went NaN) by their last finite loss.
    A projection never lifts a run above one that reached a lower loss."""
    keyed = []
    for r in results:
        out, seen = outcome(r), observed(r)
        if out is None or seen is None:
            continue
        failed = not math.isfinite(out)
        tie = out if not failed else math.inf
        keyed.append(((failed, round(seen, 12), tie), seen, r))
    keyed.sort(key=lambda k: k[0])
    return [
        RankEntry(
            r.run_id,
            seen,
            r.convergence.projected_loss if r.convergence else None,
            r.convergence.projected_low if r.convergence else None,
            r.convergence.projected_high if r.convergence else None,
        )
        for _key, seen, r in keyed
    ]


LR_KEYS = ("lr", "learning_rate", "peak_lr", "max_lr", "base_lr")
"""Hyperparameters a sweep over which outranks a run's own learning-rate rule of thumb."""


def _deferred(f: Finding, key: str, mine: float, best: float, sweep: str) -> Finding:
    """A run's lr finding read against the lr sweep it is part of (see :func:`defer_to_sweeps`)."""
    if f.kind not in (Kind.LR_TOO_HIGH, Kind.LR_TOO_LOW):
        return f
    high = f.kind is Kind.LR_TOO_HIGH
    evidence = {**f.evidence, "sweep_best_value": best}
    if mine == best:
        why = f"{sweep} found this run's {key} the best, which outranks this rule of thumb"
    elif (mine < best) == high:  # too high below the best lr, too low above it
        side = "below" if high else "above"
        why = f"{sweep} contradicts it: this run's {key}={mine:.3g} is {side} the best"
    else:
        agrees = f"{f.message} {sweep[0].upper()}{sweep[1:]} agrees."
        return dataclasses.replace(f, message=agrees, evidence=evidence)
    return dataclasses.replace(
        f, severity=Severity.INFO, message=f"{f.message} But {why}.", evidence=evidence
    )


def defer_to_sweeps(results: list[RunResult], cfg: AnalysisConfig) -> None:
    """A learning-rate sweep in the batch outranks each swept run's single-run lr findings.

    The run whose lr did best in the sweep keeps no lr warning: its lr_too_high/lr_too_low
    becomes info naming the sweep (the rule of thumb read its update ratios; the sweep measured
    the outcome). A finding that contradicts the sweep (too high on a run below the best lr, too
    low on one above it) becomes info too; one that agrees with it keeps its severity and names
    the best lr."""
    if "sweep" in cfg.disabled or len(results) < cfg.sweep_min_runs:
        return
    rows = batch_rows(results)
    sets = sweep_sets([r.config for r in rows], [r.outcome for r in rows], cfg)
    for key, group, _fixed in sets:
        if key.lower() not in LR_KEYS:
            continue
        done = {i: o for i in group if (o := rows[i].outcome) is not None and math.isfinite(o)}
        if not done:  # every run failed: the sweep has no best lr to go by
            continue
        best = float(rows[min(done, key=done.__getitem__)].config[key])
        values = ", ".join(f"{v:.3g}" for v in sorted({float(rows[i].config[key]) for i in group}))
        sweep = f"the sweep over {key} in this batch ({values}; best outcome at {key}={best:.3g})"
        for i in group:
            mine = float(rows[i].config[key])
            results[i].findings = [
                _deferred(f, key, mine, best, sweep) for f in results[i].findings
            ]


def sweep_charts(
    results: list[RunResult], findings: list[Finding], cfg: AnalysisConfig
) -> list[SweepChart]:
    """One chart per sweep the analysis recognises (runs that differ only in one numeric
    hyperparameter), with its finding's text and fitted best value."""
    if "sweep" in cfg.disabled:
        return []
    rows = batch_rows(results)
    by_key = {
        (str(f.evidence.get("hyperparameter")), str(f.evidence.get("group", ""))): f
        for f in findings
        if f.kind is Kind.SWEEP
    }
    charts: list[SweepChart] = []
    sets = sweep_sets([r.config for r in rows], [r.outcome for r in rows], cfg)
    for key, group, fixed in sets[:MAX_SWEEP_CHARTS]:
        points = [
            SweepPoint(
                float(rows[i].config[key]),
                rows[i].outcome
                if rows[i].outcome is not None and math.isfinite(rows[i].outcome or 0)
                else None,
                rows[i].label,
            )
            for i in group
        ]
        finding = by_key.get((key, fixed))
        suggested = finding.evidence.get("suggested_value") if finding else None
        charts.append(
            SweepChart(
                key,
                fixed,
                points,
                log_scale([p.value for p in points]),
                float(suggested) if isinstance(suggested, (int, float)) else None,
                f"{finding.message} {finding.hint}" if finding else "",
            )
        )
    return charts


def batch_result(results: list[RunResult], cfg: AnalysisConfig) -> BatchResult:
    """The batch stage over per-run results."""
    defer_to_sweeps(results, cfg)
    findings = batch_findings(results, cfg)
    return BatchResult(results, findings, ranking(results), sweep_charts(results, findings, cfg))
