"""Hint: instability in the first steps means a learning-rate warmup would help."""

from __future__ import annotations

import numpy as np

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector
from gradlog.analysis.robust import theil_sen, window_len


def loss_fell_steadily(frames: RunFrames, cfg: AnalysisConfig, s0: int, s1: int) -> bool:
    """Whether the loss decreased significantly over steps s0..s1 (Theil-Sen 95% interval below
    zero) without ever rising above its first value there: the large early norms did no harm."""
    step, loss = frames.loss(cfg.loss_name)
    keep = (step >= s0) & (step <= s1) & np.isfinite(loss)
    x, y = step[keep].astype(np.float64), loss[keep]
    if len(y) < 3:
        return False
    _slope, _low, high = theil_sen(x, y)
    return bool(high < 0 and np.max(y[1:]) <= y[0])


@detector("hint.warmup")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Early max global norm > warmup_norm_factor x the later median, without an lr ramp.

    When the loss fell steadily through those steps, the large norms only reflect the large
    initial loss (they shrink as it does): an info note, not a warning.
    """
    st = frames.steps.sort("step")
    norm = st["grad_norm"].to_numpy().astype(np.float64)
    step = st["step"].to_numpy()
    if len(norm) < 4 * cfg.min_window:
        return []
    w = window_len(len(norm), cfg.warmup_frac, cfg.min_window)
    early, later = norm[:w], norm[w:]
    later = later[np.isfinite(later)]
    if len(later) == 0:
        return []
    med = float(np.median(later))
    peak = float(np.nanmax(np.where(np.isfinite(early), early, np.inf)))
    lr = frames.scalar("lr/0")["value"].to_numpy()
    ramp = len(lr) > 1 and lr[0] < 0.5 * float(np.median(lr))
    if med <= 0 or peak <= cfg.warmup_norm_factor * med or ramp:
        return []
    settle = int(step[w])
    above = np.flatnonzero(~(norm[: 4 * w] <= 2 * med))
    if len(above):
        settle = int(step[min(int(above[-1]) + 1, len(step) - 1)])
    harmless = loss_fell_steadily(frames, cfg, int(step[0]), max(settle, int(step[w - 1])))
    if harmless:
        message = (
            f"The global gradient norm peaked at {peak:.3g} in the first {w} steps, "
            f"{peak / med:.3g}x the later median ({med:.3g}), but the loss fell steadily "
            "meanwhile: the early norms reflect the large initial loss, not instability."
        )
        hint = (
            "No warmup is needed for stability; a linear warmup over about "
            f"{max(settle, w) * 2} steps is still an option if later runs use a larger lr."
        )
    else:
        message = (
            f"The first {w} steps are unstable: the global gradient norm peaked at {peak:.3g}, "
            f"{peak / med:.3g}x the later median ({med:.3g}), and the learning rate has no warmup."
        )
        hint = f"Add a linear learning-rate warmup over about {max(settle, w) * 2} steps."
    return [
        make(
            frames.run_id,
            "hint.warmup",
            Kind.WARMUP,
            Severity.INFO if harmless else Severity.WARNING,
            message,
            hint,
            steps=(int(step[0]), int(step[w - 1])),
            early_peak=peak,
            later_median=med,
            factor=peak / med,
            suggested_warmup_steps=max(settle, w) * 2,
            loss_fell_steadily=harmless,
        )
    ]
