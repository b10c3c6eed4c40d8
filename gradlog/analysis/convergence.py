"""Loss-curve trends: power-law and exponential fits (chosen by AIC), projection with a band,
Theil-Sen slopes over windows, the step where progress stalled, and change points."""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import optimize

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.robust import theil_sen

MAX_POINTS = 400


_WARNINGS = threading.Lock()
"""Runs are analysed in threads; warnings.catch_warnings swaps process-wide state."""


def _power(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return c + a * np.power(t + 1.0, -b)


def _exp(t: np.ndarray, a: float, k: float, c: float) -> np.ndarray:
    return c + a * np.exp(-k * t)


def _bin(step: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Medians over at most MAX_POINTS equal-count bins (robust to noise, fast to fit)."""
    if len(step) <= MAX_POINTS:
        return step.astype(np.float64), loss
    # the bins of np.array_split: the first n % k hold q + 1 points, the others q
    q, r = divmod(len(step), MAX_POINTS)
    cut = r * (q + 1)

    def medians(x: np.ndarray) -> np.ndarray:
        head = np.median(x[:cut].reshape(r, q + 1), axis=1)
        tail = np.median(x[cut:].reshape(MAX_POINTS - r, q), axis=1)
        return np.concatenate([head, tail])

    return medians(step.astype(np.float64)), medians(loss)


def _fit(  # noqa: PLR0917 - private helper; the call sites read as a table of models
    name: str,
    fn: Callable[..., np.ndarray],
    t: np.ndarray,
    y: np.ndarray,
    p0: list[float],
    bounds: tuple[list[float], list[float]],
    t_proj: float,
) -> dict[str, Any] | None:
    try:
        with _WARNINGS, warnings.catch_warnings():  # catch_warnings is not thread-safe
            warnings.simplefilter("ignore")
            popt, pcov = optimize.curve_fit(fn, t, y, p0=p0, bounds=bounds, maxfev=5000)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    resid = y - fn(t, *popt)
    rss = float(np.sum(resid**2))
    n = len(y)
    aic = n * np.log(max(rss, 1e-300) / n) + 2 * len(popt)
    proj = float(fn(np.array([t_proj]), *popt)[0])
    grad = np.zeros(len(popt))
    for i in range(len(popt)):
        h = 1e-6 * max(abs(popt[i]), 1e-8)
        up = popt.copy()
        up[i] += h
        grad[i] = (float(fn(np.array([t_proj]), *up)[0]) - proj) / h
    var = float(grad @ np.nan_to_num(pcov, nan=0.0, posinf=0.0) @ grad) + rss / max(
        n - len(popt), 1
    )
    sd = float(np.sqrt(max(var, 0.0)))
    return {
        "model": name,
        "params": [float(p) for p in popt],
        "aic": float(aic),
        "rss": rss,
        "projected": proj,
        "low": proj - 1.96 * sd,
        "high": proj + 1.96 * sd,
        "asymptote": float(popt[2]),
    }


def change_points(t: np.ndarray, y: np.ndarray, max_points: int) -> list[int]:
    """Binary segmentation with piecewise-linear segments and a BIC penalty; returns steps."""

    z = np.zeros(1)
    ct, cy = np.concatenate([z, np.cumsum(t)]), np.concatenate([z, np.cumsum(y)])
    ctt, cty = np.concatenate([z, np.cumsum(t * t)]), np.concatenate([z, np.cumsum(t * y)])
    cyy = np.concatenate([z, np.cumsum(y * y)])

    def cost(a: int, b: int) -> float:
        """Residual sum of squares of a least-squares line over [a, b), from prefix sums."""
        m = b - a
        if m < 3:
            return 0.0
        st, sy = ct[b] - ct[a], cy[b] - cy[a]
        stt, sty, syy = ctt[b] - ctt[a], cty[b] - cty[a], cyy[b] - cyy[a]
        vt, vy, cv = stt - st * st / m, syy - sy * sy / m, sty - st * sy / m
        return float(max(vy - (cv * cv / vt if vt > 0 else 0.0), 0.0))

    n = len(y)
    if n < 12:
        return []
    noise = float(np.median(np.abs(np.diff(y)))) ** 2 + 1e-300
    penalty = 4 * noise * np.log(n)
    segs, found = [(0, n)], []
    for _ in range(max_points):
        best: tuple[float, int, int] | None = None
        for si, (a, b) in enumerate(segs):
            whole = cost(a, b)
            for k in range(a + 4, b - 4):
                gain = whole - cost(a, k) - cost(k, b)
                if best is None or gain > best[0]:
                    best = (gain, si, k)
        if best is None or best[0] < penalty:
            break
        _, si, k = best
        a, b = segs.pop(si)
        segs += [(a, k), (k, b)]
        found.append(int(t[k]))
    return sorted(found)


def fit_convergence(
    step: np.ndarray, loss: np.ndarray, cfg: AnalysisConfig
) -> dict[str, Any] | None:
    """The convergence summary of one loss curve, or None with too few finite points."""
    ok = np.isfinite(loss)
    step, loss = step[ok], loss[ok]
    if len(loss) < 10:
        return None
    t, y = _bin(step, loss)
    t0 = float(step[0])
    tt = t - t0
    horizon = cfg.projection_steps or int(step[-1] - step[0] + 1)
    t_proj = float(tt[-1] + horizon)
    span = float(np.ptp(y)) or 1.0
    fits = [
        f
        for f in (
            _fit(
                "power",
                _power,
                tt,
                y,
                [span, 0.5, float(y.min())],
                ([-np.inf, 0.0, -np.inf], [np.inf, 10.0, np.inf]),
                t_proj,
            ),
            _fit(
                "exponential",
                _exp,
                tt,
                y,
                [span, 1.0 / max(tt[-1], 1.0), float(y.min())],
                ([-np.inf, 0.0, -np.inf], [np.inf, 10.0, np.inf]),
                t_proj,
            ),
        )
        if f is not None
    ]
    windows: list[dict[str, float]] = []
    stalled: int | None = None
    edges = np.linspace(0, len(t), max(2, cfg.trend_windows) + 1).astype(int)
    for a, b in itertools.pairwise(edges):
        s, lo, hi = theil_sen(t[a:b], y[a:b])
        rel = (
            -s * float(t[b - 1] - t[a]) / max(abs(float(np.median(y[a:b]))), 1e-12)
            if not np.isnan(s)
            else float("nan")
        )
        windows.append(
            {
                "step_start": float(t[a]),
                "step_end": float(t[b - 1]),
                "slope": s,
                "slope_low": lo,
                "slope_high": hi,
                "relative_drop": rel,
            }
        )
    for i, w in enumerate(windows):
        if all(not (x["relative_drop"] >= cfg.stall_rel) for x in windows[i:]):
            stalled = int(w["step_start"])
            break
    best = min(fits, key=lambda f: f["aic"]) if fits else None
    return {
        "model": best["model"] if best else None,
        "fits": fits,
        "projected_step": int(step[-1] + horizon),
        "projected_loss": best["projected"] if best else None,
        "projected_low": best["low"] if best else None,
        "projected_high": best["high"] if best else None,
        "final_loss": float(np.median(loss[-max(1, len(loss) // 20) :])),
        "stalled_step": stalled,
        "windows": windows,
        "change_points": change_points(t, y, cfg.max_change_points),
    }
