"""Plotly figure definitions (plain ``{"data": [...], "layout": {...}}`` dicts) for the report.

Figures are data handed to plotly.js; every string from data in them (tensor, run and scalar
names, config keys, labels and model names from a saved result) goes through
:func:`gradlog.report.filters.plot_text`, because plotly renders a little HTML in labels and
fills ``%{...}`` in hover templates; the other strings here are this module's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gradlog.analysis.charts import (
    ExponentHistogram,
    FitCurve,
    Line,
    NormGrid,
    RatioChart,
    SweepChart,
)
from gradlog.analysis.trend import Convergence
from gradlog.report.filters import SEVERITY_COLOURS, num, plot_text

Figure = dict[str, Any]
Series = Line
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip


@dataclass(frozen=True)
class Mark:
    """A finding's step range drawn on a chart."""

    start: float
    end: float
    severity: str


def nums(
    a: npt.ArrayLike, decimals: int | None = None, digits: int | None = None
) -> list[float | None]:
    """A float array as a JSON list: non-finite values become null (a gap).

    ``decimals`` rounds to that many decimals, ``digits`` to that many significant digits (what
    a chart can show; it keeps a long run's report small and quick to parse). Whole numbers
    (steps) are written without a fraction.
    """
    arr = np.asarray(a, dtype=np.float64)
    if decimals is not None:
        arr = np.round(arr, decimals)
    finite = np.isfinite(arr)
    flat: list[Any]
    if (
        finite.all()
        and arr.size
        and bool((arr == np.round(arr)).all())
        and np.abs(arr).max() < 2**53
    ):
        flat = arr.astype(np.int64).reshape(-1).tolist()
    elif digits is not None:
        flat = [float(f"{v:.{digits}g}") for v in arr.reshape(-1).tolist()]
    else:
        flat = arr.reshape(-1).tolist()
    if not finite.all():
        for i in np.flatnonzero(~finite.reshape(-1)).tolist():
            flat[i] = None
    if arr.ndim == 1:
        return flat
    out: list[Any] = np.array(flat, dtype=object).reshape(arr.shape).tolist()
    return out


