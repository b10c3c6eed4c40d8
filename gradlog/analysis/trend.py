"""The typed convergence summary of a loss curve (computed by :mod:`gradlog.analysis.convergence`;
kept apart so that reading a result does not import scipy)."""

from __future__ import annotations

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
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRunError(f"convergence is malformed: {exc}") from exc
