"""Update-to-weight ratio |dtheta|/|theta| per tensor and for the model, against the ~1e-3 band."""

from __future__ import annotations

import math

import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector


def _lr(frames: RunFrames) -> float | None:
    lr = frames.scalar("lr/0")["value"].drop_nans()
    return float(lr.median()) if len(lr) else None  # type: ignore[arg-type]


def weight_ratios(frames: RunFrames) -> pl.DataFrame:
    """(step, tensor, ratio) of the weight tensors (ndim >= 2; all tensors if there are none)
    at finite, positive ratios, before the first applied non-finite gradient (the weights may
    be NaN from there) and not at steps the GradScaler skipped."""
    u = frames.update.filter(pl.col("ratio").is_finite() & (pl.col("ratio") > 0))
    bad_from = frames.first_nonfinite_step()
    if bad_from is not None:
        u = u.filter(pl.col("step") < bad_from)
    skipped = frames.steps.filter(pl.col("skipped").fill_null(False))["step"]
    u = u.filter(~pl.col("step").is_in(skipped.implode()))
    weights = frames.run.catalogue.filter(pl.col("ndim") >= 2)["tensor"]
    if len(weights):  # biases and norm scales move relatively more by design: judge the weights
        u = u.filter(pl.col("tensor").is_in(weights.implode()))
    return u


def ratio_profile(frames: RunFrames) -> dict[str, float | int] | None:
    """The model's update ratio: ``median`` (over tensors of each tensor's median, as the
    detector judges it), ``peak`` (the largest per-step median over tensors) and ``peak_step``;
    None when updates were not recorded."""
    u = weight_ratios(frames)
    if u.is_empty():
        return None
    per_step = u.group_by("step").agg(pl.col("ratio").median()).sort("step")
    i = int(per_step["ratio"].arg_max() or 0)
    median = u.group_by("tensor").agg(pl.col("ratio").median())["ratio"].median()
    return {
        "median": float(median),  # type: ignore[arg-type]
        "peak": float(per_step["ratio"][i]),
        "peak_step": int(per_step["step"][i]),
    }


@detector("update_ratio")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Median ratio outside [update_ratio_low, update_ratio_high]: lr too low/high.

    Steps from the first applied non-finite gradient on are left out (the weights may be NaN
    there). When the layers disagree so much that the suggested global factor would push some
    weight tensor out of the band on the other side, the model-level finding is only info: one
    learning rate cannot fix a layer imbalance (e.g. vanishing gradients). So is a ratio within
    ``update_ratio_margin`` of the band edge (borderline, e.g. Adam's first steps at lr 1e-3).
    """
    u = weight_ratios(frames)
    if u.is_empty():
        return []
    per = u.group_by("tensor").agg(
        pl.col("ratio").median().alias("med"),
        pl.len().alias("n"),
        pl.col("step").min().alias("s0"),
        pl.col("step").max().alias("s1"),
    )
    lr = _lr(frames)
    out: list[Finding] = []
    model = float(per["med"].median())  # type: ignore[arg-type]
    s0, s1 = int(per["s0"].min()), int(per["s1"].max())  # type: ignore[arg-type]
    factor = cfg.update_ratio_target / model
    lr_text = f" (about {lr * factor:.3g} instead of {lr:.3g})" if lr else ""
    if model > cfg.update_ratio_high or model < cfg.update_ratio_low:
        high = model > cfg.update_ratio_high
        ranked = per.sort("med")
        lo_t, lo = str(ranked["tensor"][0]), float(ranked["med"][0])
        hi_t, hi = str(ranked["tensor"][-1]), float(ranked["med"][-1])
        # the tensor a global factor would push furthest the other way, and where it would land
        other_t, landed = (lo_t, lo * factor) if high else (hi_t, hi * factor)
        split = landed < cfg.update_ratio_low if high else landed > cfg.update_ratio_high
        band = f"{cfg.update_ratio_low:g}-{cfg.update_ratio_high:g}"
        edge = cfg.update_ratio_high if high else cfg.update_ratio_low
        borderline = max(model / edge, edge / model) < cfg.update_ratio_margin
        if split:
            message = (
                f"Updates are {model:.2g} of the weights per step (median over tensors), but the "
                f"layers disagree by {math.log10(hi / lo):.1f} decades ({lo_t} {lo:.2g}, {hi_t} "
                f"{hi:.2g}): scaling the learning rate by {factor:.2g}x would put {other_t} at "
                f"{landed:.2g}, outside the band ({band}) on the other side."
            )
            hint = (
                "One learning rate cannot fix a layer imbalance: fix the gradient flow first "
                "(see the vanishing/exploding findings: normalisation, residual connections, "
                "initialisation), or give the outlying layers their own param groups."
            )
        else:
            message = (
                f"Updates are {model:.2g} of the weights per step (median over tensors); the "
                f"healthy band is about {band}"
                + (", so this is borderline." if borderline else ".")
            )
            hint = (
                f"{'Lower' if high else 'Raise'} the learning rate by about {factor:.2g}x{lr_text}."
            )
        out.append(
            make(
                frames.run_id,
                "update_ratio",
                Kind.LR_TOO_HIGH if high else Kind.LR_TOO_LOW,
                Severity.INFO if split or borderline else Severity.WARNING,
                message,
                hint,
                steps=(s0, s1),
                ratio_median=model,
                suggested_factor=factor,
                layer_spread_decades=math.log10(hi / lo),
                layers_disagree=split,
                borderline=borderline,
                extra={"lr": lr, "suggested_lr": lr * factor} if lr else None,
            )
        )
    for kind, cond, word in (
        (Kind.LR_TOO_HIGH, pl.col("med") > cfg.update_ratio_high, "Lower"),
        (Kind.LR_TOO_LOW, pl.col("med") < cfg.update_ratio_low, "Raise"),
    ):
        bad = per.filter(cond).sort("med", descending=kind is Kind.LR_TOO_HIGH)
        for row in bad.head(cfg.max_tensor_findings).iter_rows(named=True):
            f = cfg.update_ratio_target / row["med"]
            out.append(
                make(
                    frames.run_id,
                    "update_ratio",
                    kind,
                    Severity.INFO,
                    f"Updates of {row['tensor']} are {row['med']:.2g} of its weights per step.",
                    f"{word} this layer's learning rate by about {f:.2g}x (a separate param "
                    "group).",
                    tensor=row["tensor"],
                    steps=(row["s0"], row["s1"]),
                    ratio_median=row["med"],
                    suggested_factor=f,
                    tensors_affected=bad.height,
                )
            )
    return out
