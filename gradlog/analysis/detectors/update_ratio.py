"""Update-to-weight ratio |dtheta|/|theta| per tensor and for the model, against the ~1e-3 band."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.detectors.spikes import loss_spikes
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.phases import healthy_loss, phases
from gradlog.analysis.registry import detector
from gradlog.analysis.robust import theil_sen, window_len


def _scale_words(factor: float) -> str:
    """'Lower the learning rate about 20x' for a factor 0.05; 'Raise ... about 3x' for 3."""
    if factor < 1:
        return f"Lower the learning rate about {1 / factor:.2g}x"
    return f"Raise the learning rate about {factor:.2g}x"


def _lr_text(frames: RunFrames, peak: float | None, factor: float) -> str:
    """The suggested value against the configured (peak) learning rate and its schedule."""
    if not peak:
        return ""
    lr = frames.scalar("lr/0")["value"].drop_nans()
    low = float(lr.min()) if len(lr) else peak  # type: ignore[arg-type]
    scheduled = len(lr) > 1 and low < peak / 1.5
    return (
        f" (peak lr {peak * factor:.3g} instead of {peak:.3g}"
        + (", the whole schedule scaled alike" if scheduled else "")
        + ")"
    )


def _closure(frames: RunFrames) -> str:
    """The optimizer's class when it steps with a closure (quasi-Newton), else ''."""
    opt = frames.run.meta.get("optimizer")
    cls = str(opt.get("class", "")) if isinstance(opt, dict) else ""
    return cls if cls.lower() in {"lbfgs"} else ""


def _clip_share(frames: RunFrames) -> float | None:
    """Share of steps on which gradient clipping fired (None: the run did not clip)."""
    pre = frames.scalar("grad_norm_preclip")
    if pre.is_empty():
        return None
    j = pre.join(frames.steps.select("step", "grad_norm"), on="step", how="left")
    x, post = j["value"].to_numpy(), j["grad_norm"].to_numpy().astype(np.float64)
    ok = np.isfinite(x) & np.isfinite(post)
    return float(np.mean(x[ok] > post[ok] * (1 + 1e-3))) if ok.any() else None


def high_symptoms(frames: RunFrames, cfg: AnalysisConfig) -> list[str]:
    """What in the loss says the learning rate is too high: the run went non-finite or
    diverged, the loss oscillates step to step, or it spiked repeatedly."""
    out: list[str] = []
    ph = phases(frames, cfg)
    if ph.broken:
        what = {
            "nonfinite gradients": "the gradients went non-finite",
            "nonfinite loss": "the loss went non-finite",
            "divergence": "the loss diverged",
        }[ph.reason]
        out.append(f"{what} at step {ph.healthy_end}")
    _, loss = healthy_loss(frames, cfg)
    if len(loss) >= 2 * cfg.min_window:
        tw = window_len(len(loss), cfg.plateau_window_frac, 2 * cfg.min_window)
        d = np.diff(loss[-tw:])
        if len(d) > 4 and np.std(d) > 0:
            ac = float(np.corrcoef(d[:-1], d[1:])[0, 1])
            amp = float(np.median(np.abs(d))) / max(abs(float(np.median(loss[-tw:]))), 1e-12)
            if ac < cfg.oscillation_autocorr and amp > cfg.oscillation_rel_amp:
                out.append(f"the loss oscillates step to step (lag-1 autocorrelation {ac:.2f})")
        spikes = len(loss_spikes(frames, cfg))
        if spikes and spikes >= cfg.lr_symptom_spike_share * len(loss):
            out.append(f"the loss spiked {spikes} times")
    return out


def low_symptoms(
    frames: RunFrames, cfg: AnalysisConfig, *, still_falling: bool = True
) -> list[str]:
    """What in the loss says the learning rate is too low: it barely moved, or (with
    ``still_falling``) it is still falling slowly and steadily at the end (not converged, not
    noisy)."""
    step, loss = healthy_loss(frames, cfg)
    if len(loss) < 2 * cfg.min_window or phases(frames, cfg).broken:
        return []
    tw = window_len(len(loss), cfg.plateau_window_frac, 2 * cfg.min_window)
    w = window_len(len(loss), cfg.window_frac, cfg.min_window)
    slope, _lo, hi = theil_sen(step[-tw:].astype(np.float64), loss[-tw:])
    end = float(np.median(loss[-w:]))
    drop = -slope * float(step[-1] - step[-tw]) / max(abs(end), 1e-12)
    progress = (float(loss[0]) - end) / (abs(float(loss[0])) + 1e-12)
    if progress < cfg.plateau_min_progress:
        return [f"the loss barely moved ({progress:.1%} in the whole run)"]
    if still_falling and not np.isnan(slope) and hi < 0 and drop >= cfg.plateau_rel:
        return [
            f"the loss is still falling steadily at the end ({drop:.1%} over the last {tw} "
            "logged steps)"
        ]
    return []