def _base_layout(title: str, height: int = 360) -> dict[str, Any]:
    return {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "margin": {"l": 70, "r": 30, "t": 50, "b": 50},
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "legend": {"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        "hovermode": "closest",
    }


def _axis(title: str, log: bool = False, **extra: Any) -> dict[str, Any]:
    ax: dict[str, Any] = {
        "title": {"text": title},
        "showgrid": True,
        "gridcolor": "#e6e6e6",
        "zeroline": False,
        "linecolor": "#999",
        "showline": True,
        "exponentformat": "power" if log else "SI",
    }
    if log:
        ax["type"] = "log"
    ax.update(extra)
    return ax


def mark_shapes(marks: Sequence[Mark], span: float, xref: str = "x") -> list[dict[str, Any]]:
    """Translucent bands over the steps of findings (at least 0.4% of the x span wide)."""
    out = []
    minw = max(span * 0.004, 0.5)
    for m in marks[:60]:
        a, b = m.start, m.end
        if b - a < minw:
            mid = (a + b) / 2
            a, b = mid - minw / 2, mid + minw / 2
        out.append(
            {
                "type": "rect",
                "xref": xref,
                "yref": "paper",
                "x0": a,
                "x1": b,
                "y0": 0,
                "y1": 1,
                "fillcolor": SEVERITY_COLOURS.get(m.severity, "#888"),
                "opacity": 0.15,
                "line": {"width": 0},
                "layer": "below",
            }
        )
    return out


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _positive(s: Line) -> bool:
    finite = s.finite_y()
    return bool(finite) and min(finite) > 0


def _wide_range(s: Line) -> bool:
    finite = s.finite_y()
    return _positive(s) and max(finite) / min(finite) > 100


def _line(s: Line, name: str, colour: str, **extra: Any) -> dict[str, Any]:
    trace: dict[str, Any] = {
        "type": "scattergl" if len(s) > 5000 else "scatter",
        "mode": "lines",
        "x": s.x,
        "y": s.y,
        "name": name,
        "line": {"color": colour, "width": 1.5},
    }
    trace.update(extra)
    return trace


def _lr_name(key: str, groups: int) -> str:
    """Legend of a learning rate: param groups are named only when there are several."""
    group = key.removeprefix("lr/")
    if groups == 1:
        return "learning rate"
    return (
        f"learning rate (group {group})"
        if group.isdigit()
        else f"learning rate ({plot_text(group, 20)})"
    )


def training_curves(  # noqa: PLR0917 - one argument per drawn series
    loss: Line | None,
    lrs: dict[str, Line],
    grad_norm: Line | None,
    preclip: Line | None,
    marks: Sequence[Mark],
    span: float,
) -> Figure | None:
    """Loss, learning rate and global gradient norm over steps, stacked, sharing the step axis."""
    rows: list[tuple[str, list[dict[str, Any]], bool]] = []
    if loss is not None:
        rows.append(("loss", [_line(loss, "loss", PALETTE[0])], _wide_range(loss)))
    if lrs:
        traces = [
            _line(s, _lr_name(k, len(lrs)), PALETTE[2 + i % 6])
            for i, (k, s) in enumerate(lrs.items())
        ]
        rows.append(("learning rate", traces, all(_positive(s) for s in lrs.values())))
    if grad_norm is not None or preclip is not None:
        traces = []
        if preclip is not None:
            traces.append(_line(preclip, "grad norm before clipping", PALETTE[1]))
        if grad_norm is not None:
            name = "grad norm after clipping" if preclip is not None else "global grad norm"
            traces.append(_line(grad_norm, name, PALETTE[3]))
        log = any(_positive(t) for t in (grad_norm, preclip) if t is not None)
        rows.append(("gradient L2 norm", traces, log))
    if not rows:
        return None
    n = len(rows)
    gap = 0.06
    h = (1 - gap * (n - 1)) / n
    layout = _base_layout("Loss, learning rate and global gradient norm", 180 + 170 * n)
    data: list[dict[str, Any]] = []
    for i, (title, traces, log) in enumerate(rows):
        ax = "" if i == 0 else str(i + 1)
        top = 1 - i * (h + gap)
        layout[f"yaxis{ax}"] = _axis(title, log, domain=[top - h, top])
        last = i == n - 1
        layout[f"xaxis{ax}"] = _axis(
            "optimizer step" if last else "",
            anchor=f"y{ax}",
            showticklabels=last,
            **({"matches": "x"} if i else {}),  # type: ignore[arg-type]
        )
        for t in traces:
            t["xaxis"], t["yaxis"] = f"x{ax}", f"y{ax}"
            data.append(t)
    layout["shapes"] = mark_shapes(marks, span)
    layout["hovermode"] = "x"
    layout["legend"]["y"] = 1.0
    return {"data": data, "layout": layout}


def other_scalars(series: dict[str, Line]) -> Figure | None:
    """User scalars other than loss and learning rates (accuracy, ...), one line each."""
    if not series:
        return None
    data = [
        _line(s, plot_text(name, 40), PALETTE[i % len(PALETTE)], mode="lines+markers")
        for i, (name, s) in enumerate(series.items())
    ]
    layout = _base_layout("Other logged scalars", 320)
    layout["xaxis"] = _axis("optimizer step")
    layout["yaxis"] = _axis(plot_text(next(iter(series)), 40) if len(series) == 1 else "value")
    layout["showlegend"] = True  # plotly hides a lone trace's legend: the name must show
    return {"data": data, "layout": layout}


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    step = max(1, math.ceil((hi - lo) / 8))
    vals = list(range(math.floor(lo), math.ceil(hi) + 1, step))
    return [float(v) for v in vals], [f"1e{v}" for v in vals]


def gradient_flow(m: NormGrid, marks: Sequence[Mark], span: float) -> Figure:
    """Tensors x steps heatmap of log10 gradient norms; dead (zero) cells grey, NaN/Inf marked."""
    norms = np.array(
        [[np.nan if v is None else v for v in row] for row in m.norms], dtype=np.float64
    ).reshape(len(m.tensors), len(m.bucket_starts))
    starts = np.array([np.nan if v is None else v for v in m.bucket_starts], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(norms)
    finite = z[np.isfinite(z)]
    lo = float(finite.min()) if len(finite) else -8.0
    hi = float(finite.max()) if len(finite) else 0.0
    if hi - lo < 1:
        lo, hi = lo - 0.5, hi + 0.5
    dead_level = lo - (hi - lo) * 0.04
    z = np.where(norms == 0, dead_level, z)  # zero norm: the grey bottom of the scale
    frac = (lo - dead_level) / (hi - dead_level)
    colours = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]
    scale: list[list[Any]] = [[0.0, "#9e9e9e"], [frac * 0.999, "#9e9e9e"]]
    scale += [[frac + (1 - frac) * i / 4, c] for i, c in enumerate(colours)]
    labels = [plot_text(t, 48) for t in m.tensors]
    tickvals, ticktext = _log_ticks(lo, hi)
    width = m.width
    data: list[dict[str, Any]] = [
        {
            "type": "heatmap",
            "x": nums(starts),
            "y": list(range(len(labels))),
            "z": nums(z, 3),
            "zmin": dead_level,
            "zmax": hi,
            "colorscale": scale,
            "colorbar": {
                "title": {"text": "grad L2 norm", "side": "right"},
                "tickvals": tickvals,
                "ticktext": ticktext,
            },
            "customdata": [[lab] * len(m.bucket_starts) for lab in labels]
            if len(labels) * len(m.bucket_starts) <= 20000
            else None,
            "hovertemplate": (
                ("%{customdata}<br>" if len(labels) * len(m.bucket_starts) <= 20000 else "")
                + ("step %{x}" if width == 1 else f"steps %{{x}}+{width - 1} (max)")
                + "<br>log10 norm %{z:.2f}<extra></extra>"
            ),
            "xgap": 0,
            "ygap": 0,
        }
    ]
    if m.nonfinite:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": nums(starts[[c for _, c in m.nonfinite]]),
                "y": [r for r, _ in m.nonfinite],
                "name": "NaN/Inf in gradient",
                "marker": {"symbol": "x", "color": "#ff1744", "size": 7},
                "hovertemplate": "NaN/Inf gradient values<br>step %{x}<extra></extra>",
            }
        )
    if data[0]["customdata"] is None:
        del data[0]["customdata"]
    height = int(min(1400, max(320, 120 + 16 * len(labels))))
    layout = _base_layout(
        "Gradient flow: L2 norm per tensor and step (log colour scale; grey = zero gradient)",
        height,
    )
    layout["margin"]["l"] = 20 + min(48, max(len(t) for t in m.tensors) if m.tensors else 10) * 6
    layout["xaxis"] = _axis(
        "optimizer step" + (f" (max over buckets of {width} steps)" if width > 1 else "")
    )
    layout["yaxis"] = _axis(
        "tensor (input side at top)",
        tickvals=list(range(len(labels))) if len(labels) <= 80 else None,
        ticktext=labels if len(labels) <= 80 else None,
        autorange="reversed",
        showgrid=False,
        automargin=True,
    )
    if len(labels) > 80:
        del layout["yaxis"]["tickvals"], layout["yaxis"]["ticktext"]
    layout["shapes"] = mark_shapes(marks, span)
    for s in layout["shapes"]:
        s["layer"] = "above"
        s["opacity"] = 0.0
        s["line"] = {"width": 2, "color": s["fillcolor"], "dash": "dot"}
    layout["showlegend"] = len(data) > 1
    return {"data": data, "layout": layout}


