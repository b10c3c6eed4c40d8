"""A few numbers per run that comparisons across a batch need (saved with the run's result)."""

from __future__ import annotations

from gradlog.analysis.detectors.update_ratio import ratio_profile
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.groups import is_number
from gradlog.analysis.result import RunSummary


def peak_lr(frames: RunFrames) -> float | None:
    """The largest learning rate of the run: the logged ``lr/0`` (a schedule's peak), else the
    largest of the optimizer's param groups in meta.json."""
    lr = frames.scalar("lr/0")["value"].drop_nans()
    if len(lr):
        return float(lr.max())  # type: ignore[arg-type]
    opt = frames.run.meta.get("optimizer")
    groups = opt.get("param_groups") if isinstance(opt, dict) else None
    lrs = [float(g["lr"]) for g in groups or [] if isinstance(g, dict) and is_number(g.get("lr"))]
    return max(lrs) if lrs else None


def run_summary(frames: RunFrames) -> RunSummary:
    """The peak learning rate and the model's update ratio (median, peak and its step)."""
    profile = ratio_profile(frames)
    if profile is None:
        return RunSummary(peak_lr(frames))
    return RunSummary(
        peak_lr(frames),
        float(profile["median"]),
        float(profile["peak"]),
        int(profile["peak_step"]),
    )
