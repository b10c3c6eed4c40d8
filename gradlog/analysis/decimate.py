"""Display decimation that keeps spikes, and exact reduction of long runs onto a display grid.

Only what is drawn is decimated; the data on disk is never touched.

- :func:`minmax_envelope`: each bucket of ``width`` consecutive points contributes its smallest and
  its largest value, at their own x, in x order, so a one-step spike (or dip) survives any amount
  of decimation. Non-finite values are skipped; a bucket with no finite value contributes one NaN
  point (a gap in the line).
- The grids (:class:`MaxGrid`, :class:`EnvelopeGrid`, :class:`SumGrid`) do the same over buckets of
  steps (:class:`StepBuckets`) for many rows (tensors) at once, fed one part of a run at a time:
  the largest value per cell, the min/max envelope per cell, or exact sums (histograms). A part is
  reduced to its cells by a pure ``reduce`` (reader threads do it) and folded in by ``merge``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

DEFAULT_MAX_POINTS = 2000
"""Points per drawn line: about 1,000 buckets of (min, max)."""


def bucket_width(n: int, max_points: int) -> int:
    """Points per bucket so that ``n`` points become at most ``max_points`` (two per bucket)."""
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if n <= max_points:
        return 1
    return math.ceil(n / (max_points // 2))


def minmax_envelope(
    x: npt.ArrayLike, y: npt.ArrayLike, max_points: int = DEFAULT_MAX_POINTS
) -> tuple[FloatArray, FloatArray]:
    """``(x, y)`` reduced to at most ``max_points`` points: per bucket its min and its max.

    ``x`` must be sorted. Returns float arrays; inputs at or under ``max_points`` come back whole.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-d and of equal length, got {xs.shape} and {ys.shape}")
    n = len(xs)
    width = bucket_width(n, max_points)
    if width == 1:
        return xs.copy(), ys.copy()
    buckets = math.ceil(n / width)
    pad = buckets * width - n
    finite = np.isfinite(ys)
    lo = np.where(finite, ys, np.inf)
    hi = np.where(finite, ys, -np.inf)
    if pad:
        lo = np.concatenate([lo, np.full(pad, np.inf)])
        hi = np.concatenate([hi, np.full(pad, -np.inf)])
    lo2 = lo.reshape(buckets, width)
    hi2 = hi.reshape(buckets, width)
    base = np.arange(buckets, dtype=np.int64) * width
    i_min = base + lo2.argmin(axis=1)
    i_max = base + hi2.argmax(axis=1)
    has = np.isfinite(lo2).any(axis=1)
    first = np.minimum(i_min, i_max)
    second = np.maximum(i_min, i_max)
    # (first, second) per bucket; an empty bucket becomes one NaN point at its first x.
    idx = np.stack([first, second], axis=1).reshape(-1)
    keep = np.stack([has, has & (second != first)], axis=1).reshape(-1)
    empty_first = np.stack([~has, np.zeros_like(has)], axis=1).reshape(-1)
    keep |= empty_first
    idx = idx[keep]
    out_y = ys[np.minimum(idx, n - 1)].copy()
    out_y[empty_first[keep]] = np.nan
    out_x = xs[np.minimum(idx, n - 1)].copy()
    return out_x, out_y


