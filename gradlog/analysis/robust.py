"""Robust statistics shared by detectors: windows, median/MAD, Theil-Sen slopes, spikes."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import stats

MAD_SCALE = 1.4826

THEIL_SEN_MAX_POINTS = 1000
"""Theil-Sen over more points uses this many, evenly spaced: its cost grows with the square of
the points (12,500 points: 78M pairwise slopes, seconds), its precision barely improves."""


def window_len(n: int, frac: float, minimum: int) -> int:
    """Length of an early/late window over ``n`` points."""
    return max(1, min(n, max(minimum, round(n * frac))))


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Theil-Sen slope with its 95% interval (slope, low, high); NaN with fewer than 3 points.

    Over more than THEIL_SEN_MAX_POINTS finite points, that many evenly spaced ones are used.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return float("nan"), float("nan"), float("nan")
    xs, ys = x[ok], y[ok]
    if len(xs) > THEIL_SEN_MAX_POINTS:
        pick = np.unique(np.linspace(0, len(xs) - 1, THEIL_SEN_MAX_POINTS).round().astype(np.int64))
        xs, ys = xs[pick], ys[pick]
    res = stats.theilslopes(ys, xs)
    return float(res.slope), float(res.low_slope), float(res.high_slope)


def rolling_spikes(
    x: np.ndarray, *, window: int, min_history: int, z: float, min_jump: float, min_mad: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices where ``x`` exceeds the median of the previous ``window`` values by z robust sigmas.

    Candidates are prefiltered with the running minimum (x - min >= x - median), so the median and
    MAD are computed only where a spike is possible. Returns (index, z-score, x - median).
    """
    return series_spikes(
        np.asarray(x, dtype=np.float64),
        np.array([len(x)]),
        window=window,
        min_history=min_history,
        z=z,
        min_jump=min_jump,
        min_mad=min_mad,
    )


def series_spikes(
    x: np.ndarray,
    lengths: np.ndarray,
    *,
    window: int,
    min_history: int,
    z: float,
    min_jump: float,
    min_mad: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`rolling_spikes` of several series stored one after the other in ``x`` (series i
    holds ``lengths[i]`` values); indices are into ``x``. Non-finite values are missing.

    The running minimum runs over the whole array at once: windows that reach into the previous
    series only add candidates, which the exact check (per series) drops again.
    """
    n = len(x)
    if n == 0:
        empty = np.empty(0)
        return empty.astype(np.int64), empty, empty
    finite = np.isfinite(x)
    xs = np.where(finite, x, np.nan)
    starts = np.cumsum(lengths) - lengths
    filled = pl.Series(np.where(finite, x, np.inf))  # missing never is the minimum
    prev_min = filled.rolling_min(window, min_samples=1).shift(1, fill_value=np.inf).to_numpy()
    with np.errstate(invalid="ignore"):
        cand = finite & (xs - prev_min > min_jump)
    for a in starts:  # too little history at the start of every series
        cand[a : a + min_history] = False
    idx = np.flatnonzero(cand).astype(np.int64)
    start = np.zeros(n, dtype=np.int64)  # only read at idx: the start of each one's series
    start[idx] = starts[np.searchsorted(starts, idx, side="right") - 1]
    return _confirm(
        xs,
        idx,
        window=window,
        min_history=min_history,
        z=z,
        min_jump=min_jump,
        min_mad=min_mad,
        start=start,
    )


def _confirm(
    xs: np.ndarray,
    idx: np.ndarray,
    *,
    window: int,
    min_history: int,
    z: float,
    min_jump: float,
    min_mad: float,
    start: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates ``idx`` of ``xs`` (NaN = missing) with at least min_history values among
    their previous ``window`` ones (not before ``start[idx]``, the first index of their series)
    that beat the median of those by z robust sigmas and by min_jump; (index, z, x - median)."""
    if len(idx) == 0:
        empty = np.empty(0)
        return idx, empty, empty
    offsets = idx[:, None] - window + np.arange(window)[None, :]
    first = 0 if start is None else start[idx][:, None]
    win = np.where(offsets >= first, xs[np.clip(offsets, 0, None)], np.nan)
    enough = np.sum(~np.isnan(win), axis=1) >= min_history
    idx, win = idx[enough], win[enough]
    if len(idx) == 0:
        empty = np.empty(0)
        return idx, empty, empty
    med = np.nanmedian(win, axis=1)
    mad = np.nanmedian(np.abs(win - med[:, None]), axis=1)
    scale = MAD_SCALE * np.maximum(mad, min_mad)
    jump = xs[idx] - med
    zs = jump / scale
    keep = (zs > z) & (jump > min_jump)
    return idx[keep], zs[keep], jump[keep]


def group_events(steps: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Index ranges [i, j] of sorted ``steps`` where consecutive steps are at most ``gap`` apart."""
    if len(steps) == 0:
        return []
    events: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(steps)):
        if steps[i] - steps[i - 1] > gap:
            events.append((start, i - 1))
            start = i
    events.append((start, len(steps) - 1))
    return events
