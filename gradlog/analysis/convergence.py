"""Loss-curve trends: power-law and exponential fits (chosen by AIC), projection with a band,
Theil-Sen slopes over windows, the step where progress stalled, and change points."""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Callable

import numpy as np
from scipy import optimize

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.phases import Phases
from gradlog.analysis.robust import theil_sen, window_len
from gradlog.analysis.trend import Convergence, Fit, TrendWindow

MAX_POINTS = 400
"""At most this many window medians are fitted."""
MIN_FIT_POINTS = 10
"""A short curve keeps at least this many points (each a median of fewer steps)."""


_WARNINGS = threading.Lock()
"""Runs are analysed in threads; warnings.catch_warnings swaps process-wide state."""


def _power(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return c + a * np.power(t + 1.0, -b)


def _exp(t: np.ndarray, a: float, k: float, c: float) -> np.ndarray:
    return c + a * np.exp(-k * t)


def _bin(step: np.ndarray, loss: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Medians over ``bins`` equal-count bins (robust to noise and outlier batches, fast to fit)."""
    if len(step) <= bins:
        return step.astype(np.float64), loss
    # the bins of np.array_split: the first n % k hold q + 1 points, the others q
    q, r = divmod(len(step), bins)
    cut = r * (q + 1)

    def medians(x: np.ndarray) -> np.ndarray:
        head = np.median(x[:cut].reshape(r, q + 1), axis=1)
        tail = np.median(x[cut:].reshape(bins - r, q), axis=1)
        return np.concatenate([head, tail])

    return medians(step.astype(np.float64)), medians(loss)


def initial_level(loss: np.ndarray) -> float:
    """The loss before training: the first logged value, the only one measured before any
    update. The median of a first window would already hold the first drop (a fast learner
    looks stalled) or an early blow-up (a stalled run looks as if it made progress)."""
    return float(loss[0])


def _fit(  # noqa: PLR0917 - private helper; the call sites read as a table of models
    name: str,
    fn: Callable[..., np.ndarray],
    t: np.ndarray,
    y: np.ndarray,
    p0: list[float],
    bounds: tuple[list[float], list[float]],
    t_proj: float,
    *,
    relative: bool,
) -> Fit | None:
    """One bounded least-squares fit and its projection at ``t_proj`` with a 95% band.

    ``relative``: the loss is non-negative and its noise scales with its level (a loss at 0.01
    wobbles by about 0.01, at 2 by about 0.1), so residuals are weighted by 1/level (else the
    first steps of a curve falling 100x outweigh the rest) and the projection and its band are
    clipped at 0.
    """
    scale = np.maximum(np.abs(y), 1e-3 * float(np.max(np.abs(y))) + 1e-12) if relative else None
    try:
        with _WARNINGS, warnings.catch_warnings():  # catch_warnings is not thread-safe
            warnings.simplefilter("ignore")
            popt, pcov = optimize.curve_fit(
                fn, t, y, p0=p0, sigma=scale, bounds=bounds, maxfev=5000
            )
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    try:
        return _summarise(
            name,
            fn,
            t=t,
            y=y,
            popt=popt,
            pcov=pcov,
            scale=scale,
            t_proj=t_proj,
            relative=relative,
        )
    except (OverflowError, FloatingPointError):  # a loss that blew up to 1e150 and beyond
        return None


def _summarise(
    name: str,
    fn: Callable[..., np.ndarray],
    *,
    t: np.ndarray,
    y: np.ndarray,
    popt: np.ndarray,
    pcov: np.ndarray,
    scale: np.ndarray | None,
    t_proj: float,
    relative: bool,
) -> Fit | None:
    """The fit's AIC, projection at ``t_proj`` and 95% band; None when they are not finite."""
    resid = (y - fn(t, *popt)) / (1.0 if scale is None else scale)
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
    # the noise of a window median at t_proj: the residual variance, at the projected level
    level = 1.0 if scale is None else max(abs(proj), float(scale.min()))
    noise = rss / max(n - len(popt), 1) * level**2
    var = float(grad @ np.nan_to_num(pcov, nan=0.0, posinf=0.0) @ grad) + noise
    sd = float(np.sqrt(max(var, 0.0)))
    low, high = proj - 1.96 * sd, proj + 1.96 * sd
    if relative:
        proj, low, high = max(proj, 0.0), max(low, 0.0), max(high, 0.0)
    if not all(np.isfinite([aic, rss, proj, low, high])):
        return None
    return Fit(name, [float(p) for p in popt], float(aic), rss, proj, low, high, float(popt[2]))


def change_points(t: np.ndarray, y: np.ndarray, max_points: int) -> list[int]:
    """Binary segmentation with piecewise-linear segments and a BIC penalty; returns steps.

    None found for a curve whose squares overflow (a loss that blew up past 1e150)."""
    if len(y) and not float(np.max(np.abs(y))) < 1e150:
        return []

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


def _dropped(
    health: Phases | None, *, ended_nonfinite: bool, diverged: bool, cfg: AnalysisConfig
) -> str:
    """Why a run gets no projection, or ``""``."""
    if health is not None and health.healthy_end is not None:
        what = {
            "nonfinite gradients": "its gradients went non-finite",
            "nonfinite loss": "its loss went non-finite",
            "divergence": "its loss diverged",
        }.get(health.reason, health.reason)
        return (
            f"{what} at step {health.healthy_end}: a failed run is not projected (the curve "
            "fitted is its healthy segment before that step)"
        )
    if ended_nonfinite:
        return "the loss ended non-finite"
    if diverged:
        return f"the loss diverged: it ended above {cfg.divergence_factor:g}x its initial level"
    return ""


def fit_convergence(
    step: np.ndarray, loss: np.ndarray, cfg: AnalysisConfig, health: Phases | None = None
) -> Convergence | None:
    """The convergence summary of one loss curve, or None with too few finite points.

    The models are fitted to window medians (``fit_bin`` steps each). When every observed loss
    is >= 0 the asymptote is bounded below by 0, residuals are relative, and the projection's
    band is clipped at 0: a cross-entropy or squared error cannot be projected below zero.
    ``final_loss`` is the median of the last window (``window_frac``, at least ``min_window``
    steps), ``initial_loss`` the level before training (:func:`initial_level`). A loss that ended
    above ``divergence_factor`` x its initial level is not projected (``model`` and
    ``projected_*`` are None), nor is one that ended non-finite (``final_loss`` is then NaN).
    The projection starts from the last logged step, finite or not.

    ``health`` (the run's :class:`Phases`): a run that failed (gradients or loss non-finite,
    loss diverged) is fitted over its healthy segment only (when it holds enough points) and
    not projected, with the reason in ``projection_dropped``; when its gradients or loss went
    non-finite its ``final_loss`` is NaN (the last window would be read after the failure).
    """
    if len(step) == 0:
        return None
    last_step = int(step[-1])
    ended_nonfinite = not np.isfinite(loss[-1])
    end = health.healthy_end if health is not None else None
    last_healthy: tuple[int, float] | None = None
    if end is not None:
        before = (step < end) & np.isfinite(loss)
        if before.any():
            last_healthy = (int(step[before][-1]), float(loss[before][-1]))
    ok = np.isfinite(loss)
    step, loss = step[ok], loss[ok]
    if len(loss) < 10:
        return None
    fit_step, fit_loss = step, loss
    if end is not None and int(np.sum(step < end)) >= MIN_FIT_POINTS:
        fit_step, fit_loss = step[step < end], loss[step < end]
    bins = min(
        MAX_POINTS, max(len(fit_loss) // max(cfg.fit_bin, 1), min(len(fit_loss), MIN_FIT_POINTS))
    )
    t, y = _bin(fit_step, fit_loss, bins)
    nonnegative = bool(np.all(loss >= 0))
    c_low = 0.0 if nonnegative else -np.inf
    t0 = float(fit_step[0])
    tt = t - t0
    horizon = cfg.projection_steps or int(last_step - step[0] + 1)
    t_proj = float(tt[-1] + horizon)
    span = float(np.ptp(y)) or 1.0
    c_guess = max(float(y.min()), 0.0) if nonnegative else float(y.min())
    fits = [
        f
        for f in (
            _fit(
                "power",
                _power,
                tt,
                y,
                [span, 0.5, c_guess],
                ([-np.inf, 0.0, c_low], [np.inf, 10.0, np.inf]),
                t_proj,
                relative=nonnegative,
            ),
            _fit(
                "exponential",
                _exp,
                tt,
                y,
                [span, 1.0 / max(tt[-1], 1.0), c_guess],
                ([-np.inf, 0.0, c_low], [np.inf, 10.0, np.inf]),
                t_proj,
                relative=nonnegative,
            ),
        )
        if f is not None
    ]
    windows: list[TrendWindow] = []
    stalled: int | None = None
    edges = np.linspace(0, len(t), max(2, cfg.trend_windows) + 1).astype(int)
    for a, b in itertools.pairwise(edges):
        s, lo, hi = theil_sen(t[a:b], y[a:b])
        rel = (
            -s * float(t[b - 1] - t[a]) / max(abs(float(np.median(y[a:b]))), 1e-12)
            if not np.isnan(s)
            else float("nan")
        )
        windows.append(TrendWindow(float(t[a]), float(t[b - 1]), s, lo, hi, rel))
    window = window_len(len(loss), cfg.window_frac, cfg.min_window)
    initial, final = initial_level(loss), float(np.median(loss[-window:]))
    # a loss that ended far above where it started diverged: it has no asymptote to project
    diverged = final > cfg.divergence_factor * abs(initial) and final > initial
    broken = end is not None
    if ended_nonfinite or (broken and health is not None and health.reason != "divergence"):
        final = float("nan")  # the last window would be read after the gradients went bad
    if not (diverged or ended_nonfinite or broken):  # a failed run has not stalled: it got worse
        for i, w in enumerate(windows):
            if all(not (x.relative_drop >= cfg.stall_rel) for x in windows[i:]):
                stalled = int(w.step_start)
                break
    failed = diverged or ended_nonfinite or broken
    best = min(fits, key=lambda f: f.aic) if fits and not failed else None
    return Convergence(
        model=best.model if best else None,
        fits=fits,
        t0=t0,
        nonnegative=nonnegative,
        projected_step=int(last_step + horizon),
        projected_loss=best.projected if best else None,
        projected_low=best.low if best else None,
        projected_high=best.high if best else None,
        initial_loss=initial,
        final_loss=final,
        final_step=last_step,
        stalled_step=stalled,
        windows=windows,
        change_points=change_points(t, y, cfg.max_change_points),
        final_window=window,
        ended_nonfinite=ended_nonfinite,
        diverged=bool(diverged),
        last_finite_loss=float(loss[-1]),
        last_finite_step=int(step[-1]),
        healthy_end=end,
        health_reason=health.reason if health is not None and broken else "",
        last_healthy_step=last_healthy[0] if last_healthy else None,
        last_healthy_loss=last_healthy[1] if last_healthy else None,
        projection_dropped=_dropped(
            health, ended_nonfinite=ended_nonfinite, diverged=bool(diverged), cfg=cfg
        )
        if fits
        else "",
    )