def weight_ratios(frames: RunFrames, cfg: AnalysisConfig | None = None) -> pl.DataFrame:
    """(step, tensor, ratio) of the weight tensors (ndim >= 2; all tensors if there are none)
    at finite, positive ratios, before the first applied non-finite gradient (the weights may
    be NaN from there) and not at steps the GradScaler skipped."""
    u = frames.update.filter(pl.col("ratio").is_finite() & (pl.col("ratio") > 0))
    bad_from = phases(frames, cfg or AnalysisConfig()).healthy_end
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
    u = weight_ratios(frames, cfg)
    if u.is_empty():
        return []
    per = u.group_by("tensor").agg(
        pl.col("ratio").median().alias("med"),
        pl.len().alias("n"),
        pl.col("step").min().alias("s0"),
        pl.col("step").max().alias("s1"),
    )
    from gradlog.analysis.summary import peak_lr  # (summary imports this module)

    lr = peak_lr(frames)
    out: list[Finding] = []
    model = float(per["med"].median())  # type: ignore[arg-type]
    s0, s1 = int(per["s0"].min()), int(per["s1"].max())  # type: ignore[arg-type]
    factor = cfg.update_ratio_target / model
    lr_text = _lr_text(frames, lr, factor)
    closure = _closure(frames)
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
            hint = f"{_scale_words(factor)}{lr_text}."
        symptoms = high_symptoms(frames, cfg) if high else low_symptoms(frames, cfg)
        clip = _clip_share(frames)
        if closure:
            message += (
                f" This is a closure optimizer ({closure}): its steps are sized by a line "
                "search or curvature estimate, so the band (a rule of thumb for first-order "
                "steps) does not judge its learning rate."
            )
            hint = "Judge it by the loss (compare runs) rather than by the update ratio."
        elif symptoms:
            message += " The loss shows the matching symptom: " + "; ".join(symptoms) + "."
        else:
            message += (
                " The loss shows no "
                + (
                    "sign of a too-high rate (no oscillation, spikes or divergence)"
                    if high
                    else "sign of a too-low rate (no slow, steady descent)"
                )
                + ", so this is a note, not a problem."
            )
            if not split:
                hint = f"Nothing to change while the loss behaves; if it does not, try: {hint}"
        if clip is not None and clip > cfg.clip_fire_high and not closure:
            message += (
                f" Clipping fired on {clip:.0%} of steps, so the effective step is about lr x "
                "the clipping threshold; that is what the ratio measures."
            )
        warn = not (split or borderline or closure) and bool(symptoms)
        out.append(
            make(
                frames.run_id,
                "update_ratio",
                Kind.LR_TOO_HIGH if high else Kind.LR_TOO_LOW,
                Severity.WARNING if warn else Severity.INFO,
                message,
                hint,
                steps=(s0, s1),
                ratio_median=model,
                suggested_factor=factor,
                layer_spread_decades=math.log10(hi / lo),
                layers_disagree=split,
                borderline=borderline,
                symptoms=len(symptoms),
                extra={"lr": lr, "suggested_lr": lr * factor}
                if lr and not closure and not split
                else None,
            )
        )
    for kind, cond, word in (
        (Kind.LR_TOO_HIGH, pl.col("med") > cfg.update_ratio_high, "Lower"),
        (Kind.LR_TOO_LOW, pl.col("med") < cfg.update_ratio_low, "Raise"),
    ):
        bad = per.filter(cond).sort("med", descending=kind is Kind.LR_TOO_HIGH)
        if closure or (kind is Kind.LR_TOO_LOW and high_symptoms(frames, cfg)):
            continue  # no per-layer "raise" beside a run that shows a too-high rate
        if not (
            high_symptoms(frames, cfg) if kind is Kind.LR_TOO_HIGH else low_symptoms(frames, cfg)
        ):
            continue  # a loss that behaves: a per-layer rule of thumb is not worth acting on
        for row in bad.head(cfg.max_tensor_findings).iter_rows(named=True):
            f = cfg.update_ratio_target / row["med"]
            out.append(
                make(
                    frames.run_id,
                    "update_ratio",
                    kind,
                    Severity.INFO,
                    f"Updates of {row['tensor']} are {row['med']:.2g} of its weights per step.",
                    f"{word} this layer's learning rate about {max(f, 1 / f):.2g}x (a separate "
                    "param group).",
                    tensor=row["tensor"],
                    steps=(row["s0"], row["s1"]),
                    ratio_median=row["med"],
                    suggested_factor=f,
                    tensors_affected=bad.height,
                )
            )
    return out
