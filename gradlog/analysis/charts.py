"""The chart data a report draws, as typed results of the analysis (with a JSON round trip).

Everything here is already reduced for display (decimated with min/max envelopes, bucketed,
folded), so its size is bounded by the number of display buckets, not by the run's length. The
report turns these into figures and computes nothing from them but layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradlog.errors import CorruptRunError

Num = float | None
"""A number in chart data: None where there is nothing (a gap, a missing cell, NaN)."""


def _sig(v: float, digits: int = 5) -> Num:
    if not math.isfinite(v):
        return None
    if v == int(v) and abs(v) < 2**53:
        return float(int(v))
    return float(f"{v:.{digits}g}")


def nums(values: Any, digits: int = 5) -> list[Num]:
    """Floats as chart numbers: ``digits`` significant digits, non-finite values None."""
    return [_sig(float(v), digits) for v in values]


def _floats(raw: Any) -> list[Num]:
    if not isinstance(raw, list):
        raise CorruptRunError("chart data: expected a list of numbers")
    return [None if v is None else float(v) for v in raw]


@dataclass(frozen=True)
class Line:
    """One drawn line: x (steps) and y, decimated keeping each bucket's min and max."""

    x: list[Num]
    y: list[Num]

    def __len__(self) -> int:
        return len(self.x)

    def finite_y(self) -> list[float]:
        return [v for v in self.y if v is not None]

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y}

    @classmethod
    def from_json(cls, d: Any) -> Line:
        if not isinstance(d, dict):
            raise CorruptRunError("chart data: a line must be an object")
        return cls(_floats(d.get("x")), _floats(d.get("y")))


def _lines_from(d: Any) -> dict[str, Line]:
    return {str(k): Line.from_json(v) for k, v in (d or {}).items()}


