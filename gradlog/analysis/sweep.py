"""Across a batch: fit the outcome against a hyperparameter that varies between comparable runs.

A sweep over ``key`` is a group of runs whose configs differ only in ``key`` (and in run keys such
as the seed, see :mod:`gradlog.analysis.groups`): unrelated scenarios that happen to use
different learning rates are not a learning-rate sweep.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.groups import describe_fixed, is_number, is_run_key, sweep_groups
from gradlog.analysis.result import BatchRow

QUADRATIC_PARAMS = 3


def sweep_findings(runs: list[BatchRow], cfg: AnalysisConfig) -> list[Finding]:
    """Sweep findings over ``runs`` (their config, i.e. hyperparameters, and outcome).

    The outcome is lower-is-better; inf marks a failed run. For each numeric hyperparameter and
    each group of runs that differ only in it, with >= sweep_min_runs distinct values: the best
    observed value; with >= sweep_fit_min_values distinct finite ones also a quadratic of the
    outcome in the hyperparameter (in log10 when all values are positive and span > 10x), whose
    vertex is suggested when it lies inside the swept range and the fit's adjusted R^2 reaches
    sweep_min_r2.
    """
    configs = [dict(r.config) for r in runs]
    out: list[Finding] = []
    for key, group, fixed in sweep_sets(configs, [r.outcome for r in runs], cfg):
        pts = [(float(configs[i][key]), float(runs[i].outcome or 0), runs[i].run_id) for i in group]
        finding = _sweep(key, pts, fixed, cfg)
        if finding is not None:
            out.append(finding)
    return [
        f
        for f in out
        if not any(isinstance(v, float) and math.isnan(v) for v in f.evidence.values())
    ]


def sweep_sets(
    configs: list[dict[str, Any]], outcomes: list[float | None], cfg: AnalysisConfig
) -> list[tuple[str, list[int], str]]:
    """Every sweep in a batch: (hyperparameter, indices of its runs with an outcome, what is fixed
    in it that tells it from other sweeps over the same key), for groups of runs that differ only
    in that hyperparameter and have at least ``sweep_min_runs`` distinct values of it."""
    keys = sorted(
        {k for c in configs for k, v in c.items() if is_number(v) and not is_run_key(k, cfg)}
    )
    out: list[tuple[str, list[int], str]] = []
    for key in keys:
        sweeps = [
            [i for i in group if outcomes[i] is not None]
            for group in sweep_groups(configs, key, cfg)
        ]
        sweeps = [g for g in sweeps if len({configs[i][key] for i in g}) >= cfg.sweep_min_runs]
        for group in sweeps:
            others = [g for g in sweeps if g is not group]
            out.append((key, group, describe_fixed(configs, group, others, key, cfg)))
    return out


def log_scale(values: list[float]) -> bool:
    """Whether a hyperparameter is swept (fitted and drawn) in log10: all positive, > 10x span."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def _edge_hint(key: str, best_x: float, xs: np.ndarray) -> str:
    if best_x >= float(xs.max()) or best_x <= float(xs.min()):
        side = "above" if best_x >= float(xs.max()) else "below"
        return f"The best value {best_x:.3g} is at the edge of the sweep; try values {side} it."
    return f"The best value {best_x:.3g} is inside the sweep; add runs around it."


