"""The chart data of a run, computed by the analysis (the report only draws it).

The small tables (steps, scalars) come from the run's frames (already merged over ranks by
:mod:`gradlog.analysis.algebra`) and are decimated with min/max envelopes. The per-(step, tensor)
tables are read part by part (:mod:`gradlog.analysis.parts`) and folded onto the display's grid
of step buckets as they stream past (:mod:`gradlog.analysis.decimate`), so a run of a million steps
costs one pass over its parts and a few megabytes of memory; the decimation keeps spikes (max /
min-max envelopes) and histograms add exactly. Multi-rank runs are merged by the same algebra.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from gradlog.analysis import algebra
from gradlog.analysis.charts import (
    ExponentHistogram,
    FitCurve,
    FormatMark,
    Line,
    NormGrid,
    RatioChart,
    RunCharts,
    nums,
)
from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.decimate import (
    DEFAULT_MAX_POINTS,
    EnvelopeGrid,
    MaxGrid,
    Partial,
    StepBuckets,
    SumGrid,
    minmax_envelope,
)
from gradlog.analysis.frames import RunFrames, step_windows
from gradlog.analysis.loading import RunData
from gradlog.analysis.parts import (
    GRAD,
    PARAM,
    UPDATE,
    IntArray,
    Names,
    StatRows,
    prefetch,
    read_hist_part,
    read_stat_part,
    stat_rows,
)
from gradlog.analysis.trend import Convergence
from gradlog.schema import EXP_BINS, EXP_MAX, EXP_MIN, HIST_BINS

FloatArray = npt.NDArray[np.float64]


@dataclass
class Series:
    """One drawn line: x (steps) and y, already decimated."""

    x: FloatArray
    y: FloatArray

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class NormMatrix:
    """Per-tensor gradient norms on a grid of step buckets (max per bucket keeps spikes)."""

    tensors: list[str]
    bucket_starts: FloatArray
    width: int
    norms: FloatArray  # tensors x buckets; NaN where nothing was recorded
    nonfinite: npt.NDArray[np.bool_]  # tensors x buckets: any NaN/Inf gradient element


@dataclass
class ExpHistogram:
    """Gradient log2-exponent counts (bins as in schema.py): over time with all tensors merged,
    and per tensor over the whole run."""

    steps: FloatArray  # first step of each column
    counts: FloatArray  # columns x HIST_BINS
    width: int  # steps per bucket
    end: float  # one past the last step the last column stands for
    tensors: list[str] = field(default_factory=list)  # depth order
    tensor_counts: FloatArray = field(default_factory=lambda: np.zeros((0, HIST_BINS)))


RunSource = RunData
"""What the readers take: the analysis's view of a run (its usable parts)."""


def _step_range(src: RunSource, fallback: str | None = None) -> tuple[int, int] | None:
    """First and last step of the run (steps table, else scalars, else ``fallback``)."""
    for table in ("steps", "scalars", fallback):
        lf = src.scan(table) if table else None
        if lf is None:
            continue
        row = lf.select(pl.col("step").min().alias("a"), pl.col("step").max().alias("b")).collect()
        a, b = row["a"][0], row["b"][0]
        if a is not None:
            return int(a), int(b)
    return None


_KEY_STRIDE = 1 << 40
"""(tensor, step) as one int64: tensor * stride + step (steps stay below 2**40)."""


def pair_rows(p: StatRows, u: StatRows) -> tuple[IntArray, IntArray]:
    """Indices into ``p`` and into ``u`` of their rows of the same (tensor, step)."""
    kp = p.tensor * _KEY_STRIDE + p.step
    ku = u.tensor * _KEY_STRIDE + u.step
    if np.array_equal(kp, ku):  # the usual part: both recorded on the same steps, same order
        both = np.arange(len(kp))
        return both, both
    _, ip, iu = np.intersect1d(kp, ku, assume_unique=False, return_indices=True)
    return ip, iu


