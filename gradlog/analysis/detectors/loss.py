"""The loss curve: divergence, plateau and oscillation."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector
from gradlog.analysis.robust import theil_sen, window_len


@detector("loss")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Divergence (late median > divergence_factor x best), plateau, period-2 oscillation."""
    step, loss = frames.loss(cfg.loss_name)
    ok = np.isfinite(loss)
    step, loss = step[ok], loss[ok]
    if len(loss) < 2 * cfg.min_window:
        return []
    out: list[Finding] = []
    w = window_len(len(loss), cfg.window_frac, cfg.min_window)
    roll = pl.Series(loss).rolling_median(w, min_samples=w).to_numpy()
    best_i = int(np.nanargmin(roll))
    best, start, end = float(roll[best_i]), float(np.median(loss[:w])), float(np.median(loss[-w:]))
    span = abs(start) + 1e-12
    if end - best > (cfg.divergence_factor - 1) * max(abs(best), 1e-12) and end > start:
        out.append(
            make(
                frames.run_id,
                "loss",
                Kind.DIVERGENCE,
                Severity.ERROR,
                f"The loss diverged: from its best {best:.4g} (around step {int(step[best_i])}) it "
                f"rose to {end:.4g}, above where it started ({start:.4g}).",
                "Lower the learning rate (or decay it sooner), add warmup and gradient clipping.",
                steps=(int(step[best_i]), int(step[-1])),
                best=best,
                final=end,
                initial=start,
            )
        )
        return out
    tw = window_len(len(loss), cfg.plateau_window_frac, 2 * cfg.min_window)
    slope, _lo, hi = theil_sen(step[-tw:].astype(np.float64), loss[-tw:])
    drop = -slope * float(step[-1] - step[-tw]) / max(abs(end), 1e-12)
    progress = (start - end) / span
    if not np.isnan(slope) and drop < cfg.plateau_rel and hi >= 0:
        early = progress < cfg.plateau_min_progress
        out.append(
            make(
                frames.run_id,
                "loss",
                Kind.PLATEAU,
                Severity.WARNING if early else Severity.INFO,
                f"The loss has plateaued over the last {tw} logged steps (relative change "
                f"{-drop:+.2%}; total improvement {progress:.1%}).",
                "Raise the learning rate or use a schedule that decays later; check that the model "
                "has capacity and that the data are shuffled."
                if early
                else (
                    "Training has converged at this learning rate; decay the learning rate or "
                    "stop early."
                ),
                steps=(int(step[-tw]), int(step[-1])),
                slope=slope,
                relative_change=-drop,
                total_improvement=progress,
            )
        )
    d = np.diff(loss[-tw:])
    if len(d) > 4 and np.std(d) > 0:
        ac = float(np.corrcoef(d[:-1], d[1:])[0, 1])
        amp = float(np.median(np.abs(d))) / max(abs(float(np.median(loss[-tw:]))), 1e-12)
        if ac < cfg.oscillation_autocorr and amp > cfg.oscillation_rel_amp:
            out.append(
                make(
                    frames.run_id,
                    "loss",
                    Kind.OSCILLATION,
                    Severity.WARNING,
                    f"The loss oscillates step to step (lag-1 autocorrelation of changes {ac:.2f}, "
                    f"amplitude {amp:.1%} of the loss).",
                    "Period-2 oscillation means steps overshoot: lower the learning rate or raise "
                    "momentum damping.",
                    steps=(int(step[-tw]), int(step[-1])),
                    diff_autocorr=ac,
                    relative_amplitude=amp,
                )
            )
    return out
