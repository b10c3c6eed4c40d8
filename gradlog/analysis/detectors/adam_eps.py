"""Hint: Adam's eps against the gradient RMS; an eps that dominates turns Adam into SGD."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector


@detector("hint.adam_eps")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Weight tensors (ndim >= 2) whose median gradient RMS is at most eps / adam_eps_ratio."""
    opt = frames.run.meta.get("optimizer") or {}
    cls = str(opt.get("class", "")) if isinstance(opt, dict) else ""
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    if "adam" not in cls.lower() or not isinstance(groups, list) or not groups:
        return []
    eps = groups[0].get("eps") if isinstance(groups[0], dict) else None
    if not isinstance(eps, (int, float)) or eps <= 0 or frames.grad.is_empty():
        return []
    weights = set(frames.run.catalogue.filter(pl.col("ndim") >= 2)["tensor"].cast(pl.String))
    medians: list[tuple[str, float]] = []
    for name, v in frames.by_tensor("rms"):
        r = v["rms"][np.isfinite(v["rms"])]
        if name in weights and len(r):
            medians.append((name, float(np.median(r))))
    rms = pl.DataFrame(medians, schema={"tensor": pl.String, "rms": pl.Float64}, orient="row")
    bad = rms.filter(pl.col("rms") * cfg.adam_eps_ratio <= eps).sort("rms")
    if bad.is_empty():
        return []
    worst = bad.row(0, named=True)
    return [
        make(
            frames.run_id,
            "hint.adam_eps",
            Kind.ADAM_EPS,
            Severity.WARNING,
            f"{cls} eps={eps:g} is at least {cfg.adam_eps_ratio:g}x the gradient RMS of "
            f"{bad.height} tensors (smallest: {worst['tensor']} at {worst['rms']:.3g}); there the "
            "update is damped towards SGD with lr/eps.",
            f"Lower eps to about {float(worst['rms']) * 1e-2:.2g} (1% of the smallest gradient "
            "RMS), or rescale the loss.",
            tensor=str(worst["tensor"]),
            eps=float(eps),
            min_grad_rms=float(worst["rms"]),
            tensors_affected=bad.height,
        )
    ]
