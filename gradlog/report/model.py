"""What a report shows, as data: a run's or a batch's sections, charts and findings.

Built from analysis results only (:mod:`gradlog.analysis.result`): nothing here reads a run or
derives a statistic; it picks what to show and in which order. Nothing here is markup: strings are
plain text, figures are plotly dicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from gradlog.analysis.charts import Line
from gradlog.analysis.findings import Finding, Kind, Severity
from gradlog.analysis.result import BatchResult, RunResult
from gradlog.analysis.trend import Convergence
from gradlog.report import figures
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

FIXED_COLUMNS = ("run", "status", "steps", "final loss", "projected loss", "worst finding")
"""Columns of the batch table; a hyperparameter of the same name is shown as ``config: name``."""


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

    result: RunResult
    findings: list[FindingView]
    hints: list[FindingView]
    charts: list[Chart]

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def name(self) -> str:
        return self.result.name

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def steps(self) -> int:
        return self.result.steps

    @property
    def partial(self) -> bool:
        return self.result.partial

    @property
    def problems(self) -> list[str]:
        return self.result.problems

    @property
    def meta(self) -> dict[str, Any]:
        return self.result.meta

    @property
    def config(self) -> dict[str, Any]:
        return self.result.config

    def _meta_dict(self, key: str) -> dict[str, Any]:
        value = self.meta.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def optimizer_class(self) -> Any:
        """The optimizer's class name as meta.json says (any JSON value; shown as text)."""
        return self._meta_dict("optimizer").get("class", "—")

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's param groups that are objects (anything else in meta.json is left out:
        the page shows what it can, never fails on it)."""
        groups = self._meta_dict("optimizer").get("param_groups")
        return [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []

    @property
    def versions(self) -> dict[str, Any]:
        return self._meta_dict("versions")

    @property
    def tensor_count(self) -> int:
        tensors = self.meta.get("tensors")
        return len(tensors) if isinstance(tensors, list) else 0

    @property
    def convergence(self) -> Convergence | None:
        return self.result.convergence

    @property
    def final_loss(self) -> float | None:
        return self.result.final_loss

    @property
    def projected_loss(self) -> float | None:
        return self.result.projected_loss

    @property
    def failure(self) -> str:
        """How the run failed (the analysis' line, e.g. ``diverged at step 412 (loss
        non-finite); last finite loss 2.31 at step 411``), or ``""``: shown instead of a final
        or projected loss, which would be read over the failed steps."""
        c = self.result.convergence
        return c.failure if c is not None else ""

    @property
    def loss_window(self) -> str:
        """What the final loss is a median of, for its label."""
        c = self.result.convergence
        return f"median of the last {c.final_window} logged losses" if c else "final loss"

    @property
    def duration_s(self) -> float | None:
        start = self.meta.get("start_time")
        end = self.meta.get("end_time") or self.meta.get("heartbeat")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            return max(0.0, float(end) - float(start))
        return None

    @property
    def worst(self) -> FindingView | None:
        return self.findings[0] if self.findings else None

    def count(self, severity: str) -> int:
        return sum(1 for v in self.findings if v.severity == severity)

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

    def column(self, key: str) -> str:
        """A hyperparameter's column heading (prefixed where it clashes with a fixed one)."""
        return f"config: {key}" if key in FIXED_COLUMNS else key


def _sort_key(f: Finding) -> tuple[int, int, str]:
    start = f.step_start if f.step_start is not None else -1
    return (-f.severity.rank, start, f.detector)


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


def _span(*lines: Line | None) -> float:
    xs = [x for line in lines if line is not None for x in line.x if x is not None]
    return float(max(xs) - min(xs)) if xs else 1.0


