"""Non-finite gradients or loss: the first step and the tensor it started in."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
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


@detector("nonfinite")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """NaN/Inf in gradients (not skipped by a GradScaler) or in the loss: error."""
    out: list[Finding] = []
    steps = frames.steps
    skipped = set(steps.filter(pl.col("skipped").fill_null(False))["step"].to_list())
    grad_bad = frames.grad.filter(pl.col("nonfinite") > 0)["step"].unique().sort().to_list()
    norm_bad = steps.filter(~pl.col("grad_norm").is_finite())["step"].to_list()
    bad = sorted({int(s) for s in grad_bad + norm_bad} - skipped)
    if bad:
        first = bad[0]
        tensor, n_tensors = origin_tensor(frames, first)
        where = (
            f" in {tensor} (the most output-side of {n_tensors} non-finite tensors)"
            if tensor
            else ""
        )
        out.append(
            make(
                frames.run_id,
                "nonfinite",
                Kind.NONFINITE,
                Severity.ERROR,
                f"Gradients became non-finite at step {first}{where}; {len(bad)} steps affected "
                "and the optimizer applied them.",
                "Look at the forward pass of the origin tensor's layer at that step "
                "(log/exp/division by ~0, bad inputs); lower the learning rate, add gradient "
                "clipping, or use a GradScaler under fp16.",
                tensor=tensor,
                steps=(first, bad[-1]),
                first_step=first,
                steps_affected=len(bad),
                tensors_nonfinite=n_tensors,
            )
        )
    step_arr, loss = frames.loss(cfg.loss_name)
    bad_loss = step_arr[~np.isfinite(loss)]
    if len(bad_loss):
        out.append(
            make(
                frames.run_id,
                "nonfinite",
                Kind.NONFINITE,
                Severity.ERROR,
                f"The loss '{cfg.loss_name}' became non-finite at step {int(bad_loss[0])} "
                f"({len(bad_loss)} of {len(loss)} logged values).",
                "Check the inputs and the loss computation at that step; lower the learning rate "
                "or clip gradients if the gradients exploded just before.",
                steps=(int(bad_loss[0]), int(bad_loss[-1])),
                first_step=int(bad_loss[0]),
                values_nonfinite=len(bad_loss),
            )
        )
    return out
