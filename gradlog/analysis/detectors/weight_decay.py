"""Hint: weight decay from the growth of the total parameter norm."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.phases import phases
from gradlog.analysis.registry import detector


def _weight_decay(frames: RunFrames) -> float | None:
    opt = frames.run.meta.get("optimizer") or {}
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if not isinstance(groups, list):
        return None
    vals = [g.get("weight_decay") for g in groups if isinstance(g, dict)]
    nums = [float(v) for v in vals if isinstance(v, (int, float))]
    return max(nums) if nums else None


@detector("hint.weight_decay")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Total parameter norm grown > wd_growth x without decay, or shrunk < wd_shrink x with it."""
    if frames.param.is_empty():
        return []
    end = phases(frames, cfg).healthy_end
    param = frames.param if end is None else frames.param.filter(pl.col("step") < end)
    if "nonfinite" in param.columns:  # norms are over finite elements: an all-NaN tensor is 0
        bad = param.filter(pl.col("nonfinite") > 0)["step"].unique()
        param = param.filter(~pl.col("step").is_in(bad.implode()))
    total = param.group_by("step").agg((pl.col("norm") ** 2).sum().sqrt().alias("n")).sort("step")
    n, s = total["n"].to_numpy(), total["step"].to_numpy()
    if len(n) < 3 or not np.all(np.isfinite(n)) or n[0] <= 0:
        return []
    ratio = float(n[-1] / n[0])
    wd = _weight_decay(frames)
    ev = {
        "param_norm_start": float(n[0]),
        "param_norm_end": float(n[-1]),
        "ratio": ratio,
        "weight_decay": wd if wd is not None else "unknown",
    }
    if ratio > cfg.wd_growth and not wd:
        return [
            make(
                frames.run_id,
                "hint.weight_decay",
                Kind.WEIGHT_DECAY,
                Severity.INFO,
                f"The parameter norm grew {ratio:.2f}x (from {n[0]:.3g} to {n[-1]:.3g}) without "
                "weight decay.",
                "Add weight decay (e.g. AdamW with weight_decay=0.01-0.1) to keep the weights "
                "bounded.",
                steps=(int(s[0]), int(s[-1])),
                extra=ev,
            )
        ]
    if ratio < cfg.wd_shrink and wd:
        return [
            make(
                frames.run_id,
                "hint.weight_decay",
                Kind.WEIGHT_DECAY,
                Severity.WARNING,
                f"The parameter norm shrank to {ratio:.2f}x with weight decay {wd:g}.",
                f"Weight decay dominates the updates; try about {wd / 10:g}.",
                steps=(int(s[0]), int(s[-1])),
                extra=ev,
            )
        ]
    return []
