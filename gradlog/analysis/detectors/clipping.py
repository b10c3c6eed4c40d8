"""Hint: a gradient clipping threshold from percentiles of the pre-clip global norm."""

from __future__ import annotations

import numpy as np

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.detectors.update_ratio import low_symptoms
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector


@detector("hint.clipping")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Percentiles of the pre-clip norm; how often clipping fires (or would, at clip_percentile)."""
    pre = frames.scalar("grad_norm_preclip")
    clipped = pre.height > 0
    if clipped:
        joined = pre.join(frames.steps.select("step", "grad_norm"), on="step", how="left")
        x = joined["value"].to_numpy()
        post = joined["grad_norm"].to_numpy().astype(np.float64)
    else:
        x = frames.steps["grad_norm"].to_numpy().astype(np.float64)
        post = x
    ok = np.isfinite(x)
    if ok.sum() < 2 * cfg.min_window:
        return []
    x = x[ok]
    p50, p90, p99 = (float(v) for v in np.percentile(x, [50, 90, 99]))
    thr = float(np.percentile(x, cfg.clip_percentile))
    would = float(np.mean(x > thr))
    steps = frames.steps["step"]
    span = (int(steps.min()), int(steps.max())) if len(steps) else (None, None)  # type: ignore[arg-type]
    ev = {"p50": p50, "p90": p90, "p99": p99, "suggested_max_norm": thr, "would_fire_share": would}
    if clipped:
        with np.errstate(invalid="ignore"):
            fired = float(np.mean(x > post[ok] * (1 + 1e-3)))
        ev["fired_share"] = fired
        lim = frames.scalar("grad_clip_limit")["value"].drop_nans()
        limit = float(lim.median()) if len(lim) else None  # type: ignore[arg-type]
        at = f" at {limit:.3g}" if limit is not None else ""
        if limit is not None:
            ev["clip_limit"] = limit
        slow = low_symptoms(frames, cfg, still_falling=False)  # a loss that barely moved
        if fired > cfg.clip_fire_high:
            # a tight threshold makes the steps normalised ones of length lr x threshold: a
            # recipe (e.g. LSTM language models), a problem only when progress is slow
            return [
                make(
                    frames.run_id,
                    "hint.clipping",
                    Kind.CLIPPING,
                    Severity.WARNING if slow else Severity.INFO,
                    f"Gradient clipping{at} fired on {fired:.0%} of steps (pre-clip norm median "
                    f"{p50:.3g}), so the steps are normalised: their length is about lr x the "
                    "threshold"
                    + (f", and {slow[0]}." if slow else "; the loss shows no sign of it hurting."),
                    f"Clipping{at} rescales most updates like a lower learning rate; if progress "
                    f"is too slow, raise the threshold toward {thr:.3g} "
                    f"(p{cfg.clip_percentile:g} of the pre-clip norm) or the learning rate."
                    if slow
                    else "Nothing to change while the loss behaves.",
                    steps=span,
                    extra=ev,
                )
            ]
        return [
            make(
                frames.run_id,
                "hint.clipping",
                Kind.CLIPPING,
                Severity.INFO,
                f"Gradient clipping{at} fired on {fired:.0%} of steps; pre-clip global norm: "
                f"median {p50:.3g}, p90 {p90:.3g}, p99 {p99:.3g}.",
                f"The threshold{at} already caps the spikes without rescaling most steps; keep it.",
                steps=span,
                extra=ev,
            )
        ]
    return [
        make(
            frames.run_id,
            "hint.clipping",
            Kind.CLIPPING,
            Severity.INFO,
            f"Global gradient norm: median {p50:.3g}, p90 {p90:.3g}, p99 {p99:.3g}.",
            f"A clipping threshold of {thr:.3g} (p{cfg.clip_percentile:g}) would fire on "
            f"{would:.1%} of steps and cap the spikes.",
            steps=span,
            extra=ev,
        )
    ]
