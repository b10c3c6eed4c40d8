"""The typed convergence summary of a loss curve (computed by :mod:`gradlog.analysis.convergence`;
kept apart so that reading a result does not import scipy)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradlog.errors import CorruptRunError


@dataclass(frozen=True)
class Fit:
    """One fitted loss model and its projection with a 95% band."""

    model: str
    params: list[float]
    aic: float
    rss: float
    projected: float
    low: float
    high: float
    asymptote: float


@dataclass(frozen=True)
class TrendWindow:
    """A Theil-Sen slope over one window of the binned loss curve."""

    step_start: float
    step_end: float
    slope: float
    slope_low: float
    slope_high: float
    relative_drop: float


_WHY = {
    "nonfinite loss": "loss non-finite",
    "nonfinite gradients": "gradients non-finite",
    "divergence": "loss diverged",
}


def _finite_or_none(v: Any, name: str) -> float | None:
    out = _opt_float(v)
    if out is not None and not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number or null")
    return out


def _opt_float(v: Any) -> float | None:
    if v is None:
        return None
    return float(v)


@dataclass(frozen=True)
class Convergence:
    """The convergence summary of one loss curve (see :func:`fit_convergence`)."""

    model: str | None
    fits: list[Fit]
    t0: float
    nonnegative: bool
    projected_step: int
    projected_loss: float | None
    projected_low: float | None
    projected_high: float | None
    initial_loss: float
    final_loss: float
    """Median of the last window of logged losses; NaN when the loss ended non-finite."""
    final_step: int
    """The last logged step (finite or not)."""
    stalled_step: int | None
    windows: list[TrendWindow] = field(default_factory=list)
    change_points: list[int] = field(default_factory=list)
    final_window: int = 0
    """Logged losses the final loss is the median of."""
    ended_nonfinite: bool = False
    diverged: bool = False
    last_finite_loss: float | None = None
    """The last finite logged loss (what a diverged or NaN run is ranked and reported by)."""
    last_finite_step: int | None = None
    healthy_end: int | None = None
    """The first step of the run's failed phase (:class:`gradlog.analysis.phases.Phases`): its
    gradients or loss went non-finite or its loss diverged there; None while it stayed healthy."""
    health_reason: str = ""
    """Why the healthy phase ended: ``nonfinite gradients``, ``nonfinite loss``, ``divergence``."""
    last_healthy_step: int | None = None
    last_healthy_loss: float | None = None
    """The last finite loss logged before ``healthy_end`` (None when the run stayed healthy)."""
    projection_dropped: str = ""
    """Why nothing is projected (a failed run: the loss went non-finite or diverged, or the
    gradients went non-finite before the end); ``""`` when a projection was made or no model
    could be fitted."""

    @property
    def failed(self) -> bool:
        """The run diverged or went non-finite (its loss or gradients)."""
        return self.healthy_end is not None or self.ended_nonfinite or self.diverged

    @property
    def failure(self) -> str:
        """One line on how the run failed, e.g. ``diverged at step 412 (loss non-finite); last
        finite loss 2.31 at step 411``; ``""`` for a healthy run."""
        if self.healthy_end is not None:
            why = _WHY.get(self.health_reason, self.health_reason or "failed")
            line = f"diverged at step {self.healthy_end} ({why})"
            if self.last_healthy_loss is not None and self.last_healthy_step is not None:
                finite = self.health_reason == "nonfinite loss"
                last = "last finite loss" if finite else "last healthy loss"
                line += f"; {last} {self.last_healthy_loss:.4g} at step {self.last_healthy_step}"
            return line
        if self.ended_nonfinite or self.diverged:
            line = "loss ended non-finite" if self.ended_nonfinite else "loss diverged"
            if self.last_finite_loss is not None and self.last_finite_step is not None:
                line += (
                    f"; last finite loss {self.last_finite_loss:.4g} at step "
                    f"{self.last_finite_step}"
                )
            return line
        return ""

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_json(cls, d: Any) -> Convergence:
        if not isinstance(d, dict):
            raise CorruptRunError("convergence must be an object")
        try:
            return cls(
                model=None if d.get("model") is None else str(d["model"]),
                fits=[
                    Fit(
                        model=str(f["model"]),
                        params=[float(p) for p in f["params"]],
                        aic=float(f["aic"]),
                        rss=float(f["rss"]),
                        projected=float(f["projected"]),
                        low=float(f["low"]),
                        high=float(f["high"]),
                        asymptote=float(f["asymptote"]),
                    )
                    for f in d.get("fits") or []
                ],
                t0=float(d["t0"]),
                nonnegative=bool(d["nonnegative"]),
                projected_step=int(d["projected_step"]),
                projected_loss=_opt_float(d.get("projected_loss")),
                projected_low=_opt_float(d.get("projected_low")),
                projected_high=_opt_float(d.get("projected_high")),
                initial_loss=float(d["initial_loss"]),
                final_loss=float(d["final_loss"]),
                final_step=int(d["final_step"]),
                stalled_step=None if d.get("stalled_step") is None else int(d["stalled_step"]),
                windows=[TrendWindow(**{k: float(v) for k, v in w.items()}) for w in d["windows"]],
                change_points=[int(c) for c in d.get("change_points") or []],
                final_window=int(d.get("final_window", 0)),
                ended_nonfinite=bool(d.get("ended_nonfinite", False)),
                diverged=bool(d.get("diverged", False)),
                last_finite_loss=_opt_float(d.get("last_finite_loss")),
                last_finite_step=None
                if d.get("last_finite_step") is None
                else int(d["last_finite_step"]),
                healthy_end=None if d.get("healthy_end") is None else int(d["healthy_end"]),
                health_reason=str(d.get("health_reason", "")),
                last_healthy_step=None
                if d.get("last_healthy_step") is None
                else int(d["last_healthy_step"]),
                last_healthy_loss=_finite_or_none(d.get("last_healthy_loss"), "last_healthy_loss"),
                projection_dropped=str(d.get("projection_dropped", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRunError(f"convergence is malformed: {exc}") from exc
