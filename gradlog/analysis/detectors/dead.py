"""Dead and frozen tensors: zero or missing gradients, gradients never applied, dying units."""

from __future__ import annotations

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.phases import phases
from gradlog.analysis.registry import detector
from gradlog.analysis.robust import window_len

_PER_TENSOR = {
    "tensor": pl.Categorical,  # as in the frames, to join with them
    "s0": pl.Int64,
    "s1": pl.Int64,
    "n": pl.Int64,
    "all_zero": pl.Boolean,
    "z_min": pl.Float64,
    "early": pl.Float64,
    "late": pl.Float64,
}


@detector("dead")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Always-zero / never-present gradients; grads outside the optimizer; never-updated params."""
    out: list[Finding] = []
    cat = frames.run.catalogue
    g = frames.grad
    if g.is_empty():
        return out
    rows = []
    end = phases(frames, cfg).healthy_end  # dying units are judged before a run broke
    for name, v in frames.by_tensor("step", "zero_frac"):
        z, s = v["zero_frac"], v["step"]
        zh = z[s < end] if end is not None else z
        w = window_len(len(zh), cfg.window_frac, cfg.min_window)
        rows.append(
            (
                name,
                int(s.min()),
                int(s.max()),
                len(zh),
                bool(np.all(z >= 1.0)),
                float(zh.min()) if len(zh) else 1.0,
                float(np.median(zh[:w])) if len(zh) else 0.0,
                float(np.median(zh[-w:])) if len(zh) else 0.0,
            )
        )
    per = pl.DataFrame(rows, schema=_PER_TENSOR, orient="row")
    seen = set(per["tensor"].to_list())
    s0, s1 = int(g["step"].min()), int(g["step"].max())  # type: ignore[arg-type]
    trainable = cat.filter(pl.col("requires_grad"))
    cap = cfg.max_tensor_findings
    missing = [
        t
        for t, opt in zip(trainable["tensor"], trainable["in_optimizer"], strict=True)
        if t not in seen and opt
    ]
    for t in missing[:cap]:
        out.append(
            make(
                frames.run_id,
                "dead",
                Kind.DEAD,
                Severity.WARNING,
                f"{t} never received a gradient (its .grad was always None).",
                "The parameter is not used in the forward pass or is detached; remove it or fix "
                "the graph (find_unused_parameters under DDP hides this).",
                tensor=t,
                steps=(s0, s1),
                tensors_affected=len(missing),
            )
        )
    zero = per.filter(pl.col("all_zero")).sort("tensor")
    for row in zero.head(cap).iter_rows(named=True):
        out.append(
            make(
                frames.run_id,
                "dead",
                Kind.DEAD,
                Severity.WARNING,
                f"The gradient of {row['tensor']} was exactly zero at all {row['n']} recorded "
                "steps.",
                "The layer's output does not affect the loss (dead units, a zero-multiplied "
                "branch, a saturated activation); check its inputs and activation.",
                tensor=row["tensor"],
                steps=(row["s0"], row["s1"]),
                tensors_affected=zero.height,
            )
        )
    not_opt = cat.filter(
        ~pl.col("in_optimizer") & pl.col("requires_grad") & pl.col("tensor").is_in(list(seen))
    )
    for t in not_opt["tensor"].to_list()[:cap]:
        out.append(
            make(
                frames.run_id,
                "dead",
                Kind.FROZEN,
                Severity.WARNING,
                f"{t} gets gradients but is not in any optimizer param group, so it never changes.",
                "Add it to the optimizer, or set requires_grad=False to save the backward work.",
                tensor=t,
                steps=(s0, s1),
                tensors_affected=not_opt.height,
            )
        )
    if not frames.update.is_empty():
        upd = frames.update.group_by("tensor").agg((pl.col("norm") == 0).all().alias("never"))
        never = upd.filter(pl.col("never")).join(per.filter(~pl.col("all_zero")), on="tensor")
        for t in never["tensor"].sort().to_list()[:cap]:
            out.append(
                make(
                    frames.run_id,
                    "dead",
                    Kind.FROZEN,
                    Severity.WARNING,
                    f"{t} has nonzero gradients but its parameter never changed.",
                    "Its param group probably has lr=0 (or the step is skipped); check the "
                    "optimizer groups and the scheduler.",
                    tensor=t,
                    steps=(s0, s1),
                    tensors_affected=never.height,
                )
            )
    dying = per.filter(
        (pl.col("n") >= 2 * cfg.min_window)
        & (pl.col("z_min") < 1.0)
        & (pl.col("late") >= cfg.dying_zero_frac)
        & (pl.col("late") - pl.col("early") >= cfg.dying_increase)
    )
    acts = activations(frames)
    for row in dying.iter_rows(named=True):
        tensor, early, late = row["tensor"], float(row["early"]), float(row["late"])
        act = acts.get(str(tensor))
        relu = act in ZERO_GRADIENT_ACTIVATIONS
        out.append(
            make(
                frames.run_id,
                "dead",
                Kind.DEAD,
                Severity.WARNING if relu else Severity.INFO,
                f"The zero fraction of {tensor}'s gradient grew from {early:.0%} to {late:.0%}"
                + (f": the {act} units it feeds are dying." if relu else " (zero gradients)."),
                "Dying ReLUs: lower the learning rate, use LeakyReLU/GELU, or check the "
                "initialisation and bias of the preceding layer."
                if relu
                else "Exact zeros mean parts of this tensor no longer affect the loss (inputs "
                "that are zero or absent from the batches, masked positions, a saturated "
                "activation"
                + (f" after it: {act}" if act else "")
                + "); check what feeds this layer before changing the learning rate.",
                tensor=str(tensor),
                steps=(int(row["s0"]), int(row["s1"])),
                zero_frac_early=early,
                zero_frac_late=late,
                activation=act if act is not None else "unknown",
            )
        )
    return out


ZERO_GRADIENT_ACTIVATIONS = frozenset({"relu", "relu6", "hardtanh"})
"""Activations with a flat zero-gradient region, whose units can die (the recorder's labels)."""


def activations(frames: RunFrames) -> dict[str, str | None]:
    """Each tensor's activation as the recorder's catalogue noted it (None: not recorded)."""
    out: dict[str, str | None] = {}
    for t in frames.run.meta.get("tensors") or []:
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            act = t.get("activation")
            out[t["name"]] = act if isinstance(act, str) else None
    return out
