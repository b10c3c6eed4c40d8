"""What a report shows, as data: a run's or a batch's sections, charts and findings.

Built from an analysis result (saved or fresh) and the run's Parquet; rendered by the templates.
Nothing here is markup: strings are plain text, figures are plotly dicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradlog.analysis import AnalysisConfig, Finding, Kind, RunResult
from gradlog.report import data, figures
from gradlog.report.data import RunSource, Series
from gradlog.report.figures import Figure, Mark

CHART_FOR_KIND: dict[Kind, str] = {
    Kind.NONFINITE: "flow",
    Kind.EXPLODING: "flow",
    Kind.VANISHING: "flow",
    Kind.DEAD: "flow",
    Kind.FROZEN: "flow",
    Kind.SPIKE: "curves",
    Kind.LR_TOO_HIGH: "ratio",
    Kind.LR_TOO_LOW: "ratio",
    Kind.ADAM_EPS: "ratio",
    Kind.WEIGHT_DECAY: "ratio",
    Kind.PRECISION: "hist",
    Kind.PLATEAU: "convergence",
    Kind.DIVERGENCE: "curves",
    Kind.OSCILLATION: "curves",
    Kind.CLIPPING: "curves",
    Kind.WARMUP: "curves",
    Kind.BATCH_SIZE: "curves",
    Kind.DATA: "curves",
    Kind.SWEEP: "sweep",
}
"""Which chart shows the evidence of a finding of each kind (chart ids of the run page)."""

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Chart:
    """One chart section: an id (for links), a heading, a caption and the figure (or why not)."""

    id: str
    title: str
    caption: str
    figure: Figure | None
    missing: str = ""


@dataclass
class FindingView:
    """A finding with the chart that shows it."""

    finding: Finding
    chart: str
    index: int

    @property
    def severity(self) -> str:
        return self.finding.severity.value


@dataclass
class RunReport:
    """Everything a run page shows."""

    run_id: str
    name: str
    status: str
    steps: int
    partial: bool
    meta: dict[str, Any]
    config: dict[str, Any]
    problems: list[str]
    findings: list[FindingView]
    hints: list[FindingView]
    charts: list[Chart]
    convergence: dict[str, Any] | None
    final_loss: float | None = None
    projected_loss: float | None = None
    loss_series: Series | None = None
    norm_series: Series | None = None

    @property
    def duration_s(self) -> float | None:
        start = self.meta.get("start_time")
        end = self.meta.get("end_time") or self.meta.get("heartbeat")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            return max(0.0, float(end) - float(start))
        return None

    @property
    def worst(self) -> str | None:
        sev = [f.severity for f in self.findings]
        return min(sev, key=lambda s: SEVERITY_ORDER[s]) if sev else None

    def chart(self, chart_id: str) -> Chart | None:
        return next((c for c in self.charts if c.id == chart_id), None)


@dataclass
class RunRow:
    """A run in the batch table."""

    report: RunReport
    link: str
    hyper: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchReport:
    """Everything a batch page shows."""

    rows: list[RunRow]
    hyper_keys: list[str]
    charts: list[Chart]
    findings: list[Finding]


def _sort_key(f: Finding) -> tuple[int, int, str]:
    start = f.step_start if f.step_start is not None else -1
    return (SEVERITY_ORDER.get(f.severity.value, 3), start, f.detector)


def _chart_for(f: Finding) -> str:
    if f.kind is Kind.SPIKE and f.tensor is not None:
        return "flow"
    return CHART_FOR_KIND.get(f.kind, "curves")


def _marks(views: list[FindingView], chart: str) -> list[Mark]:
    out = []
    for v in views:
        f = v.finding
        if v.chart != chart or (f.step_start is None and f.step_end is None):
            continue
        a = f.step_start if f.step_start is not None else f.step_end
        b = f.step_end if f.step_end is not None else f.step_start
        out.append(Mark(float(a or 0), float(b or 0), v.severity))
    return out


def _final_loss(loss: Series | None, conv: dict[str, Any] | None) -> float | None:
    """The analysis's final loss (median of the last 5%: one batch's loss is noise), else the
    last logged value."""
    final = (conv or {}).get("final_loss")
    if isinstance(final, (int, float)) and not isinstance(final, bool):
        return float(final)
    return _final(loss)


def _final(s: Series | None) -> float | None:
    if s is None or not len(s):
        return None
    finite = s.y[np.isfinite(s.y)]
    return float(finite[-1]) if len(finite) else math.nan


def split_scalars(
    scalars: dict[str, Series], loss_name: str
) -> tuple[Series | None, dict[str, Series], Series | None, dict[str, Series]]:
    """(loss, learning rates, pre-clip grad norm, other scalars) from all logged scalars."""
    loss = scalars.get(loss_name)
    lrs = {k: v for k, v in scalars.items() if k.startswith("lr/")}
    preclip = scalars.get("grad_norm_preclip")
    rest = {
        k: v
        for k, v in scalars.items()
        if k != loss_name and k not in lrs and k != "grad_norm_preclip"
    }
    return loss, lrs, preclip, rest


def build_run_report(
    src: RunSource, result: RunResult, config: AnalysisConfig | None = None
) -> RunReport:
    """Read what the charts need from the run and put it next to its analysis."""
    cfg = config or AnalysisConfig()
    ordered = sorted(result.findings, key=_sort_key)
    views = [FindingView(f, _chart_for(f), i) for i, f in enumerate(ordered)]
    findings = [v for v in views if not v.finding.detector.startswith("hint.")]
    hints = [v for v in views if v.finding.detector.startswith("hint.")]
    for v in hints:
        v.chart = "convergence"

    scalars = data.scalar_series(src)
    steps = data.step_series(src)
    loss, lrs, preclip, rest = split_scalars(scalars, cfg.loss_name)
    xs = [s.x for s in (loss, steps.get("grad_norm")) if s is not None and len(s)]
    span = float(max(x[-1] for x in xs) - min(x[0] for x in xs)) if xs else 1.0

    charts: list[Chart] = []
    curves = figures.training_curves(
        loss, lrs, steps.get("grad_norm"), preclip, _marks(views, "curves"), span
    )
    charts.append(
        Chart(
            "curves",
            "Training curves",
            "Loss, learning rate and the global L2 norm of the gradients the optimizer saw, "
            "per optimizer step. Shaded bands mark the steps of findings. Long runs are drawn as "
            "a min/max envelope per bucket of steps, so spikes stay visible.",
            curves,
            "" if curves else "No loss, learning rate or gradient norm was recorded.",
        )
    )
    tv = data.tensor_views(src)
    matrix = tv.matrix
    flow = figures.gradient_flow(matrix, _marks(views, "flow"), span) if matrix else None
    charts.append(
        Chart(
            "flow",
            "Gradient flow",
            "L2 norm of each tensor's gradient over steps, on a log colour scale, tensors in "
            "model definition order (input side at the top). Vanishing gradients show as dark "
            "rows, exploding ones as bright columns or rows, dead tensors (zero gradient) as grey; "
            "red crosses mark NaN/Inf gradient values.",
            flow,
            "" if flow else "No per-tensor gradient statistics were recorded.",
        )
    )
    ratio_fig = figures.update_ratio(
        tv.ratios,
        tv.ndim,
        (cfg.update_ratio_low, cfg.update_ratio_high),
        cfg.update_ratio_target,
    )
    charts.append(
        Chart(
            "ratio",
            "Update-to-weight ratio",
            f"Norm of each optimizer update over the norm of the weights it changed. The shaded "
            f"band ({cfg.update_ratio_low:g} to {cfg.update_ratio_high:g}) is the range the "
            f"analysis treats as healthy; about {cfg.update_ratio_target:g} is the usual rule "
            f"of thumb. Far below: the tensor barely learns; far above: the learning rate is "
            f"too high for it. Biases and norm layers start hidden (click the legend).",
            ratio_fig,
            ""
            if ratio_fig
            else "Parameter and update statistics were not recorded (Recorder params=/updates=).",
        )
    )
    hist = data.exponent_histogram(src)
    shift = data.loss_scale_shift(steps)
    hist_fig = figures.exponent_histogram(hist, shift) if hist else None
    charts.append(
        Chart(
            "hist",
            "Gradient exponents and number formats",
            "Share of gradient values in each power-of-two bucket over time, all tensors "
            "together; the buttons switch to one column per tensor over the whole run, to see "
            "which tensors hold the values near a limit. Values below a format's smallest "
            "subnormal flush to zero in that format; values above its largest overflow to inf. "
            "bf16 shares fp32's exponent range, so its lines appear only when values come near "
            "them.",
            hist_fig,
            "" if hist_fig else "No gradient exponent histograms were recorded (Recorder hists=).",
        )
    )
    conv_fig = figures.convergence(loss, result.convergence)
    charts.append(
        Chart(
            "convergence",
            "Convergence",
            "The loss with the fitted trend (the model with the lower AIC), extended to the "
            "projection step; the diamond is the projected loss with its 95% band.",
            conv_fig,
            "" if conv_fig else "Too few loss values to fit a trend.",
        )
    )
    other = figures.other_scalars(rest)
    if other:
        charts.append(Chart("scalars", "Other logged scalars", "", other))

    conv = result.convergence or {}
    projected = conv.get("projected_loss")
    return RunReport(
        run_id=result.run_id or str(src.meta.get("run_id", src.path.name)),
        name=result.name or str(src.meta.get("name", "")),
        status=result.status or src.status,
        steps=result.steps,
        partial=result.partial,
        meta=src.meta,
        config=dict(src.meta.get("config") or result.config or {}),
        problems=list(result.problems),
        findings=findings,
        hints=hints,
        charts=charts,
        convergence=result.convergence,
        final_loss=_final_loss(loss, result.convergence),
        projected_loss=float(projected) if isinstance(projected, (int, float)) else None,
        loss_series=loss,
        norm_series=steps.get("grad_norm"),
    )


def varying_keys(configs: list[dict[str, Any]], limit: int = 6) -> list[str]:
    """Hyperparameters whose values differ between runs (else the first few shared ones)."""
    keys: list[str] = []
    for c in configs:
        keys += [str(k) for k in c if str(k) not in keys]
    varying = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1 and len(configs) > 1]
    return (varying or keys)[:limit]