@dataclass(frozen=True)
class StepBuckets:
    """``count`` consecutive buckets of ``width`` steps from ``first``: a display's time grid.

    Long runs are read part by part and reduced onto this grid as they stream past, so a reader
    never holds more than one part plus the grid.
    """

    first: int
    width: int
    count: int

    @classmethod
    def spanning(cls, first: int, last: int, max_buckets: int) -> StepBuckets:
        """The narrowest whole-step buckets that cover ``first..last`` in ``max_buckets``."""
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be at least 1, got {max_buckets}")
        if last < first:
            raise ValueError(f"last step {last} is before first step {first}")
        width = max(1, math.ceil((last - first + 1) / max_buckets))
        return cls(first, width, (last - first) // width + 1)

    def index(self, steps: npt.ArrayLike) -> IntArray:
        """The bucket of each step; steps outside the range go to the first or last bucket."""
        b = np.asarray(steps, dtype=np.int64) - self.first
        if self.width > 1:
            b //= self.width
        return np.clip(b, 0, self.count - 1, out=b)

    def starts(self) -> FloatArray:
        """The first step of every bucket."""
        return self.first + np.arange(self.count, dtype=np.float64) * self.width


_NONE = np.iinfo(np.int64).max
"""Step placeholder of cells that received nothing."""


def _grouped(key: IntArray, *arrays: npt.NDArray[Any]) -> tuple[IntArray, list[npt.NDArray[Any]]]:
    """``key`` and ``arrays`` reordered (stably) so that equal keys are adjacent; no copy when
    ``key`` is already non-decreasing (as in a part: rows are sorted by tensor, then step)."""
    if len(key) < 2 or bool((key[1:] >= key[:-1]).all()):
        return key, list(arrays)
    order = np.argsort(key, kind="stable")
    return key[order], [a[order] for a in arrays]


def run_starts(key: npt.NDArray[Any]) -> IntArray:
    """Index of the first element of each run of equal consecutive values of ``key``."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))


@dataclass
class Partial:
    """One part's points reduced to its cells (``cells`` are flat: row * buckets + bucket).

    Made by a grid's ``reduce`` (pure, so parts can be reduced on reader threads) and folded in
    by its ``merge``, in part order.
    """

    cells: IntArray
    values: dict[str, npt.NDArray[Any]]


class _Grid:
    """Cells of (row, bucket); rows are added as new ids appear (tensors are met while reading)."""

    def __init__(self, buckets: StepBuckets) -> None:
        self.buckets = buckets
        self.rows = 0

    def keys(self, rows: npt.ArrayLike, steps: npt.ArrayLike) -> IntArray:
        """The flat cell of each point."""
        return np.asarray(rows, dtype=np.int64) * self.buckets.count + self.buckets.index(steps)

    def _fit(self, cells: IntArray) -> None:
        if len(cells):
            need = int(cells.max()) // self.buckets.count + 1
            if need > self.rows:
                self._grow(need)
                self.rows = need

    def _grow(self, rows: int) -> None:
        raise NotImplementedError

    @staticmethod
    def _extend(a: npt.NDArray[Any], rows: int, fill: Any) -> npt.NDArray[Any]:
        pad = np.full((rows - a.shape[0], *a.shape[1:]), fill, dtype=a.dtype)
        return np.concatenate([a, pad])


class MaxGrid(_Grid):
    """Per cell: the largest value (NaN ignored) and whether any point had its flag set."""

    def __init__(self, buckets: StepBuckets) -> None:
        super().__init__(buckets)
        self._max: FloatArray = np.zeros((0, buckets.count))
        self._seen: BoolArray = np.zeros((0, buckets.count), dtype=bool)
        self._flag: BoolArray = np.zeros((0, buckets.count), dtype=bool)

    def _grow(self, rows: int) -> None:
        self._max = self._extend(self._max, rows, -np.inf)
        self._seen = self._extend(self._seen, rows, False)
        self._flag = self._extend(self._flag, rows, False)

    def reduce(
        self, rows: npt.ArrayLike, steps: npt.ArrayLike, values: npt.ArrayLike, flags: npt.ArrayLike
    ) -> Partial:
        """Points (row, step, value, flag) reduced to their cells."""
        vals = np.asarray(values)
        if not np.issubdtype(vals.dtype, np.floating):
            vals = vals.astype(np.float64)
        key, (vals, flg) = _grouped(self.keys(rows, steps), vals, np.asarray(flags, dtype=bool))
        starts = run_starts(key)
        if len(starts):
            vals = np.maximum.reduceat(np.where(np.isnan(vals), -np.inf, vals), starts)
            flg = np.logical_or.reduceat(flg, starts)
        return Partial(
            key[starts],
            {"max": vals[: len(starts)].astype(np.float64), "flag": flg[: len(starts)]},
        )

    def merge(self, part: Partial) -> None:
        """Fold a reduced part in."""
        self._fit(part.cells)
        np.maximum.at(self._max.reshape(-1), part.cells, part.values["max"])
        np.logical_or.at(self._flag.reshape(-1), part.cells, part.values["flag"])
        self._seen.reshape(-1)[part.cells] = True

    def add(
        self, rows: npt.ArrayLike, steps: npt.ArrayLike, values: npt.ArrayLike, flags: npt.ArrayLike
    ) -> None:
        """Fold points (row, step, value, flag) into their cells."""
        self.merge(self.reduce(rows, steps, values, flags))

    @property
    def max(self) -> FloatArray:
        """rows x buckets of the largest value; NaN where no point fell (or only NaN)."""
        return np.where(self._seen & (self._max > -np.inf), self._max, np.nan)

    @property
    def seen(self) -> BoolArray:
        """rows x buckets: whether any point fell in the cell."""
        out: BoolArray = self._seen.copy()
        return out

    @property
    def flag(self) -> BoolArray:
        """rows x buckets: whether any point in the cell had its flag set."""
        out: BoolArray = self._flag.copy()
        return out


class SumGrid(_Grid):
    """Per cell: the sum of vectors (histograms merge exactly by addition) and its first step."""

    def __init__(self, buckets: StepBuckets, size: int) -> None:
        super().__init__(buckets)
        self.size = size
        self._sum: IntArray = np.zeros((0, buckets.count, size), dtype=np.int64)
        self._first: IntArray = np.zeros((0, buckets.count), dtype=np.int64)

    def _grow(self, rows: int) -> None:
        self._sum = self._extend(self._sum, rows, 0)
        self._first = self._extend(self._first, rows, _NONE)

    def reduce(self, rows: npt.ArrayLike, steps: npt.ArrayLike, vectors: npt.ArrayLike) -> Partial:
        """Vectors (one per row and step) summed per cell."""
        from scipy import sparse

        key = self.keys(rows, steps)
        vecs = np.asarray(vectors, dtype=np.int64).reshape(len(key), self.size)
        cells, inverse = np.unique(key, return_inverse=True)
        n = len(key)
        # one sparse product sums the rows of every cell (np.add.reduceat over rows is far slower)
        onehot = sparse.csr_array(
            (np.ones(n, dtype=np.int64), (inverse.reshape(-1), np.arange(n))), shape=(len(cells), n)
        )
        first = np.full(len(cells), _NONE, dtype=np.int64)
        np.minimum.at(first, inverse.reshape(-1), np.asarray(steps, dtype=np.int64))
        return Partial(cells, {"sum": np.asarray(onehot @ vecs, dtype=np.int64), "first": first})

    def merge(self, part: Partial) -> None:
        """Fold a reduced part in."""
        self._fit(part.cells)
        np.add.at(self._sum.reshape(-1, self.size), part.cells, part.values["sum"])
        np.minimum.at(self._first.reshape(-1), part.cells, part.values["first"])

    def add(self, rows: npt.ArrayLike, steps: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add each vector (one per row and step) to its cell."""
        self.merge(self.reduce(rows, steps, vectors))

    @property
    def sums(self) -> IntArray:
        """rows x buckets x size."""
        return self._sum

    @property
    def seen(self) -> BoolArray:
        """rows x buckets: whether any vector fell in the cell."""
        out: BoolArray = self._first != _NONE
        return out

    @property
    def first(self) -> IntArray:
        """rows x buckets: the first step that fell in each cell (int64 max where none)."""
        return self._first


class EnvelopeGrid(_Grid):
    """Per cell: the smallest and the largest finite value with their steps (a min/max envelope).

    The same points as :func:`minmax_envelope` draws, with buckets of steps instead of buckets of
    points, so that it can be built part by part. Ties go to the earlier step. A cell that received
    only non-finite values draws one NaN point (a gap) at its first step.
    """

    def __init__(self, buckets: StepBuckets) -> None:
        super().__init__(buckets)
        shape = (0, buckets.count)
        self._lo: FloatArray = np.zeros(shape)
        self._hi: FloatArray = np.zeros(shape)
        self._lo_x: IntArray = np.zeros(shape, dtype=np.int64)
        self._hi_x: IntArray = np.zeros(shape, dtype=np.int64)
        self._first: IntArray = np.zeros(shape, dtype=np.int64)

    def _grow(self, rows: int) -> None:
        self._lo = self._extend(self._lo, rows, np.inf)
        self._hi = self._extend(self._hi, rows, -np.inf)
        self._lo_x = self._extend(self._lo_x, rows, _NONE)
        self._hi_x = self._extend(self._hi_x, rows, _NONE)
        self._first = self._extend(self._first, rows, _NONE)

    def reduce(self, rows: npt.ArrayLike, steps: npt.ArrayLike, values: npt.ArrayLike) -> Partial:
        """Points (row, step, value) reduced to each cell's first step, min and max."""
        x = np.asarray(steps, dtype=np.int64)
        y = np.asarray(values, dtype=np.float64)
        key, (x, y) = _grouped(self.keys(rows, x), x, y)
        starts = run_starts(key)
        out: dict[str, npt.NDArray[Any]] = {}
        if len(starts):
            out["first"] = np.minimum.reduceat(x, starts)
        else:
            out["first"] = np.zeros(0, dtype=np.int64)
        cells = key[starts]
        ok = np.isfinite(y)
        if not ok.all():
            key, x, y = key[ok], x[ok], y[ok]
            starts = run_starts(key)
        out["finite"] = key[starts]
        lengths = np.diff(np.append(starts, len(key)))
        for name, ufunc in (("lo", np.minimum), ("hi", np.maximum)):
            best = ufunc.reduceat(y, starts) if len(starts) else y[:0]
            hit = y == np.repeat(best, lengths)
            out[name] = best
            out[f"{name}_x"] = (  # ties: the earliest step
                np.minimum.reduceat(np.where(hit, x, _NONE), starts) if len(starts) else x[:0]
            )
        return Partial(cells, out)

    def merge(self, part: Partial) -> None:
        """Fold a reduced part in."""
        self._fit(part.cells)
        v = part.values
        np.minimum.at(self._first.reshape(-1), part.cells, v["first"])
        cells = v["finite"]
        for name, acc, acc_x in (("lo", self._lo, self._lo_x), ("hi", self._hi, self._hi_x)):
            best, best_x = v[name], v[f"{name}_x"]
            a, ax = acc.reshape(-1), acc_x.reshape(-1)
            old = a[cells]
            better = ((best < old) if name == "lo" else (best > old)) | (
                (best == old) & (best_x < ax[cells])
            )
            a[cells[better]] = best[better]
            ax[cells[better]] = best_x[better]

    def add(self, rows: npt.ArrayLike, steps: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Fold points (row, step, value) into their cells."""
        self.merge(self.reduce(rows, steps, values))

    def present(self) -> BoolArray:
        """Rows that received any point."""
        out: BoolArray = (self._first != _NONE).any(axis=1)
        return out

    def series(self, row: int) -> tuple[FloatArray, FloatArray]:
        """The envelope of ``row`` as drawn: per cell its min and max in step order."""
        if row >= self.rows:
            return np.zeros(0), np.zeros(0)
        seen = self._first[row] != _NONE
        has = np.isfinite(self._lo[row])
        lo_x, hi_x = self._lo_x[row], self._hi_x[row]
        first = np.where(has, np.minimum(lo_x, hi_x), self._first[row])
        second = np.maximum(lo_x, hi_x)
        lo_first = lo_x <= hi_x
        y_first = np.where(has, np.where(lo_first, self._lo[row], self._hi[row]), np.nan)
        y_second = np.where(lo_first, self._hi[row], self._lo[row])
        xs = np.stack([first, second], axis=1).reshape(-1)
        ys = np.stack([y_first, y_second], axis=1).reshape(-1)
        keep = np.stack([seen, has & (second != first)], axis=1).reshape(-1)
        return xs[keep].astype(np.float64), ys[keep]