def _ratios_of(p: StatRows, u: StatRows, ip: IntArray, iu: IntArray) -> StatRows:
    """|update| / |param| of the paired rows (in the ``sumsq`` field)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(u.sumsq[iu].astype(np.float64)) / np.sqrt(p.sumsq[ip].astype(np.float64))
    return StatRows(p.tensor[ip], p.step[ip], ratio, p.nonfinite[ip])


def _unpaired(rows: StatRows, paired: IntArray, skip: int = 0) -> StatRows | None:
    """The rows from index ``skip`` on that are not in ``paired``."""
    keep = np.ones(len(rows), dtype=bool)
    keep[paired] = False
    keep[:skip] = False
    idx = np.flatnonzero(keep)
    return rows.take(idx) if len(idx) else None


def _concat(a: StatRows | None, b: StatRows | None) -> StatRows | None:
    if a is None or b is None:
        return b if a is None else a
    return StatRows.concat([a, b])


class _Leftovers:
    """Parameter and update rows that found no partner in their own part.

    They wait for the next part's leftovers (a step written across two parts), then are dropped:
    a ratio needs both.
    """

    def __init__(self) -> None:
        self._param: StatRows | None = None
        self._update: StatRows | None = None

    def add(self, param: StatRows | None, update: StatRows | None) -> StatRows | None:
        """Pair the new leftovers with the waiting ones; the ratios now complete, if any."""
        old_p, old_u = self._param, self._update
        p, u = _concat(old_p, param), _concat(old_u, update)
        if p is None or u is None:
            self._param, self._update = param, update
            return None
        ip, iu = pair_rows(p, u)
        self._param = _unpaired(p, ip, len(old_p) if old_p is not None else 0)
        self._update = _unpaired(u, iu, len(old_u) if old_u is not None else 0)
        return _ratios_of(p, u, ip, iu) if len(ip) else None


def _single(src: RunSource) -> bool:
    return src.layout == "single" or len({p.parent.name for p in src.parts["tensors"]}) <= 1


def _merged_stat_parts(src: RunSource, names: Names) -> Iterator[dict[int, StatRows]]:
    """Multi-rank runs: the ``tensors`` rows merged over ranks (the algebra's rule), window of
    steps by window (:func:`step_windows`: memory follows a window, not the run), by step."""
    for w in step_windows(src):
        lf = src.scan("tensors", only=w.parts)  # without rows a later part recorded again
        if lf is None:
            continue
        kinds = w.rows(lf).filter(pl.col("kind").is_in(["grad", "param", "update"]))
        merged = (
            algebra.merge_ranks(kinds, src.layout)
            .select("step", "tensor", "kind", "sumsq", "nonfinite")
            .sort("step", "kind", "tensor")
            .collect(engine="streaming")
        )
        for part in merged.iter_slices(2_000_000):
            yield stat_rows(part.to_arrow(), names)


@dataclass
class TensorViews:
    """What the per-tensor charts draw, read in one pass over the ``tensors`` table."""

    matrix: NormMatrix | None
    ratios: dict[str, Series]
    ndim: dict[str, int]


def _reduce_part(
    rows: dict[int, StatRows], grid: MaxGrid, env: EnvelopeGrid
) -> tuple[Partial | None, Partial | None, StatRows | None, StatRows | None]:
    """One part folded for the grids (pure, runs on reader threads) and its unpaired rows."""
    g = rows.get(GRAD)
    flow = grid.reduce(g.tensor, g.step, g.sumsq, g.nonfinite > 0) if g is not None else None
    p, u = rows.get(PARAM), rows.get(UPDATE)
    if p is None or u is None:
        return flow, None, p, u
    ip, iu = pair_rows(p, u)
    r = _ratios_of(p, u, ip, iu)
    return flow, env.reduce(r.tensor, r.step, r.sumsq), _unpaired(p, ip), _unpaired(u, iu)


def tensor_views(src: RunSource, max_buckets: int = 600, ratio_buckets: int = 200) -> TensorViews:
    """The gradient-flow matrix and the update-to-weight ratios, from one pass over the parts.

    Matrix: tensors (depth order) x ``max_buckets`` step buckets of the largest gradient L2 norm
    in each. Ratios: |update| / |param| per tensor at the steps where both were recorded, as a
    min/max envelope over ``ratio_buckets`` step buckets (at most two points per bucket).
    """
    empty = TensorViews(None, {}, {})
    files = src.parts.get("tensors") or []
    rng = _step_range(src, "tensors") if files else None
    if rng is None:
        return empty
    first, last = rng
    names = Names()
    grid = MaxGrid(StepBuckets.spanning(first, last, max_buckets))
    env = EnvelopeGrid(StepBuckets.spanning(first, last, ratio_buckets))

    def one(path: Path) -> tuple[Partial | None, Partial | None, StatRows | None, StatRows | None]:
        rows = read_stat_part(path, names, src.superseded.get(path))
        return _reduce_part(rows, grid, env) if rows else (None, None, None, None)

    parts = (
        (_reduce_part(rows, grid, env) for rows in _merged_stat_parts(src, names))
        if not _single(src)
        else prefetch(one, files)
    )
    leftovers = _Leftovers()
    for flow, ratio, left_p, left_u in parts:
        if flow is not None:
            grid.merge(flow)
        if ratio is not None:
            env.merge(ratio)
        late = leftovers.add(left_p, left_u)
        if late is not None:
            env.add(late.tensor, late.step, late.sumsq)
    return TensorViews(_matrix(src, names, grid), *_ratios(src, names, env))


def _matrix(src: RunSource, names: Names, grid: MaxGrid) -> NormMatrix | None:
    seen = grid.seen
    present = [names.names[i] for i in np.flatnonzero(seen.any(axis=1))]
    if not present:
        return None
    tensors = src.run.tensor_order(present)
    rows = [names.ids[t] for t in tensors]
    norms = np.sqrt(np.maximum(grid.max[rows], 0.0))
    norms[~seen[rows]] = np.nan
    b = grid.buckets
    return NormMatrix(tensors, b.starts(), b.width, norms, grid.flag[rows])


def _ratios(
    src: RunSource, names: Names, env: EnvelopeGrid
) -> tuple[dict[str, Series], dict[str, int]]:
    present = [names.names[i] for i in np.flatnonzero(env.present())]
    ndim = {
        str(t.get("name")): len(t.get("shape") or [])
        for t in src.run.catalogue
        if isinstance(t.get("shape"), list)
    }
    out = {name: Series(*env.series(names.ids[name])) for name in src.run.tensor_order(present)}
    return out, {n: ndim.get(n, 0) for n in out}


def exponent_histogram(src: RunSource, max_columns: int = 300) -> ExpHistogram | None:
    """Gradient exponent histograms summed over tensors and ranks per bucket of steps, and summed
    over the whole run per tensor.

    Every recorded histogram counts (they add exactly); the parts are read one at a time, so a long
    run never holds more than a few parts' rows of 279 counts.
    """
    files = src.parts.get("hists") or []
    rng = _step_range(src, "hists") if files else None
    if rng is None:
        return None
    first, last = rng
    names = Names()
    over_time = SumGrid(StepBuckets.spanning(first, last, max_columns), HIST_BINS)
    per_tensor = SumGrid(StepBuckets.spanning(first, last, 1), HIST_BINS)

    def one(path: Path) -> tuple[Partial, Partial, int] | None:
        rows = read_hist_part(path, names, src.superseded.get(path))
        if rows is None:
            return None
        every = np.zeros(len(rows.step), dtype=np.int64)  # one row: all tensors together
        return (
            over_time.reduce(every, rows.step, rows.bins),
            per_tensor.reduce(rows.tensor, rows.step, rows.bins),
            int(rows.step.max()),
        )

    seen_last = -1
    # one part ahead, not two: a part of histograms is rows x 279 counts (160 MB for 72k rows)
    for time_part, tensor_part, part_last in prefetch(one, files, depth=1):
        over_time.merge(time_part)
        per_tensor.merge(tensor_part)
        seen_last = max(seen_last, part_last)
    if not over_time.rows:
        return None
    cols = np.flatnonzero(over_time.seen[0])
    tensors = src.run.tensor_order([names.names[i] for i in np.flatnonzero(per_tensor.seen[:, 0])])
    return ExpHistogram(
        over_time.first[0, cols].astype(np.float64),
        over_time.sums[0, cols].astype(np.float64),
        over_time.buckets.width,
        float(max(seen_last, last) + 1),
        tensors,
        per_tensor.sums[[names.ids[t] for t in tensors], 0].astype(np.float64),
    )


def _line(x: npt.ArrayLike, y: npt.ArrayLike, max_points: int = DEFAULT_MAX_POINTS) -> Line:
    ex, ey = minmax_envelope(x, y, max_points)
    return Line(nums(ex), nums(ey))


def _series_line(s: Series | None) -> Line | None:
    return Line(nums(s.x), nums(s.y)) if s is not None and len(s) else None


def scalar_lines(scalars: pl.DataFrame) -> dict[str, Line]:
    """Every logged scalar (loss, ``lr/<group>``, ...) as a decimated line, by name."""
    out: dict[str, Line] = {}
    for (name,), part in scalars.sort("name", "step").group_by("name", maintain_order=True):
        out[str(name)] = _line(part["step"].to_numpy(), part["value"].to_numpy())
    return out


def _grid(v: Series | NormMatrix | None) -> NormGrid | None:
    if not isinstance(v, NormMatrix):
        return None
    rows, cols = np.nonzero(v.nonfinite)
    return NormGrid(
        list(v.tensors),
        nums(v.bucket_starts),
        int(v.width),
        [nums(r, 4) for r in v.norms],
        [(int(a), int(b)) for a, b in zip(rows.tolist(), cols.tolist(), strict=True)],
    )


def _hist_chart(h: ExpHistogram, shift: int) -> ExponentHistogram | None:
    """The exponent range worth drawing (occupied bins and the fp16 limits at this loss scale,
    two exponents of margin) and the counts on it."""
    exps = h.counts[:, 1 : 1 + EXP_BINS]
    occupied = np.flatnonzero(exps.sum(axis=0) > 0)
    if not len(occupied):
        return None
    marks = [
        FormatMark(m.label, m.exponent - shift if m.scaled else m.exponent, m.format)
        for m in algebra.FORMAT_LIMITS
    ]
    fp16 = [m.exponent for m in marks if m.format == "fp16"]
    k_lo = algebra.exponent_of_bin(int(occupied[0]) + 1)
    k_hi = algebra.exponent_of_bin(int(occupied[-1]) + 1)
    lo = max(int(min(k_lo, math.floor(min(fp16)))) - 2, EXP_MIN)
    hi = min(int(max(k_hi, math.ceil(max(fp16)))) + 2, EXP_MAX)
    sel = slice(1 + lo - EXP_MIN, 2 + hi - EXP_MIN)
    return ExponentHistogram(
        list(range(lo, hi + 1)),
        nums(h.steps),
        float(h.end),
        int(h.width),
        h.counts[:, sel].astype(np.int64).tolist(),
        h.counts.sum(axis=1).astype(np.int64).tolist(),
        list(h.tensors),
        h.tensor_counts[:, sel].astype(np.int64).tolist(),
        h.tensor_counts.sum(axis=1).astype(np.int64).tolist(),
        shift,
        [m for m in marks if lo <= m.exponent <= hi + 1],
    )


def _model_curve(model: str, params: Sequence[float], t: FloatArray) -> FloatArray:
    a, b, c = params
    if model == "power":
        out: FloatArray = c + a * np.power(t + 1.0, -b)
    else:
        out = c + a * np.exp(-b * t)
    return out


def fit_curve(conv: Convergence | None, loss: Line | None) -> FitCurve | None:
    """The best fit drawn from the first finite loss to the last step, then to the projection."""
    if conv is None or conv.model is None or loss is None:
        return None
    best = next((f for f in conv.fits if f.model == conv.model), None)
    xs = [x for x, y in zip(loss.x, loss.y, strict=True) if x is not None and y is not None]
    if best is None or len(best.params) != 3 or not xs:
        return None
    first, last = float(xs[0]), float(conv.final_step)
    fit_x = np.linspace(first, last, 200)
    fit = Line(nums(fit_x), nums(_model_curve(conv.model, best.params, fit_x - conv.t0)))
    proj = None
    if conv.projected_step > last:
        px = np.linspace(last, float(conv.projected_step), 100)
        proj = Line(nums(px), nums(_model_curve(conv.model, best.params, px - conv.t0)))
    return FitCurve(conv.model, fit, proj)


def run_charts(
    data: RunData, frames: RunFrames, conv: Convergence | None, cfg: AnalysisConfig
) -> RunCharts:
    """Everything the run page draws, from the run's frames and one streaming pass per table."""
    lines = scalar_lines(frames.scalars)
    loss = lines.pop(cfg.loss_name, None)
    lrs = {k: lines.pop(k) for k in sorted(lines) if k.startswith("lr/")}
    preclip = lines.pop("grad_norm_preclip", None)
    lines.pop("grad_clip_limit", None)  # drawn by no chart; the clipping hint reads it
    steps = frames.steps.sort("step")
    x = steps["step"].to_numpy()
    norm = steps["grad_norm"].cast(pl.Float64).to_numpy()
    scale = steps["loss_scale"].cast(pl.Float64).to_numpy()
    views = tensor_views(data)
    hist = exponent_histogram(data)
    ratios = None
    if views.ratios:
        ratios = RatioChart(
            {k: line for k, s in views.ratios.items() if (line := _series_line(s)) is not None},
            views.ndim,
            (cfg.update_ratio_low, cfg.update_ratio_high),
            cfg.update_ratio_target,
        )
    return RunCharts(
        resolution=frames.resolution,
        loss_name=cfg.loss_name,
        loss=loss,
        lrs=lrs,
        grad_norm=_line(x, norm) if len(x) and np.isfinite(norm).any() else None,
        preclip=preclip,
        loss_scale=_line(x, scale) if np.isfinite(scale).any() else None,
        others=lines,
        flow=_grid(views.matrix),
        ratios=ratios,
        hist=_hist_chart(hist, frames.loss_scale_shift) if hist is not None else None,
        fit=fit_curve(conv, loss),
    )
