"""What the charts need, read from a run's committed Parquet parts (never torch).

The small tables (steps, scalars) are read with polars. The per-(step, tensor) tables are read part
by part (:mod:`gradlog.report.parts`) and folded onto the display's grid of step buckets as they
stream past (:mod:`gradlog.report.decimate`), so a run of a million steps costs one pass over its
parts and a few megabytes of memory; the decimation keeps spikes (max / min-max envelopes) and
histograms add exactly. Ranks are merged as docs/FORMAT.md says (counts and sums add); where every
rank holds the whole tensor (DDP replicas) the sums are divided by the number of ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from gradlog import rundir
from gradlog.report.decimate import (
    DEFAULT_MAX_POINTS,
    EnvelopeGrid,
    MaxGrid,
    Partial,
    StepBuckets,
    SumGrid,
    minmax_envelope,
)
from gradlog.report.parts import (
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
from gradlog.schema import EXP_MAX, EXP_MIN, HIST_BINS, TABLES

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


@dataclass
class RunSource:
    """A run directory opened for reading: its meta.json, status and committed parts."""

    path: Path
    meta: dict[str, Any]
    status: str
    parts: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        ws = self.meta.get("world_size", 1)
        return ws if isinstance(ws, int) and ws > 0 else 1

    @property
    def multi_rank(self) -> bool:
        ranks = {p.parent.name for files in self.parts.values() for p in files}
        return self.world_size > 1 or len(ranks) > 1

    def catalogue(self) -> list[dict[str, Any]]:
        cat = self.meta.get("tensors")
        return [t for t in cat if isinstance(t, dict)] if isinstance(cat, list) else []

    def tensor_order(self, present: list[str]) -> list[str]:
        """``present`` in depth order (input side first); unknown tensors last, by name."""
        depth: dict[str, int] = {}
        for i, t in enumerate(self.catalogue()):
            d = t.get("depth")
            depth[str(t.get("name"))] = d if isinstance(d, int) else i
        known = sorted((n for n in present if n in depth), key=lambda n: depth[n])
        return known + sorted(n for n in present if n not in depth)

    def scan(self, table: str) -> pl.LazyFrame | None:
        files = self.parts.get(table) or []
        if not files:
            return None
        lf = pl.scan_parquet(files, hive_partitioning=True)
        casts = {c: pl.String for c in ("tensor", "kind", "name") if c in TABLES[table].names}
        return lf.with_columns([pl.col(c).cast(t) for c, t in casts.items()])


def open_run(path: Path) -> RunSource:
    """meta.json and the committed parts of the run at ``path``."""
    run = rundir.open_run(path).require()
    return RunSource(path, run.meta, run.status, {t: run.files(t) for t in TABLES})


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


def _replica_div(numel: pl.Expr) -> pl.Expr:
    """Divisor of additive statistics: the rank count where every rank held the whole tensor."""
    n = pl.col("n_ranks")
    replicated = (n > 1) & numel.is_not_null() & (pl.col("count") == numel * n)
    return pl.when(replicated).then(n).otherwise(1).cast(pl.Float64)


def scalar_series(src: RunSource, max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Series]:
    """Every logged scalar (loss, ``lr/<group>``, ...) as a decimated series, by name."""
    lf = src.scan("scalars")
    if lf is None:
        return {}
    df = lf.group_by("name", "step").agg(pl.col("value").mean()).sort("name", "step").collect()
    out: dict[str, Series] = {}
    for (name,), part in df.group_by("name", maintain_order=True):
        x, y = minmax_envelope(part["step"].to_numpy(), part["value"].to_numpy(), max_points)
        out[str(name)] = Series(x, y)
    return out


def step_series(src: RunSource, max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Series]:
    """From the steps table: the global gradient norm (post-clip), loss scale and skipped steps."""
    lf = src.scan("steps")
    if lf is None:
        return {}
    if src.multi_rank:
        gn = pl.col("grad_norm").cast(pl.Float64)
        lf = lf.group_by("step").agg(
            (gn * gn).sum().sqrt().alias("grad_norm"),
            gn.mean().alias("grad_norm_replica"),
            pl.col("loss_scale").cast(pl.Float64).max(),
            pl.col("skipped").any(),
        )
    df = lf.sort("step").collect()
    steps = df["step"].to_numpy()
    out: dict[str, Series] = {}
    norm = df["grad_norm"].cast(pl.Float64).to_numpy()
    if np.isfinite(norm).any() or len(norm) == 0:
        out["grad_norm"] = Series(*minmax_envelope(steps, norm, max_points))
    scale = df["loss_scale"].cast(pl.Float64).to_numpy()
    if np.isfinite(scale).any():
        out["loss_scale"] = Series(*minmax_envelope(steps, scale, max_points))
    skipped = df["skipped"].fill_null(False).to_numpy().astype(bool)
    if skipped.any():
        out["skipped"] = Series(steps[skipped].astype(np.float64), np.ones(int(skipped.sum())))
    return out


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


def _merged_stat_parts(src: RunSource, names: Names) -> Iterator[dict[int, StatRows]]:
    """Multi-rank runs: the ``tensors`` rows merged over ranks, in slices ordered by step."""
    lf = pl.scan_parquet(src.parts["tensors"], hive_partitioning=True)
    numel = pl.LazyFrame(
        {
            "tensor": [str(t.get("name")) for t in src.catalogue()],
            "numel": [t.get("numel") for t in src.catalogue()],
        },
        schema={"tensor": pl.String, "numel": pl.Int64},
    )
    merged = (
        lf.with_columns(pl.col("kind").cast(pl.String))
        .filter(pl.col("kind").is_in(["grad", "param", "update"]))
        .group_by("kind", "step", "tensor")
        .agg(
            pl.col("sumsq").cast(pl.Float64).sum(),
            pl.col("nonfinite").sum(),
            pl.col("count").sum(),
            pl.len().alias("n_ranks"),
        )
        .with_columns(pl.col("tensor").cast(pl.String))
        .join(numel, on="tensor", how="left")
        .select(
            "step", "tensor", "kind", pl.col("sumsq") / _replica_div(pl.col("numel")), "nonfinite"
        )
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
        rows = read_stat_part(path, names)
        return _reduce_part(rows, grid, env) if rows else (None, None, None, None)

    parts = (
        (_reduce_part(rows, grid, env) for rows in _merged_stat_parts(src, names))
        if src.multi_rank
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
    tensors = src.tensor_order(present)
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
        for t in src.catalogue()
        if isinstance(t.get("shape"), list)
    }
    out = {name: Series(*env.series(names.ids[name])) for name in src.tensor_order(present)}
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
        rows = read_hist_part(path, names)
        if rows is None:
            return None
        every = np.zeros(len(rows.step), dtype=np.int64)  # one row: all tensors together
        return (
            over_time.reduce(every, rows.step, rows.bins),
            per_tensor.reduce(rows.tensor, rows.step, rows.bins),
            int(rows.step.max()),
        )

    seen_last = -1
    for time_part, tensor_part, part_last in prefetch(one, files):
        over_time.merge(time_part)
        per_tensor.merge(tensor_part)
        seen_last = max(seen_last, part_last)
    if not over_time.rows:
        return None
    cols = np.flatnonzero(over_time.seen[0])
    tensors = src.tensor_order([names.names[i] for i in np.flatnonzero(per_tensor.seen[:, 0])])
    return ExpHistogram(
        over_time.first[0, cols].astype(np.float64),
        over_time.sums[0, cols].astype(np.float64),
        over_time.buckets.width,
        float(max(seen_last, last) + 1),
        tensors,
        per_tensor.sums[[names.ids[t] for t in tensors], 0].astype(np.float64),
    )


def exponent_of_bin(i: int) -> int:
    """The exponent k of histogram bin ``i`` (1..EXP_BINS): values in [2**k, 2**(k+1))."""
    if not 1 <= i <= EXP_MAX - EXP_MIN + 1:
        raise ValueError(f"bin {i} is not an exponent bin (1..{EXP_MAX - EXP_MIN + 1})")
    return EXP_MIN + i - 1


def loss_scale_shift(steps: dict[str, Series]) -> int:
    """log2 of the median AMP loss scale (0 without AMP): fp16 limits apply to scaled grads."""
    s = steps.get("loss_scale")
    if s is None:
        return 0
    vals = s.y[np.isfinite(s.y) & (s.y > 0)]
    return round(math.log2(float(np.median(vals)))) if len(vals) else 0