def _checked(chart: Chart) -> Chart:
    """``chart`` if its figure is strict JSON (what the page embeds), else the chart without it,
    saying why: one odd value costs one chart, never the page."""
    if chart.figure is None:
        return chart
    try:
        json.dumps(chart.figure, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        why = str(exc)[:120]
        return replace(chart, figure=None, missing=f"This chart cannot be drawn ({why}).")
    return chart


def run_report(result: RunResult) -> RunReport:
    """The run page of ``result``."""
    ordered = sorted(result.findings, key=_sort_key)
    views = [FindingView(f, _chart_for(f), i) for i, f in enumerate(ordered)]
    findings = [v for v in views if not v.finding.detector.startswith("hint.")]
    hints = [v for v in views if v.finding.detector.startswith("hint.")]
    for v in hints:
        v.chart = "convergence"
    c = result.charts
    charts: list[Chart] = []
    span = _span(c.loss, c.grad_norm) if c else 1.0
    curves = (
        figures.training_curves(
            c.loss, c.lrs, c.grad_norm, c.preclip, _marks(views, "curves"), span
        )
        if c
        else None
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
    flow = figures.gradient_flow(c.flow, _marks(views, "flow"), span) if c and c.flow else None
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
    ratios = c.ratios if c else None
    ratio_fig = figures.update_ratio(ratios) if ratios else None
    band = (
        f"The shaded band ({ratios.band[0]:g} to {ratios.band[1]:g}) is the range the analysis "
        f"treats as healthy; about {ratios.target:g} is the usual rule of thumb. "
        if ratios
        else ""
    )
    charts.append(
        Chart(
            "ratio",
            "Update-to-weight ratio",
            "Norm of each optimizer update over the norm of the weights it changed. "
            f"{band}Far below: the tensor barely learns; far above: the learning rate is too high "
            "for it. Biases and norm layers start hidden (click the legend).",
            ratio_fig,
            ""
            if ratio_fig
            else "Parameter and update statistics were not recorded (Recorder params=/updates=).",
        )
    )
    hist_fig = figures.exponent_histogram(c.hist) if c and c.hist else None
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
    conv_fig = (
        figures.convergence(c.loss, c.fit, result.convergence) if c and c.loss is not None else None
    )
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
    other = figures.other_scalars(c.others) if c else None
    if other:
        charts.append(Chart("scalars", "Other logged scalars", "", other))
    return RunReport(result, findings, hints, [_checked(c) for c in charts])


def varying_keys(configs: list[dict[str, Any]], limit: int = 6) -> list[str]:
    """Hyperparameters whose values differ between runs (else the first few shared ones)."""
    keys: list[str] = []
    for c in configs:
        keys += [str(k) for k in c if str(k) not in keys]
    varying = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1 and len(configs) > 1]
    return (varying or keys)[:limit]


def _healthy(r: RunResult) -> bool:
    c = r.convergence
    bad = {Kind.DIVERGENCE, Kind.NONFINITE}
    failed = any(f.kind in bad and f.severity is Severity.ERROR for f in r.findings)
    return not failed and not (c is not None and c.failed)


def batch_charts(result: BatchResult) -> list[Chart]:
    """The batch page's overlays (loss, gradient norm) and one chart per recognised sweep."""
    loss = [
        (r.name or r.run_id, r.charts.loss, _healthy(r))
        for r in result.runs
        if r.charts and r.charts.loss and len(r.charts.loss)
    ]
    norm = [
        (r.name or r.run_id, r.charts.grad_norm, _healthy(r))
        for r in result.runs
        if r.charts and r.charts.grad_norm and len(r.charts.grad_norm)
    ]
    loss_fig = figures.overlay(loss, "Loss of every run", "loss")
    norm_fig = figures.overlay(norm, "Global gradient norm of every run", "gradient L2 norm", True)
    off = [name for name, _, ok in loss if not ok]
    charts = [
        Chart(
            "loss",
            "Loss",
            "Each run's loss over optimizer steps (min/max envelope). The y range covers the "
            "healthy runs"
            + (
                f"; runs that diverged or went NaN ({', '.join(off[:6])}) are dashed and may leave "
                "it."
                if off
                else "."
            ),
            loss_fig,
            "" if loss_fig else "No run logged a loss.",
        ),
        Chart(
            "norm",
            "Gradient norm",
            "Each run's global gradient L2 norm (log scale).",
            norm_fig,
            "" if norm_fig else "No run recorded gradient norms.",
        ),
    ]
    for i, s in enumerate(result.sweeps):
        title = f"Sweep over {s.key[:40]}" + (f" ({s.fixed[:60]})" if s.fixed else "")
        charts.append(Chart(f"sweep-{i}", title, s.caption, figures.sweep(s)))
    return [_checked(c) for c in charts]


def batch_report(result: BatchResult, links: list[str], reports: list[RunReport]) -> BatchReport:
    """The batch page: one row per run (linking its page), overlays, sweeps, batch findings."""
    rows = [
        RunRow(rep, link, dict(r.config))
        for r, rep, link in zip(result.runs, reports, links, strict=True)
    ]
    keys = varying_keys([r.hyper for r in rows])
    return BatchReport(rows, keys, batch_charts(result), list(result.batch_findings))


def finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