@dataclass(frozen=True)
class NormGrid:
    """Per-tensor gradient L2 norms on buckets of steps (the largest norm in each bucket)."""

    tensors: list[str]
    """Depth order: input side first."""
    bucket_starts: list[Num]
    width: int
    norms: list[list[Num]]
    """tensors x buckets; None where nothing was recorded; 0 for an all-zero gradient."""
    nonfinite: list[tuple[int, int]]
    """(tensor row, bucket column) of cells with any NaN/Inf gradient element."""

    def to_json(self) -> dict[str, Any]:
        return {
            "tensors": self.tensors,
            "bucket_starts": self.bucket_starts,
            "width": self.width,
            "norms": self.norms,
            "nonfinite": [list(c) for c in self.nonfinite],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NormGrid:
        return cls(
            [str(t) for t in d["tensors"]],
            _floats(d["bucket_starts"]),
            int(d["width"]),
            [_floats(r) for r in d["norms"]],
            [(int(a), int(b)) for a, b in d["nonfinite"]],
        )


@dataclass(frozen=True)
class RatioChart:
    """|update| / |param| per tensor over steps, and the band the analysis judges by."""

    lines: dict[str, Line]
    ndim: dict[str, int]
    band: tuple[float, float]
    target: float

    def to_json(self) -> dict[str, Any]:
        return {
            "lines": {k: v.to_json() for k, v in self.lines.items()},
            "ndim": self.ndim,
            "band": list(self.band),
            "target": self.target,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RatioChart:
        lo, hi = d["band"]
        return cls(
            _lines_from(d["lines"]),
            {str(k): int(v) for k, v in d["ndim"].items()},
            (float(lo), float(hi)),
            float(d["target"]),
        )


@dataclass(frozen=True)
class FormatMark:
    """A number format's limit drawn on the exponent chart (log2, after the loss-scale shift)."""

    label: str
    exponent: float
    format: str


@dataclass(frozen=True)
class ExponentHistogram:
    """Gradient log2-exponent counts: over time (all tensors) and per tensor (whole run), on the
    exponent range worth drawing (``exponents``: consecutive k, values in [2**k, 2**(k+1)))."""

    exponents: list[int]
    steps: list[Num]
    """First step of each column; ``end`` is one past the last step the last column covers."""
    end: float
    width: int
    counts: list[list[int]]
    """columns x exponents."""
    totals: list[int]
    """Every value of each column (zeros and non-finite included): the denominator of shares."""
    tensors: list[str] = field(default_factory=list)
    tensor_counts: list[list[int]] = field(default_factory=list)
    tensor_totals: list[int] = field(default_factory=list)
    shift: int = 0
    """log2 of the median AMP loss scale; fp16 limits are marked shifted by it."""
    limits: list[FormatMark] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "exponents": self.exponents,
            "steps": self.steps,
            "end": self.end,
            "width": self.width,
            "counts": self.counts,
            "totals": self.totals,
            "tensors": self.tensors,
            "tensor_counts": self.tensor_counts,
            "tensor_totals": self.tensor_totals,
            "shift": self.shift,
            "limits": [[m.label, m.exponent, m.format] for m in self.limits],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExponentHistogram:
        return cls(
            [int(k) for k in d["exponents"]],
            _floats(d["steps"]),
            float(d["end"]),
            int(d["width"]),
            [[int(c) for c in row] for row in d["counts"]],
            [int(t) for t in d["totals"]],
            [str(t) for t in d["tensors"]],
            [[int(c) for c in row] for row in d["tensor_counts"]],
            [int(t) for t in d["tensor_totals"]],
            int(d["shift"]),
            [FormatMark(str(a), float(b), str(c)) for a, b, c in d["limits"]],
        )


@dataclass(frozen=True)
class FitCurve:
    """The fitted loss model drawn over the logged steps and extended to the projection."""

    model: str
    fit: Line
    projection: Line | None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fit": self.fit.to_json(),
            "projection": self.projection.to_json() if self.projection else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FitCurve:
        proj = d.get("projection")
        return cls(
            str(d["model"]), Line.from_json(d["fit"]), Line.from_json(proj) if proj else None
        )


@dataclass(frozen=True)
class RunCharts:
    """Everything a run page draws."""

    resolution: int = 1
    """Steps per row the detectors saw (1: every step; more: buckets of steps, on giant runs)."""
    loss_name: str = "loss"
    loss: Line | None = None
    lrs: dict[str, Line] = field(default_factory=dict)
    grad_norm: Line | None = None
    preclip: Line | None = None
    loss_scale: Line | None = None
    others: dict[str, Line] = field(default_factory=dict)
    flow: NormGrid | None = None
    ratios: RatioChart | None = None
    hist: ExponentHistogram | None = None
    fit: FitCurve | None = None

    def to_json(self) -> dict[str, Any]:
        def opt(v: Any) -> Any:
            return None if v is None else v.to_json()

        return {
            "resolution": self.resolution,
            "loss_name": self.loss_name,
            "loss": opt(self.loss),
            "lrs": {k: v.to_json() for k, v in self.lrs.items()},
            "grad_norm": opt(self.grad_norm),
            "preclip": opt(self.preclip),
            "loss_scale": opt(self.loss_scale),
            "others": {k: v.to_json() for k, v in self.others.items()},
            "flow": opt(self.flow),
            "ratios": opt(self.ratios),
            "hist": opt(self.hist),
            "fit": opt(self.fit),
        }

    @classmethod
    def from_json(cls, d: Any) -> RunCharts:
        if not isinstance(d, dict):
            raise CorruptRunError("chart data must be an object")

        def line(key: str) -> Line | None:
            return Line.from_json(d[key]) if d.get(key) is not None else None

        try:
            return cls(
                resolution=int(d.get("resolution", 1)),
                loss_name=str(d.get("loss_name", "loss")),
                loss=line("loss"),
                lrs=_lines_from(d.get("lrs")),
                grad_norm=line("grad_norm"),
                preclip=line("preclip"),
                loss_scale=line("loss_scale"),
                others=_lines_from(d.get("others")),
                flow=NormGrid.from_json(d["flow"]) if d.get("flow") else None,
                ratios=RatioChart.from_json(d["ratios"]) if d.get("ratios") else None,
                hist=ExponentHistogram.from_json(d["hist"]) if d.get("hist") else None,
                fit=FitCurve.from_json(d["fit"]) if d.get("fit") else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptRunError(f"chart data is malformed: {exc}") from exc


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its hyperparameter value, outcome (None: it failed) and name."""

    value: float
    outcome: float | None
    run: str


@dataclass(frozen=True)
class SweepChart:
    """One sweep the analysis recognised, as drawn: points, axis scale and the fitted best."""

    key: str
    fixed: str
    points: list[SweepPoint]
    log_scale: bool
    suggested_value: float | None
    caption: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fixed": self.fixed,
            "points": [[p.value, p.outcome, p.run] for p in self.points],
            "log_scale": self.log_scale,
            "suggested_value": self.suggested_value,
            "caption": self.caption,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SweepChart:
        sv = d.get("suggested_value")
        return cls(
            str(d["key"]),
            str(d.get("fixed", "")),
            [
                SweepPoint(float(x), None if y is None else float(y), str(n))
                for x, y, n in d["points"]
            ],
            bool(d["log_scale"]),
            None if sv is None else float(sv),
            str(d.get("caption", "")),
        )