def update_ratio(chart: RatioChart) -> Figure | None:
    """|update| / |param| per tensor over steps (log scale) with the analysis's healthy band."""
    ratios, ndim, band, target = chart.lines, chart.ndim, chart.band, chart.target
    if not ratios:
        return None
    data = []
    for i, (name, s) in enumerate(ratios.items()):
        matrix = ndim.get(name, 0) >= 2
        data.append(
            _line(
                s,
                plot_text(name, 40),
                PALETTE[i % len(PALETTE)],
                visible=True if matrix or len(ratios) <= 8 else "legendonly",
                hovertemplate=f"{plot_text(name, 40)}<br>step %{{x}}<br>ratio %{{y:.3g}}"
                "<extra></extra>",
                line={"color": PALETTE[i % len(PALETTE)], "width": 1.2 if matrix else 0.8},
            )
        )
    layout = _base_layout("Update-to-weight ratio |Δw| / |w| per tensor", 420)
    layout["xaxis"] = _axis("optimizer step")
    layout["yaxis"] = _axis("|update| / |param|", log=True)
    layout["shapes"] = [
        {
            "type": "rect",
            "xref": "paper",
            "yref": "y",
            "x0": 0,
            "x1": 1,
            "y0": band[0],
            "y1": band[1],
            "fillcolor": "#43a047",
            "opacity": 0.08,
            "line": {"width": 0},
            "layer": "below",
        },
        {
            "type": "line",
            "xref": "paper",
            "yref": "y",
            "x0": 0,
            "x1": 1,
            "y0": target,
            "y1": target,
            "line": {"color": "#2e7d32", "width": 1.5, "dash": "dash"},
        },
    ]
    layout["annotations"] = [
        {
            "xref": "paper",
            "yref": "y",
            "x": 1,
            "y": math.log10(target) if target > 0 else 0,
            "text": f"≈{num(target)} rule of thumb",
            "showarrow": False,
            "xanchor": "right",
            "yanchor": "bottom",
            "font": {"color": "#2e7d32", "size": 11},
        }
    ]
    layout["legend"] = {"orientation": "v", "x": 1.02, "y": 1, "font": {"size": 10}}
    layout["margin"]["r"] = 220
    return {"data": data, "layout": layout}


