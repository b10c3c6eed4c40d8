"""Non-finite gradients or loss: the first step and the tensor it started in."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.phases import FP16_MAX, ScalerSkip, nonfinite_grad_steps, scaler_skips
from gradlog.analysis.registry import detector


def origin_tensor(frames: RunFrames, step: int) -> tuple[str | None, int]:
    """The most output-side tensor non-finite at ``step`` (gradients flow output -> input).

    Output side = smallest backward_order; without it, the largest depth. Returns (tensor, count).
    """
    bad = frames.grad.filter((pl.col("step") == step) & (pl.col("nonfinite") > 0))
    if bad.is_empty():
        return None, 0
    cat = frames.run.catalogue.select("tensor", "depth", "backward_order")
    bad = bad.join(cat, on="tensor", how="left").with_columns(
        pl.col("backward_order").fill_null(1 << 30),
        (-pl.col("depth").fill_null(-1)).alias("neg_depth"),
    )
    first = bad.sort("backward_order", "neg_depth", "tensor").row(0, named=True)
    return str(first["tensor"]), bad.height


def nonfinite_tensors(frames: RunFrames, step: int) -> list[str]:
    """The tensors whose recorded gradient held NaN/Inf at ``step``, output side first."""
    bad = frames.grad.filter((pl.col("step") == step) & (pl.col("nonfinite") > 0))
    cat = frames.run.catalogue.select("tensor", "backward_order")
    bad = bad.join(cat, on="tensor", how="left").with_columns(
        pl.col("backward_order").fill_null(1 << 30)
    )
    return [str(t) for t in bad.sort("backward_order", "tensor")["tensor"].to_list()]


def _named(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _loss_at(frames: RunFrames, cfg: AnalysisConfig, step: int) -> float | None:
    s, loss = frames.loss(cfg.loss_name)
    hit = np.flatnonzero(s == step)
    return float(loss[hit[0]]) if len(hit) else None


def _origin(frames: RunFrames, cfg: AnalysisConfig, first: int) -> tuple[str | None, str, int]:
    """(tensor or None when ambiguous, the sentence about the origin, non-finite tensors)."""
    tensor, n_bad = origin_tensor(frames, first)
    if tensor is None:
        return None, "", 0
    recorded = frames.grad.filter(pl.col("step") == first).height
    if n_bad < recorded:
        return tensor, f" in {tensor} (the most output-side of {n_bad} non-finite tensors)", n_bad
    loss = _loss_at(frames, cfg, first)
    if loss is not None and not np.isfinite(loss):
        why = (
            f"; every one of the {n_bad} recorded tensors was non-finite and so was the loss, so "
            "the NaN/Inf came from the forward pass or the batch, not from one layer's backward"
        )
    else:
        why = (
            f"; the origin is ambiguous: all {n_bad} recorded tensors were non-finite at once "
            "(as when the loss's own backward or the output layer produced it), so no single "
            "tensor can be named from the gradients"
        )
    return None, why, n_bad


def _skip_fault(frames: RunFrames, faults: list[ScalerSkip]) -> Finding:
    """The warning for GradScaler skips that were not probing (see :class:`ScalerSkip`)."""
    k = faults[0]
    origin = k.tensors[0]
    rest = k.recorded - len(k.tensors)
    where = f"{_named(k.tensors)} ({len(k.tensors)} of {k.recorded} recorded tensors" + (
        ", the rest finite)" if rest > 0 else ")"
    )
    streak = (
        f", skip {k.consecutive} in a row: the NaN/Inf persisted while the scale was halved"
        if k.consecutive > 1
        else ""
    )
    peak = (
        f"their largest finite value x scale was {k.peak:.3g}, far from the fp16 maximum "
        f"{FP16_MAX:g} that an overflow reaches"
        if k.peak
        else "none of their values was both finite and nonzero"
    )
    more = (
        f" ({len(faults)} such skips, the last at step {faults[-1].step})"
        if len(faults) > 1
        else ""
    )
    return make(
        frames.run_id,
        "nonfinite",
        Kind.NONFINITE,
        Severity.WARNING,
        f"The GradScaler skipped step {k.step}, but not to probe its loss scale{more}: the loss "
        f"was finite and the gradients of {where} were non-finite at scale {k.scale:g}, below "
        f"the scale's high-water mark {k.high_water or 0:g} (the scaler had halved it after "
        "an overflow, and it had not grown since: no probe)"
        f"{streak}; {peak}. A NaN/Inf born in the backward pass, starting at {origin}.",
        f"Look at the backward of {origin}'s layer at step {k.step} (sqrt/log/pow/division at "
        "0, a custom autograd Function); torch.autograd.set_detect_anomaly(True) on a rerun "
        "names the op. The scaler only hides it by skipping the step; if it recurs, the scale "
        "collapses.",
        tensor=origin,
        steps=(k.step, faults[-1].step),
        first_step=k.step,
        skipped_not_probing=len(faults),
        loss_scale=k.scale,
        high_water_scale=k.high_water or 0.0,
        scaled_finite_max=k.peak if k.peak is not None else 0.0,
        tensors_nonfinite=len(k.tensors),
        tensors_recorded=k.recorded,
        consecutive_skips=k.consecutive,
    )


@detector("nonfinite")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """NaN/Inf in gradients (not skipped by a GradScaler) or in the loss: error. A GradScaler
    skip at a step whose loss was non-finite is a real NaN, not an fp16 overflow: warning."""
    out: list[Finding] = []
    bad = nonfinite_grad_steps(frames)
    if bad:
        first = bad[0]
        tensor, where, n_tensors = _origin(frames, cfg, first)
        names = nonfinite_tensors(frames, first)
        out.append(
            make(
                frames.run_id,
                "nonfinite",
                Kind.NONFINITE,
                Severity.ERROR,
                f"Gradients became non-finite at step {first}{where}; {len(bad)} steps affected "
                "and the optimizer applied them."
                + (f" Non-finite at that step: {_named(names)}." if names else ""),
                (
                    f"Look at the forward and backward of {tensor}'s layer at step {first} "
                    "(log/exp/sqrt/division near 0, bad inputs)"
                    if tensor
                    else f"Check the batch and the loss at step {first} (inputs, labels, "
                    "log/exp/division near 0 in the output layer or the loss)"
                )
                + "; torch.autograd.set_detect_anomaly(True) on a rerun names the op. Clipping "
                "does not remove NaN; a GradScaler skips such steps under fp16.",
                tensor=tensor,
                steps=(first, bad[-1]),
                first_step=first,
                steps_affected=len(bad),
                tensors_nonfinite=n_tensors,
                origin_ambiguous=int(tensor is None and n_tensors > 0),
            )
        )
    step_arr, loss = frames.loss(cfg.loss_name)
    skipped = set(frames.steps.filter(pl.col("skipped").fill_null(False))["step"].to_list())
    nan_skips = [int(s) for s in step_arr[~np.isfinite(loss)] if int(s) in skipped]
    if nan_skips:
        first = nan_skips[0]
        names = nonfinite_tensors(frames, first)
        origin = (
            names[0]
            if 0 < len(names) < frames.grad.filter(pl.col("step") == first).height
            else None
        )
        out.append(
            make(
                frames.run_id,
                "nonfinite",
                Kind.NONFINITE,
                Severity.WARNING,
                f"The GradScaler skipped step {first}, but not because the fp16 loss scale "
                f"overflowed: the loss itself was non-finite ({len(nan_skips)} such skipped "
                "step"
                + ("s" if len(nan_skips) > 1 else "")
                + ")."
                + (f" Non-finite gradients at that step: {_named(names)}." if names else ""),
                "A real NaN/Inf in the forward pass or the batch: check the inputs and the "
                "layers' forward at that step (log/exp/sqrt/division near 0); the scaler only "
                "hides it by skipping the step.",
                tensor=origin,
                steps=(first, nan_skips[-1]),
                first_step=first,
                skipped_nonfinite_loss=len(nan_skips),
                tensors_nonfinite=len(names),
            )
        )
    faults = [k for k in scaler_skips(frames, cfg) if k.fault]
    if faults:
        out.append(_skip_fault(frames, faults))
    bad_loss = [int(s) for s in step_arr[~np.isfinite(loss)] if int(s) not in skipped]
    if bad_loss:
        out.append(
            make(
                frames.run_id,
                "nonfinite",
                Kind.NONFINITE,
                Severity.ERROR,
                f"The loss '{cfg.loss_name}' became non-finite at step {bad_loss[0]} "
                f"({len(bad_loss)} of {len(loss)} logged values).",
                "Check the inputs and the loss computation at that step; lower the learning rate "
                "or clip gradients if the gradients exploded just before.",
                steps=(bad_loss[0], bad_loss[-1]),
                first_step=bad_loss[0],
                values_nonfinite=len(bad_loss),
            )
        )
    return out