def _sweep(
    key: str, pts: list[tuple[float, float, str]], fixed: str, cfg: AnalysisConfig
) -> Finding | None:
    """The finding of one sweep group (points: value, outcome, run id)."""
    xs = np.array([p[0] for p in pts])
    ys = np.array([p[1] for p in pts])
    ok = np.isfinite(ys)
    failed = int(np.sum(~ok))
    distinct = len(set(xs[ok].tolist()))
    if distinct < cfg.sweep_min_runs:
        return None
    log = log_scale(xs.tolist())
    best_i = int(np.argmin(np.where(ok, ys, np.inf)))
    best_x, best_y = float(xs[best_i]), float(ys[best_i])
    where = f"; {fixed[:120]}" if fixed else ""
    head = (
        f"Sweep over {key} ({len(pts)} runs, {failed} failed{where}): best outcome {best_y:.4g} "
        f"at {key}={best_x:.3g}"
    )
    evidence: dict[str, Any] = {
        "hyperparameter": key,
        "runs": len(pts),
        "failed_runs": failed,
        "distinct_values": distinct,
        "best_value": best_x,
        "best_outcome": best_y,
        "best_run": pts[best_i][2],
        "log_scale": int(log),
        "group": fixed,
    }
    if distinct < cfg.sweep_fit_min_values:
        message = (
            f"{head}. {distinct} values are too few to fit a quadratic (it has "
            f"{QUADRATIC_PARAMS} parameters and passes through any {QUADRATIC_PARAMS} points), "
            "so no optimum is fitted."
        )
        hint = (
            f"{_edge_hint(key, best_x, xs[ok])} A fitted optimum needs runs at "
            f"{cfg.sweep_fit_min_values} or more values."
        )
        return _finding(message, hint, evidence, fitted=0, optimum_inside=0)
    u = np.log10(xs[ok]) if log else xs[ok]
    coef = np.polyfit(u, ys[ok], 2)
    n = int(ok.sum())
    ss = float(np.sum((ys[ok] - ys[ok].mean()) ** 2))
    r2 = 1 - float(np.sum((ys[ok] - np.polyval(coef, u)) ** 2)) / ss if ss > 0 else 0.0
    dof = n - QUADRATIC_PARAMS
    adj = 1 - (1 - r2) * (n - 1) / dof
    vertex = -coef[1] / (2 * coef[0]) if coef[0] != 0 else math.nan
    inside = bool(coef[0] > 0 and u.min() <= vertex <= u.max())
    # the best run's neighbours did worse, so a smooth outcome has its minimum between them; a
    # vertex elsewhere contradicts the runs (one far-off run can bend a quadratic that way)
    grid = np.unique(u)
    at = int(np.searchsorted(grid, math.log10(best_x) if log else best_x))
    lo, hi = grid[max(at - 1, 0)], grid[min(at + 1, len(grid) - 1)]
    agrees = bool(lo <= vertex <= hi)
    good = adj >= cfg.sweep_min_r2
    message = (
        f"{head}; quadratic fit{' in log10' if log else ''} over {distinct} values: "
        f"R^2={r2:.2f}, adjusted {adj:.2f} ({dof} degree{'s' if dof != 1 else ''} of freedom)."
    )
    evidence.update(r2=r2, r2_adjusted=adj, dof=dof)
    if good and inside and agrees:
        suggested = float(10**vertex if log else vertex)
        hint = f"Use {key} = {suggested:.3g} (the fitted optimum; best run had {best_x:.3g})."
        return _finding(
            message, hint, evidence, fitted=1, optimum_inside=1, suggested_value=suggested
        )
    if not good:
        hint = (
            f"The quadratic explains too little of the outcome (adjusted R^2 {adj:.2f} < "
            f"{cfg.sweep_min_r2:g}) to place an optimum: the best run's {key}={best_x:.3g} is "
            f"the estimate. {_edge_hint(key, best_x, xs[ok])}"
        )
    elif inside:
        fitted = float(10**vertex if log else vertex)
        hint = (
            f"The fitted vertex ({key} = {fitted:.3g}) lies outside the best run's neighbours, "
            f"which both did worse: the quadratic contradicts the runs, so the best run's "
            f"{key}={best_x:.3g} is the estimate; add runs around it."
        )
    else:
        hint = _edge_hint(key, best_x, xs[ok])
    return _finding(message, hint, evidence, fitted=1, optimum_inside=0)


def _finding(message: str, hint: str, evidence: dict[str, Any], **more: Any) -> Finding:
    return make("batch", "sweep", Kind.SWEEP, Severity.INFO, message, hint, **evidence, **more)
