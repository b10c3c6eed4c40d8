"""Display decimation against naive references, and its guarantees (spikes survive, sums are
exact, the order in which parts arrive does not matter)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from gradlog.analysis.decimate import (
    EnvelopeGrid,
    MaxGrid,
    StepBuckets,
    SumGrid,
    bucket_width,
    minmax_envelope,
)


def naive_envelope(x: Any, y: Any, max_points: int) -> tuple[list[float], list[float]]:
    n = len(x)
    if n <= max_points:
        return list(x), list(y)
    width = math.ceil(n / (max_points // 2))
    xs, ys = [], []
    for a in range(0, n, width):
        idx = [i for i in range(a, min(n, a + width)) if np.isfinite(y[i])]
        if not idx:
            xs.append(x[a])
            ys.append(float("nan"))
            continue
        lo = min(idx, key=lambda i: (y[i], i))
        hi = max(idx, key=lambda i: (y[i], -i))
        for i in sorted({lo, hi}):
            xs.append(x[i])
            ys.append(y[i])
    return xs, ys


@pytest.mark.parametrize("n", [1, 7, 100, 1001, 5003])
@pytest.mark.parametrize("max_points", [2, 10, 64, 2000])
def test_envelope_matches_naive(n: int, max_points: int) -> None:
    rng = np.random.default_rng(n * 31 + max_points)
    x = np.arange(n, dtype=float) * 3
    y = rng.normal(size=n)
    y[rng.random(n) < 0.05] = np.nan
    gx, gy = minmax_envelope(x, y, max_points)
    rx, ry = naive_envelope(x, y, max_points)
    np.testing.assert_array_equal(gx, rx)
    np.testing.assert_array_equal(gy, ry)  # NaN compares equal here
    assert len(gx) <= max(max_points, n if n <= max_points else 0) or len(gx) <= max_points


def test_single_spike_survives_heavy_decimation() -> None:
    y = np.ones(1_000_000)
    y[654_321] = 1e6
    y[123_456] = -5
    x, out = minmax_envelope(np.arange(len(y)), y, 200)
    assert len(out) <= 200
    assert out.max() == 1e6
    assert x[out.argmax()] == 654_321
    assert out.min() == -5
    assert x[out.argmin()] == 123_456


def test_all_nan_bucket_becomes_a_gap_and_inf_is_skipped() -> None:
    y = np.array([np.nan] * 10 + [1.0, np.inf, 2.0, -np.inf] + [3.0] * 6)
    _, out = minmax_envelope(np.arange(20), y, 4)
    assert np.isnan(out[0])
    assert np.isfinite(out[1:]).all()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        minmax_envelope([1, 2, 3], [1, 2], 10)
    with pytest.raises(ValueError, match="at least 2"):
        bucket_width(10, 1)


def _points(seed: int, n: int = 3000, rows: int = 5, steps: int = 1000) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    y = rng.lognormal(0, 1, n)
    y[rng.random(n) < 0.05] = np.nan
    y[rng.random(n) < 0.02] = np.inf
    y[rng.random(n) < 0.05] = 1.0  # ties
    return {
        "row": rng.integers(0, rows, n),
        "step": rng.integers(0, steps, n),
        "y": y,
        "flag": rng.random(n) < 0.01,
        "vec": rng.integers(0, 9, (n, 4)),
    }


def _cells(p: dict[str, Any], b: StepBuckets) -> dict[tuple[int, int], list[int]]:
    cells: dict[tuple[int, int], list[int]] = {}
    for i in range(len(p["step"])):
        bucket = min(max((int(p["step"][i]) - b.first) // b.width, 0), b.count - 1)
        cells.setdefault((int(p["row"][i]), bucket), []).append(i)
    return cells


def _feed(grid: Any, p: dict[str, Any], chunks: int, seed: int, *fields: str) -> None:
    """``p`` in ``chunks`` pieces, in shuffled order (parts need not be sorted)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(p["step"]))
    for idx in np.array_split(order, chunks):
        grid.add(p["row"][idx], p["step"][idx], *(p[f][idx] for f in fields))