def exponent_histogram(h: ExponentHistogram) -> Figure | None:
    """Share of gradient values per power of two over steps, with fp16 / bf16 limits marked."""
    if not h.exponents or not h.counts:
        return None
    lo, hi = h.exponents[0], h.exponents[-1]
    colours: dict[str, Any] = {
        "zmin": -7,
        "zmax": 0,
        "colorscale": "Viridis",
        "colorbar": {
            "title": {"text": "share of values", "side": "right"},
            "tickvals": [-6, -4, -2, 0],
            "ticktext": ["1e-6", "1e-4", "1e-2", "1"],
        },
    }
    data: list[dict[str, Any]] = [
        {
            "type": "heatmap",
            "x": [*h.steps, h.end],
            "y": h.exponents,
            "z": nums(_log_share(h.counts, h.totals), 2),
            **colours,
            "hovertemplate": "step %{x}<br>|g| in [2^%{y}, 2^(%{y}+1))<br>"
            "log10 share %{z:.2f}<extra></extra>",
        }
    ]
    per_tensor = len(h.tensors) > 1
    if per_tensor:
        data.append(_per_tensor_trace(h, colours))
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    suffix = f" at loss scale 2^{h.shift}" if h.shift else ""
    style = {
        "fp16 smallest subnormal": "dot",
        "fp16 smallest normal": "dash",
        "bf16 smallest normal": "dash",
    }
    for mark in h.limits:
        colour = "#ff5252" if mark.format == "fp16" else "#ffab40"
        k = mark.exponent
        shapes.append(
            {
                "type": "line",
                "xref": "paper",
                "yref": "y",
                "x0": 0,
                "x1": 1,
                "y0": k - 0.5,
                "y1": k - 0.5,
                "line": {"color": colour, "width": 2, "dash": style.get(mark.label, "solid")},
            }
        )
        annotations.append(
            {
                "xref": "paper",
                "yref": "y",
                "x": 0.995,
                "y": k - 0.5,
                "text": plot_text(mark.label, 60) + (suffix if mark.format == "fp16" else ""),
                "showarrow": False,
                "xanchor": "right",
                "yanchor": "bottom",
                "font": {"color": "white", "size": 11},
                "bgcolor": colour,
                "opacity": 0.9,
            }
        )
    title = "Gradient value exponents over time (all tensors)"
    layout = _base_layout(title, 460)
    w = h.width
    layout["xaxis"] = _axis(
        "optimizer step" + (f" (histograms summed over buckets of {w} steps)" if w > 1 else "")
    )
    layout["yaxis"] = _axis("log2 |gradient value|", dtick=8 if hi - lo > 40 else 4)
    layout["shapes"] = shapes
    layout["annotations"] = annotations
    if per_tensor:
        _add_tensor_view(layout, h.tensors, title)
    return {"data": data, "layout": layout}


