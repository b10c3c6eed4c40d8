"""Across a batch: fit the outcome against a hyperparameter that varies between runs (a sweep)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make


def sweep_findings(runs: list[dict[str, Any]], cfg: AnalysisConfig) -> list[Finding]:
    """Sweep findings over ``runs``: dicts with run_id, config (hyperparameters) and outcome.

    The outcome is lower-is-better; inf marks a failed run. For each numeric hyperparameter with
    >= sweep_min_runs distinct values, fit a quadratic of the outcome in the hyperparameter (in
    log10 when all values are positive and span > 10x) and suggest the fitted minimum when it lies
    inside the swept range, else the best edge with a hint to extend.
    """
    keys = sorted(
        {
            k
            for r in runs
            for k, v in (r.get("config") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    out: list[Finding] = []
    for key in keys:
        pts = [
            (float(r["config"][key]), float(r["outcome"]), str(r["run_id"]))
            for r in runs
            if isinstance((r.get("config") or {}).get(key), (int, float))
            and r.get("outcome") is not None
        ]
        if len({p[0] for p in pts}) < cfg.sweep_min_runs:
            continue
        xs = np.array([p[0] for p in pts])
        ys = np.array([p[1] for p in pts])
        failed = int(np.sum(~np.isfinite(ys)))
        ok = np.isfinite(ys)
        if len(set(xs[ok].tolist())) < cfg.sweep_min_runs:
            continue
        log = bool(np.all(xs > 0) and xs.max() / xs.min() > 10)
        u = np.log10(xs[ok]) if log else xs[ok]
        coef = np.polyfit(u, ys[ok], 2)
        pred = np.polyval(coef, u)
        ss = float(np.sum((ys[ok] - ys[ok].mean()) ** 2)) or 1.0
        r2 = 1 - float(np.sum((ys[ok] - pred) ** 2)) / ss
        best_i = int(np.argmin(ys[ok]))
        best_x, best_y = float(xs[ok][best_i]), float(ys[ok][best_i])
        inside = coef[0] > 0 and u.min() <= -coef[1] / (2 * coef[0]) <= u.max()
        if inside:
            vertex = -coef[1] / (2 * coef[0])
            suggested = float(10**vertex if log else vertex)
            hint = f"Use {key} = {suggested:.3g} (the fitted optimum; best run had {best_x:.3g})."
        else:
            suggested = best_x
            edge = (
                "above"
                if best_x >= float(xs[ok].max())
                else "below"
                if best_x <= float(xs[ok].min())
                else "around"
            )
            hint = f"The best value {best_x:.3g} is at the edge of the sweep; try values {edge} it."
        out.append(
            make(
                "batch",
                "sweep",
                Kind.SWEEP,
                Severity.INFO,
                f"Sweep over {key} ({len(pts)} runs, {failed} failed): best outcome {best_y:.4g} "
                f"at {key}={best_x:.3g}; quadratic fit{' in log10' if log else ''} R^2={r2:.2f}.",
                hint,
                hyperparameter=key,
                runs=len(pts),
                failed_runs=failed,
                best_value=best_x,
                best_outcome=best_y,
                suggested_value=suggested,
                r2=r2,
                log_scale=int(log),
                best_run=pts[[i for i in range(len(pts)) if ok[i]][best_i]][2],
                optimum_inside=int(inside),
            )
        )
    return [
        f
        for f in out
        if not any(isinstance(v, float) and math.isnan(v) for v in f.evidence.values())
    ]
