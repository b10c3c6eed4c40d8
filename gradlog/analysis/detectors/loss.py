"""The loss curve: divergence, plateau and oscillation."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.convergence import initial_level
from gradlog.analysis.detectors.update_ratio import ratio_profile
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.phases import healthy_loss, phases
from gradlog.analysis.registry import detector
from gradlog.analysis.robust import theil_sen, window_len


def early_stall(step: np.ndarray, loss: np.ndarray, cfg: AnalysisConfig) -> dict[str, float] | None:
    """Where a non-negative loss stalled early, or None.

    Stalled: the final level (median of the last window) is less than ``early_stall_drop`` of
    the initial level below it, and the loss has stayed within that distance of its final level
    (a centred rolling median of ``min_window`` steps, so that single batches do not count)
    since a step in the first ``early_stall_onset`` of the run. The band's top is the initial
    level or above, so a loss that never fell is stalled from its first step; one that blew up
    first stalls when it came back.
    """
    w = window_len(len(loss), cfg.window_frac, cfg.min_window)
    initial, final = initial_level(loss), float(np.median(loss[-w:]))
    if initial <= 0 or (initial - final) / initial >= cfg.early_stall_drop:
        return None
    top = final + cfg.early_stall_drop * initial
    smooth = pl.Series(loss).rolling_median(cfg.min_window, min_samples=1, center=True).to_numpy()
    above = np.flatnonzero(smooth > top)
    onset = 0 if len(above) == 0 else int(above[-1]) + 1
    if onset >= len(loss):
        return None
    frac = float(step[onset] - step[0]) / max(float(step[-1] - step[0]), 1.0)
    if frac > cfg.early_stall_onset:
        return None
    return {
        "initial_loss": initial,
        "final_loss": final,
        "relative_drop": (initial - final) / initial,
        "onset_step": float(step[onset]),
        "onset_fraction": frac,
    }


def _stalled(
    frames: RunFrames, cfg: AnalysisConfig, stall: dict[str, float], slope: float, change: float
) -> Finding:
    """The early-stall warning; the hint follows the update ratios where they were recorded."""
    profile = ratio_profile(frames)
    opt = frames.run.meta.get("optimizer")
    adam = "adam" in str(opt.get("class", "") if isinstance(opt, dict) else "").lower()
    if profile is not None and profile["peak"] >= cfg.early_stall_peak_ratio:
        hint = (
            f"The largest update moved the weights by {profile['peak']:.2g} of their norm in one "
            f"step (step {profile['peak_step']}); so large a step can throw the model where it "
            "stays stuck"
            + (" (Adam's first steps move every weight by about the lr)" if adam else "")
            + ". Lower the lr (try 10x) or add warmup; check the data and labels."
        )
    elif profile is not None and profile["median"] < cfg.update_ratio_low:
        hint = (
            f"Updates are only {profile['median']:.2g} of the weights per step: raise the "
            "learning rate (see the update-ratio findings), or fix the gradient flow if the "
            "layers disagree; check the data and labels."
        )
    else:
        hint = (
            "The learning rate may be too high"
            + (" (Adam with a large learning rate often stalls)" if adam else "")
            + " or too low: compare runs at 10x lower and higher. Check that the labels match the "
            "inputs (wrong or shuffled labels stall at the chance level) and that the model can "
            "fit a single batch."
        )
    ratios = (
        {"update_ratio_peak": profile["peak"], "update_ratio_median": profile["median"]}
        if profile
        else None
    )
    return make(
        frames.run_id,
        "loss",
        Kind.PLATEAU,
        Severity.WARNING,
        f"Training stalled early: the loss went from {stall['initial_loss']:.4g} to "
        f"{stall['final_loss']:.4g} ({-stall['relative_drop']:+.1%}), and since step "
        f"{int(stall['onset_step'])} ({stall['onset_fraction']:.0%} into the run) it has stayed "
        f"within {cfg.early_stall_drop * stall['initial_loss']:.3g} of that level "
        f"({cfg.early_stall_drop:.0%} of the initial loss).",
        hint,
        steps=(int(stall["onset_step"]), None),
        extra={**(ratios or {}), **{k: v for k, v in stall.items() if k != "relative_drop"}},
        slope=slope,
        relative_change=change,
        total_improvement=stall["relative_drop"],
        stalled_early=1,
    )


@detector("loss")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Divergence (late median > divergence_factor x best), plateau (stalled early: warning),
    period-2 oscillation."""
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
    if phases(frames, cfg).broken:
        # a run that went non-finite has no plateau or convergence to speak of; its segment
        # before that is judged for oscillation (a too-high-lr symptom) only
        step, loss = healthy_loss(frames, cfg)
        if len(loss) < 2 * cfg.min_window:
            return out
        tw = window_len(len(loss), cfg.plateau_window_frac, 2 * cfg.min_window)
        return out + _oscillation(frames, cfg, step, loss, tw)
    tw = window_len(len(loss), cfg.plateau_window_frac, 2 * cfg.min_window)
    slope, _lo, hi = theil_sen(step[-tw:].astype(np.float64), loss[-tw:])
    drop = -slope * float(step[-1] - step[-tw]) / max(abs(end), 1e-12)
    initial = initial_level(loss)  # an early blow-up is not progress
    progress = (initial - end) / (abs(initial) + 1e-12)
    stall = early_stall(step, loss, cfg) if np.all(loss >= 0) else None
    # a stalled run is one that no longer falls: slowly, or not significantly (noisy)
    if not np.isnan(slope) and (drop < cfg.plateau_rel or hi >= 0) and stall is not None:
        out.append(_stalled(frames, cfg, stall, slope, -drop))
    elif not np.isnan(slope) and drop < cfg.plateau_rel and hi >= 0:
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
    return out + _oscillation(frames, cfg, step, loss, tw)


def _oscillation(
    frames: RunFrames, cfg: AnalysisConfig, step: np.ndarray, loss: np.ndarray, tw: int
) -> list[Finding]:
    """Period-2 oscillation over the last ``tw`` logged losses."""
    out: list[Finding] = []
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