def _log_share(counts: list[list[int]], totals: list[int]) -> npt.NDArray[np.float64]:
    """log10 of each exponent's share of its column's values, as exponents x columns."""
    c = np.asarray(counts, dtype=np.float64)
    t = np.maximum(np.asarray(totals, dtype=np.float64), 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.log10(c / t)
    out: npt.NDArray[np.float64] = np.where(np.isfinite(share), share, np.nan).T
    return out


def _per_tensor_trace(h: ExponentHistogram, colours: dict[str, Any]) -> dict[str, Any]:
    """The whole run's exponent histogram of each tensor: one column per tensor (starts hidden)."""
    labels = [plot_text(t, 48) for t in h.tensors]
    cells = len(labels) * len(h.exponents)
    trace: dict[str, Any] = {
        "type": "heatmap",
        "x": list(range(len(labels))),
        "y": h.exponents,
        "z": nums(_log_share(h.tensor_counts, h.tensor_totals), 2),
        "xaxis": "x2",
        "visible": False,
        **colours,
        "hovertemplate": ("%{text}" if cells <= 20000 else "tensor %{x}")
        + "<br>|g| in [2^%{y}, 2^(%{y}+1))<br>log10 share %{z:.2f}<extra></extra>",
    }
    if cells <= 20000:
        trace["text"] = [labels] * len(h.exponents)
    return trace


def _add_tensor_view(layout: dict[str, Any], tensors: list[str], title: str) -> None:
    """A second x axis (tensors) and the buttons that switch between the two views."""
    labels = [plot_text(t, 48) for t in tensors]
    named = len(labels) <= 60
    ticks: dict[str, Any] = (
        {"tickvals": list(range(len(labels))), "ticktext": labels, "tickangle": -60}
        if named
        else {"tick0": 0, "dtick": max(1, math.ceil(len(labels) / 10))}
    )
    layout["xaxis2"] = _axis(
        "tensor (model definition order: input side at left)"
        if named
        else "tensor number (model definition order, from 0 at the input side; hover for names)",
        anchor="y",
        overlaying="x",  # one plot area: its own would paint over the other view
        visible=False,
        showgrid=False,
        automargin=True,
        **ticks,
    )
    per_title = "Gradient value exponents per tensor (whole run)"
    room = int(max((len(t) for t in labels), default=0) * 6 * 0.87) if named else 0
    layout["updatemenus"] = [
        {
            "type": "buttons",
            "direction": "right",
            "active": 0,
            "showactive": True,
            "x": 0,
            "xanchor": "left",
            "y": 1.0,
            "yanchor": "bottom",
            "pad": {"b": 4},
            "font": {"size": 11},
            "buttons": [
                {
                    "label": "all tensors over time",
                    "method": "update",
                    "args": [
                        {"visible": [True, False]},
                        {
                            "xaxis.visible": True,
                            "xaxis2.visible": False,
                            "title.text": title,
                            "height": layout["height"],
                        },
                    ],
                },
                {
                    "label": "each tensor, whole run",
                    "method": "update",
                    "args": [
                        {"visible": [False, True]},
                        {
                            "xaxis.visible": False,
                            "xaxis2.visible": True,
                            "title.text": per_title,
                            "height": layout["height"] + room,  # the names below the axis
                        },
                    ],
                },
            ],
        }
    ]
    layout["margin"]["t"] = 86


def convergence(loss: Line, fit: FitCurve | None, conv: Convergence | None) -> Figure | None:
    """The loss, the fitted curve extended to the projection step, and the projection's band."""
    if conv is None:
        return None
    data: list[dict[str, Any]] = [
        _line(loss, "loss", "#90a4ae", line={"color": "#90a4ae", "width": 1})
    ]
    if fit is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": fit.fit.x,
                "y": fit.fit.y,
                "name": f"fitted {plot_text(fit.model, 30)} law",
                "line": {"color": "#1565c0", "width": 2.5},
            }
        )
        if fit.projection is not None:
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": fit.projection.x,
                    "y": fit.projection.y,
                    "name": "projection",
                    "line": {"color": "#1565c0", "width": 2, "dash": "dash"},
                }
            )
    p, lo, hi = conv.projected_loss, conv.projected_low, conv.projected_high
    if p is not None and lo is not None and hi is not None and _finite(p, lo, hi):
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [conv.projected_step],
                "y": [p],
                "name": "projected loss (95% band)",
                "marker": {"color": "#1565c0", "size": 9, "symbol": "diamond"},
                "error_y": {
                    "type": "data",
                    "symmetric": False,
                    "array": [hi - p],
                    "arrayminus": [p - lo],
                    "color": "#1565c0",
                    "thickness": 2,
                    "width": 8,
                },
            }
        )
    shapes: list[dict[str, Any]] = []
    layout = _base_layout("Convergence: loss, fitted curve and projection", 380)
    layout["xaxis"] = _axis("optimizer step")
    layout["yaxis"] = _axis("loss", _wide_range(loss))
    stalled = conv.stalled_step
    if stalled is not None:
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": stalled,
                "x1": stalled,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#ef6c00", "width": 1.5, "dash": "dot"},
            }
        )
        layout["annotations"] = [
            {
                "xref": "x",
                "yref": "paper",
                "x": stalled,
                "y": 1,
                "text": "progress stalled",
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"color": "#ef6c00", "size": 11},
            }
        ]
    layout["shapes"] = shapes
    return {"data": data, "layout": layout}