@pytest.mark.parametrize("chunks", [1, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_max_grid_matches_naive(chunks: int, seed: int) -> None:
    p = _points(seed)
    b = StepBuckets.spanning(-5, 990, 37)
    grid = MaxGrid(b)
    _feed(grid, p, chunks, seed, "y", "flag")
    want = np.full((5, b.count), np.nan)
    flag = np.zeros((5, b.count), dtype=bool)
    for (r, c), idx in _cells(p, b).items():
        vals = [p["y"][i] for i in idx if not np.isnan(p["y"][i])]
        want[r, c] = max(vals) if vals else np.nan
        flag[r, c] = any(p["flag"][i] for i in idx)
    np.testing.assert_array_equal(grid.max, want)
    np.testing.assert_array_equal(grid.flag, flag)


def naive_cell_envelope(x: list[int], y: list[float]) -> tuple[list[float], list[float]]:
    finite = [i for i in range(len(x)) if np.isfinite(y[i])]
    if not finite:
        return [float(min(x))], [math.nan]
    lo = min(finite, key=lambda i: (y[i], x[i]))
    hi = max(finite, key=lambda i: (y[i], -x[i]))
    pts = sorted({(x[lo], y[lo]), (x[hi], y[hi])})
    return [float(a) for a, _ in pts], [v for _, v in pts]


@pytest.mark.parametrize("chunks", [1, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_envelope_grid_matches_naive(chunks: int, seed: int) -> None:
    p = _points(seed)
    # one point per (row, step) at most, as in a run
    _, first = np.unique(p["row"] * 10_000 + p["step"], return_index=True)
    p = {k: v[first] for k, v in p.items()}
    b = StepBuckets.spanning(0, 999, 40)
    grid = EnvelopeGrid(b)
    _feed(grid, p, chunks, seed, "y")
    cells = _cells(p, b)
    for row in range(5):
        xs: list[float] = []
        ys: list[float] = []
        for c in range(b.count):
            idx = cells.get((row, c))
            if idx:
                cx, cy = naive_cell_envelope(
                    [int(p["step"][i]) for i in idx], [p["y"][i] for i in idx]
                )
                xs += cx
                ys += cy
        gx, gy = grid.series(row)
        np.testing.assert_array_equal(gx, xs)
        np.testing.assert_array_equal(gy, ys)


@pytest.mark.parametrize("n", [1001, 5003])
def test_envelope_grid_is_minmax_envelope_for_one_point_per_step(n: int) -> None:
    rng = np.random.default_rng(n)
    y = rng.normal(size=n)
    y[rng.random(n) < 0.05] = np.nan
    grid = EnvelopeGrid(StepBuckets.spanning(0, n - 1, 100))
    _feed(grid, {"row": np.zeros(n, int), "step": np.arange(n), "y": y}, 5, n, "y")
    gx, gy = grid.series(0)
    rx, ry = minmax_envelope(np.arange(n), y, 200)
    np.testing.assert_array_equal(gx, rx)
    np.testing.assert_array_equal(gy, ry)


def test_grids_keep_a_one_step_spike() -> None:
    n = 1_000_000
    y = np.ones(n)
    y[654_321] = 1e6
    y[123_457] = -5
    b = StepBuckets.spanning(0, n - 1, 100)
    env, mx = EnvelopeGrid(b), MaxGrid(b)
    for part in np.array_split(np.arange(n), 13):
        env.add(np.zeros(len(part), int), part, y[part])
        mx.add(np.zeros(len(part), int), part, y[part], np.zeros(len(part), bool))
    x, out = env.series(0)
    assert len(out) <= 200
    assert out.max() == 1e6
    assert x[out.argmax()] == 654_321
    assert x[out.argmin()] == 123_457
    assert mx.max[0, 65] == 1e6


@pytest.mark.parametrize("chunks", [1, 5])
def test_sum_grid_adds_exactly(chunks: int) -> None:
    p = _points(3)
    b = StepBuckets.spanning(0, 999, 30)
    grid = SumGrid(b, 4)
    _feed(grid, p, chunks, 3, "vec")
    want = np.zeros((5, b.count, 4), dtype=np.int64)
    for (r, c), idx in _cells(p, b).items():
        want[r, c] = p["vec"][idx].sum(axis=0)
        assert grid.first[r, c] == min(p["step"][i] for i in idx)
    np.testing.assert_array_equal(grid.sums, want)
    assert grid.sums.sum() == p["vec"].sum()


def test_step_buckets() -> None:
    b = StepBuckets.spanning(10, 109, 30)
    assert (b.width, b.count) == (4, 25)
    np.testing.assert_array_equal(b.index([0, 10, 13, 14, 109, 500]), [0, 0, 0, 1, 24, 24])
    assert b.starts()[-1] == 106
    assert StepBuckets.spanning(5, 5, 10) == StepBuckets(5, 1, 1)
    with pytest.raises(ValueError, match="at least 1"):
        StepBuckets.spanning(0, 10, 0)
    with pytest.raises(ValueError, match="before first step"):
        StepBuckets.spanning(10, 0, 5)