def _y_range(lines: list[Line], log: bool) -> list[float] | None:
    """The y range that holds ``lines`` (in log10 for a log axis), with a little margin."""
    ys = [v for s in lines for v in s.finite_y() if (v > 0 or not log)]
    if not ys:
        return None
    lo, hi = min(ys), max(ys)
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    pad = (hi - lo) * 0.05 or 0.5
    return [lo - pad, hi + pad]


def overlay(
    series: list[tuple[str, Line, bool]], title: str, ytitle: str, log: bool | None = None
) -> Figure | None:
    """One line per run on shared axes (batch report). The y range is that of the healthy runs
    (third element True); the others are dashed and may run off it, so that one diverged run
    does not flatten every other curve."""
    if not series:
        return None
    data = [
        _line(
            s,
            plot_text(name, 40) + ("" if ok else " (off scale)"),
            PALETTE[i % len(PALETTE)],
            hovertemplate=f"{plot_text(name, 40)}<br>step %{{x}}<br>%{{y:.4g}}<extra></extra>",
            line={
                "color": PALETTE[i % len(PALETTE)],
                "width": 1.5,
                "dash": "solid" if ok else "dash",
            },
        )
        for i, (name, s, ok) in enumerate(series)
    ]
    healthy = [s for _, s, ok in series if ok]
    if log is None:
        log = all(_positive(s) for s in healthy or [s for _, s, _ in series]) and any(
            _wide_range(s) for s in healthy
        )
    layout = _base_layout(title, 400)
    layout["xaxis"] = _axis("optimizer step")
    layout["yaxis"] = _axis(ytitle, log)
    if healthy and len(healthy) < len(series):
        rng = _y_range(healthy, log)
        if rng is not None:
            layout["yaxis"]["range"] = rng
    layout["legend"] = {"orientation": "v", "x": 1.02, "y": 1, "font": {"size": 11}}
    layout["margin"]["r"] = 200
    return {"data": data, "layout": layout}


def sweep(s: SweepChart) -> Figure:
    """Outcome (projected or final loss) against one hyperparameter, with the fitted best value."""
    key = s.key
    ok = [p for p in s.points if p.outcome is not None]
    failed = [p for p in s.points if p.outcome is None]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "markers",
            "x": [p.value for p in ok],
            "y": [p.outcome for p in ok],
            "text": [plot_text(p.run, 40) for p in ok],
            "name": "runs",
            "marker": {"size": 10, "color": "#1565c0"},
            "hovertemplate": "%{text}<br>" + plot_text(key, 30) + " = %{x:.3g}<br>"
            "outcome %{y:.4g}<extra></extra>",
        }
    ]
    if failed:
        top = max((p.outcome for p in ok if p.outcome is not None), default=1.0)
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [p.value for p in failed],
                "y": [top] * len(failed),
                "text": [plot_text(p.run, 40) for p in failed],
                "name": "diverged / NaN",
                "marker": {"size": 11, "color": SEVERITY_COLOURS["error"], "symbol": "x"},
                "hovertemplate": "%{text}: diverged<extra></extra>",
            }
        )
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    best = s.suggested_value
    if best is not None and _finite(best) and (best > 0 or not s.log_scale):
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": best,
                "x1": best,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#2e7d32", "width": 2, "dash": "dash"},
            }
        )
        annotations.append(
            {
                "xref": "x",
                "yref": "paper",
                "x": math.log10(best) if s.log_scale else best,
                "y": 1,
                "text": f"fitted best {plot_text(key, 30)} = {num(float(best), 3)}",
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"color": "#2e7d32"},
            }
        )
    layout = _base_layout(f"Sweep: outcome against {plot_text(key, 40)}", 360)
    layout["xaxis"] = _axis(plot_text(key, 40), s.log_scale)
    layout["yaxis"] = _axis("projected (else final) loss; lower is better")
    layout["shapes"] = shapes
    layout["annotations"] = annotations
    return {"data": data, "layout": layout}
