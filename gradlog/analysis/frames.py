"""The frames every detector reads: a run's statistics merged over ranks and derived (norms,
RMS, zero fractions, update ratios), collected with polars. The algebra is :mod:`algebra`'s.

A run whose ``tensors`` table fits in ``EXACT_ROWS`` rows is held exactly, one row per (step,
tensor). A larger one is reduced while it is read, part batch by part batch, onto buckets of
``resolution`` consecutive steps per tensor (at most about ``BUCKET_ROWS`` rows): the per-step
norm's *maximum* over the bucket (so spikes and explosions survive), RMS and zero fraction over
all the bucket's elements, non-finite counts summed, and the update ratio as the root of the mean
squared update over the root of the mean squared weight norm; the exponent histograms are summed
onto the same buckets. Memory then follows the number of buckets, not the run's length; the
detectors read the same columns either way and their step ranges are the buckets' first steps.
Runs of several ranks are merged over ranks window of steps by window (:func:`step_windows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from gradlog.analysis import algebra
from gradlog.analysis.loading import RunData, verify_part
from gradlog.errors import ConfigError
from gradlog.schema import STAT_KINDS

EXACT_ROWS = 12_000_000
"""Runs with at most this many ``tensors`` rows are analysed step by step (about 1 GB of frames)."""
BUCKET_ROWS = 3_000_000
"""Larger runs are reduced to buckets of steps: at most about this many rows over all kinds."""


@dataclass
class TensorSeries:
    """Per-tensor series stored one after the other: tensor ``names[i]`` owns ``lengths[i]``
    consecutive values of every array in ``values``."""

    names: list[str]
    lengths: np.ndarray
    values: dict[str, np.ndarray]

    @property
    def starts(self) -> np.ndarray:
        out: np.ndarray = np.cumsum(self.lengths) - self.lengths
        return out

    def __iter__(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """(name, {column: that tensor's values}) for every tensor (views, not copies)."""
        for name, a, n in zip(self.names, self.starts, self.lengths, strict=True):
            yield name, {c: v[a : a + n] for c, v in self.values.items()}


def _tensor_order(grad: pl.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, lengths, row order) that gathers ``grad`` tensor by tensor, tensors in order of
    first appearance, rows of a tensor in their (step) order."""
    if grad.is_empty():
        return [], np.empty(0, np.int64), np.empty(0, np.int64)
    codes = grad["tensor"].to_physical().to_numpy()
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    first = np.argsort(order[starts], kind="stable")  # groups by their first row
    order = np.concatenate([order[starts[g] : ends[g]] for g in first])
    lengths = (ends - starts)[first]
    names = grad["tensor"].gather(order[np.cumsum(lengths) - lengths]).cast(pl.String).to_list()
    return names, lengths, order


@dataclass
class RunFrames:
    """A run's merged, derived, collected frames: what every detector reads.

    The rows of each tensor in ``grad``, ``param`` and ``update`` are in step order (tensors are
    interleaved as the parts hold them); ``steps`` is sorted by step. Their ``tensor`` columns
    are Categorical (cheap to group on 1e7 rows), like the catalogue's, so they join.
    """

    run: RunData
    grad: pl.DataFrame
    param: pl.DataFrame
    update: pl.DataFrame
    steps: pl.DataFrame
    scalars: pl.DataFrame
    hist: pl.DataFrame
    loss_scale_shift: int = 0
    resolution: int = 1
    """Steps per row of ``grad``/``param``/``update`` (1: exact; more: buckets, see above)."""
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def scalar(self, name: str) -> pl.DataFrame:
        """(step, value) of the scalar ``name``, sorted by step."""
        return self.scalars.filter(pl.col("name") == name).select("step", "value").sort("step")

    def loss(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of the loss scalar (non-finite values kept)."""
        df = self.scalar(name)
        return df["step"].to_numpy(), df["value"].to_numpy().astype(np.float64)

    def first_nonfinite_step(self) -> int | None:
        """The first step whose non-finite gradients the optimizer applied (not skipped), if any.

        From that step on the weights may hold NaN/Inf, so rates measured later say nothing about
        the learning rate or the architecture.
        """
        if "first_nonfinite" not in self.cache:
            from gradlog.analysis.phases import nonfinite_grad_steps  # (imports this module)

            bad = nonfinite_grad_steps(self)  # an overflowed float32 norm is not a NaN
            self.cache["first_nonfinite"] = bad[0] if bad else None
        first: int | None = self.cache["first_nonfinite"]
        return first

    def by_tensor(self, *columns: str) -> TensorSeries:
        """The gradient ``columns`` gathered tensor by tensor (in order of first appearance,
        each tensor's rows in step order) as numpy arrays: per-tensor work without a list
        column or a sorted copy of the whole frame. The gather order is computed once."""
        if "by_tensor" not in self.cache:
            self.cache["by_tensor"] = _tensor_order(self.grad)
        names, lengths, order = self.cache["by_tensor"]
        # gathered afresh for each caller: holding them would cost memory on long runs
        return TensorSeries(names, lengths, {c: self.grad[c].to_numpy()[order] for c in columns})

    def tensor_order(self) -> pl.DataFrame:
        """tensor, depth, backward_order (output side first), ndim, in_optimizer, requires_grad."""
        return self.run.catalogue


def _safe_collect(
    run: RunData,
    table: str,
    build: Callable[[pl.LazyFrame], pl.LazyFrame],
    *,
    strings: bool = True,
    only: Sequence[Path] | None = None,
) -> pl.DataFrame | None:
    """Collect ``build(scan)`` (of the parts in ``only``, if given) with the streaming engine
    (bounded memory on long runs); if a part's data is corrupt, find it, leave it out and retry."""
    for _attempt in range(2):
        lf = run.scan(table, strings=strings, only=only)
        if lf is None:
            return None
        try:
            return build(lf).collect(engine="streaming")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # polars errors and Rust panics alike must not escape
            parts = list(run.parts[table])
            bad = [(p, r) for p in parts if (r := verify_part(p, table)) is not None]
            for part, reason in bad:
                run.drop_part(table, part, reason)
            if not bad:
                run.problems.append(f"{table}: cannot be read: {type(exc).__name__}: {exc!s:.200}")
                return None
    run.problems.append(f"{table}: cannot be read after leaving out corrupt parts")
    return None


WINDOW_ROWS = 4_000_000
"""Multi-rank runs are merged over ranks window by window: about this many rows per window."""


@dataclass(frozen=True)
class StepWindow:
    """Steps ``first``..``last`` (inclusive) and the parts of a table that may hold them."""

    first: int
    last: int
    parts: list[Path]

    def rows(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        return lf.filter(pl.col("step").is_between(self.first, self.last))


def step_windows(run: RunData, table: str = "tensors", rows: int | None = None) -> list[StepWindow]:
    """Consecutive step windows of ``table`` that hold about ``rows`` rows over all ranks (at
    least one part's span), each with the parts that overlap it (from the footers' step ranges).

    Merging ranks needs every rank's rows of a step together; merged window by window, a giant
    multi-rank run costs one window's rows, not the whole run's (a part may be read twice).
    """
    rows = WINDOW_ROWS if rows is None else rows
    files = list(run.parts.get(table, []))
    ranges = [run.step_ranges.get(f) for f in files]
    known = [r for r in ranges if r is not None]
    if not known:
        return [StepWindow(-(1 << 62), 1 << 62, files)] if files else []
    first, last = min(r[0] for r in known), max(r[1] for r in known)
    per_step = max(1.0, run.rows.get(table, 0) / (last - first + 1))
    width = max(math.ceil(rows / per_step), *(r[1] - r[0] + 1 for r in known))
    out = []
    for a in range(first, last + 1, width):
        b = a + width - 1
        fs = [
            f for f, r in zip(files, ranges, strict=True) if r is None or (r[0] <= b and r[1] >= a)
        ]
        if fs:
            out.append(StepWindow(a, b, fs))
    return out


def _single_rank(run: RunData, table: str = "tensors") -> bool:
    """One rank recorded ``table``: its rows need no merging."""
    return run.layout == "single" or len({p.parent.name for p in run.parts[table]}) <= 1


STAT_COLUMNS = ("count", "norm", "rms", "mean", "std", "zero_frac", "nonfinite", "absmax")
"""Derived columns of ``grad``, ``param`` and ``update`` (besides step and tensor)."""

DETECTOR_COLUMNS = ("norm", "rms", "zero_frac", "nonfinite")
"""The derived columns the registered detectors read; :func:`analyze` builds only these (less
to read and hold on long runs). A detector that needs another one adds it here."""


def _merge_stats(run: RunData, lf: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    layout = "single" if _single_rank(run) else run.layout
    merged = algebra.merge_ranks(lf, layout)
    return merged.select("step", "tensor", "kind", *algebra.derived(columns))


def _merge_steps(run: RunData, lf: pl.LazyFrame) -> pl.LazyFrame:
    gn = pl.col("grad_norm").cast(pl.Float64)
    layout = "single" if _single_rank(run, "steps") else run.layout
    return (
        lf.group_by("step")
        .agg(
            pl.col("time").max(),
            algebra.global_norm(layout).alias("grad_norm"),
            ((gn.max() - gn.min()) / gn.mean()).alias("rank_norm_spread"),
            (gn * gn).mean().alias("rank_sqnorm_mean"),
            pl.col("grads_none").max(),
            pl.col("loss_scale").cast(pl.Float64).max(),
            pl.col("skipped").any(),
            pl.col("tensor_stats").any(),
            pl.len().alias("n_ranks"),
        )
        .sort("step")
    )


def _in_step_order(stats: pl.DataFrame) -> bool:
    """Whether every (kind, tensor) series is already in step order (as the parts are written)."""
    if stats.height < 2:
        return True
    if stats.schema["tensor"] == pl.Categorical and stats.schema["kind"] == pl.Categorical:
        # one integer key instead of two string keys: several times faster on 1e7 rows
        key = pl.col("kind").to_physical().cast(pl.UInt64) * (1 << 32) + pl.col(
            "tensor"
        ).to_physical().cast(pl.UInt64)
        ok = stats.select((pl.col("step").diff().over(key) > 0).all()).item()
    else:
        ok = stats.select((pl.col("step").diff().over("kind", "tensor") > 0).all()).item()
    return bool(ok)


_EMPTY_STEPS: dict[str, Any] = {
    "step": pl.Int64,
    "time": pl.Float64,
    "grad_norm": pl.Float64,
    "rank_norm_spread": pl.Float64,
    "rank_sqnorm_mean": pl.Float64,
    "grads_none": pl.Int32,
    "loss_scale": pl.Float64,
    "skipped": pl.Boolean,
    "tensor_stats": pl.Boolean,
    "n_ranks": pl.UInt32,
}
_EMPTY_HIST: dict[str, Any] = {
    "step": pl.Int64,
    "tensor": pl.Categorical,
    "nonzero": pl.Float64,
    "below_fp16_normal": pl.Float64,
    "below_fp16_subnormal": pl.Float64,
    "above_fp16_max": pl.Float64,
    "below_bf16_normal": pl.Float64,
    "hist_nonfinite": pl.Float64,
}

Build = Callable[[pl.LazyFrame], pl.LazyFrame]


def build_frames(
    run: RunData, columns: Sequence[str] = STAT_COLUMNS, *, exact_rows: int = EXACT_ROWS
) -> RunFrames:
    """Collect the merged, derived frames of ``run`` with the derived ``columns`` (all of
    STAT_COLUMNS by default); unreadable tables become empty frames. A run with more than
    ``exact_rows`` ``tensors`` rows is reduced to buckets of steps (see the module's doc)."""
    unknown = sorted(set(columns) - set(STAT_COLUMNS))
    if unknown:
        raise ConfigError(f"unknown frame columns {unknown}; known: {list(STAT_COLUMNS)}")
    columns = tuple(dict.fromkeys(("norm", *columns)))  # norm: the update ratio needs it

    steps = _safe_collect(run, "steps", lambda lf: _merge_steps(run, lf))
    steps = pl.DataFrame(schema=_EMPTY_STEPS) if steps is None else steps
    resolution = _resolution(run, steps, exact_rows)
    if resolution == 1:
        grad, param, update = _exact_stats(run, columns)
        update = algebra.pair_updates(update, param)
    else:
        grad, param, update = _bucketed_stats(run, columns, resolution)
    shift = algebra.loss_scale_shift(steps["loss_scale"])
    div = float(run.world_size) if run.layout == "replicated" else 1.0

    def hist_counts(lf: pl.LazyFrame) -> pl.LazyFrame:
        counts = lf.filter(pl.col("kind") == "grad").select(
            "step", "tensor", *algebra.hist_counts(shift)
        )
        single = _single_rank(run, "hists")
        if resolution > 1:  # long run: counts summed over the buckets (they add exactly)
            return (
                counts.group_by("tensor", (pl.col("step") // resolution).alias("_b"))
                .agg(
                    pl.col("step").min(),
                    pl.exclude("step", "tensor").cast(pl.Float64).sum() / (1.0 if single else div),
                )
                .drop("_b")
                .select("step", "tensor", pl.exclude("step", "tensor"))
                .sort("tensor", "step")
            )
        if single:  # one row per (step, tensor) already
            return counts.with_columns(pl.exclude("step", "tensor").cast(pl.Float64))
        return counts.group_by("step", "tensor").agg(pl.all().sum() / div).sort("tensor", "step")

    hist = _safe_collect(run, "hists", hist_counts, strings=False)
    scalars = _safe_collect(
        run,
        "scalars",
        lambda lf: lf.group_by("step", "name").agg(pl.col("value").mean()).sort("name", "step"),
    )
    if scalars is None:
        scalars = pl.DataFrame(schema={"step": pl.Int64, "name": pl.String, "value": pl.Float64})
    if hist is None:
        hist = pl.DataFrame(schema=_EMPTY_HIST)
    return RunFrames(run, grad, param, update, steps, scalars, hist, shift, resolution)


def _resolution(run: RunData, steps: pl.DataFrame, exact_rows: int) -> int:
    """Steps per frame row: 1 when the run fits in ``exact_rows``, else the bucket width that
    keeps the frames near BUCKET_ROWS rows (tensors x kinds x buckets)."""
    rows = run.rows.get("tensors", 0) // max(1, len({p.parent.name for p in run.parts["tensors"]}))
    if rows <= exact_rows:
        return 1
    rng = run.run.step_range("tensors")
    span = (rng[1] - rng[0] + 1) if rng else max(1, steps.height)
    series = max(1, len(run.catalogue)) * len(STAT_KINDS)  # at most: every tensor, every kind
    return max(2, math.ceil(span * series / BUCKET_ROWS))


def _empty_stats(columns: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "step": pl.Int64,
            "tensor": pl.Categorical,
            "kind": pl.String,
            **{c: pl.Float64 for c in STAT_COLUMNS if c in columns},
        }
    )


def _exact_stats(
    run: RunData, columns: Sequence[str]
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    stats = _safe_collect(run, "tensors", lambda lf: _merge_stats(run, lf, columns), strings=False)
    # Parts hold their rows sorted by (kind, tensor, step) and follow each other in step order,
    # so a single rank's scan is in step order per series already (the footers prove the parts'
    # order; else the rows are checked); sorting 1e7 rows would cost more than all detectors.
    ordered = _single_rank(run) and run.parts_in_step_order("tensors")
    if stats is not None and not ordered and not _in_step_order(stats):
        stats = stats.sort("kind", "tensor", "step")
    if stats is None:
        stats = _empty_stats(columns)
    grad, param, update = (stats.filter(pl.col("kind") == k).drop("kind") for k in STAT_KINDS)
    return grad, param, update


def _bucket_aggs(columns: Sequence[str]) -> list[pl.Expr]:
    """Per (kind, tensor, bucket): mergeable partial sums of merged per-step rows (only those
    the derived ``columns`` need, so that the scan reads fewer columns)."""
    n = (pl.col("count") - pl.col("nonfinite")).cast(pl.Float64)
    wanted = set(columns)
    out = [
        pl.col("step").min().alias("step"),
        pl.col("sumsq").cast(pl.Float64).sqrt().max().alias("norm_max"),
        pl.col("sumsq").cast(pl.Float64).sum().alias("sumsq"),
        n.sum().alias("n"),
        pl.col("count").cast(pl.Float64).sum().alias("count"),
        pl.col("nonfinite").cast(pl.Float64).sum().alias("nonfinite"),
        pl.len().cast(pl.Float64).alias("rows"),
    ]
    if "zero_frac" in wanted:
        out.append(pl.col("zeros").cast(pl.Float64).sum().alias("zeros"))
    if wanted & {"mean", "std"}:
        out.append(pl.col("sum").cast(pl.Float64).sum().alias("sum"))
    if "absmax" in wanted:
        out.append(pl.col("absmax").cast(pl.Float64).max().alias("absmax"))
    return out


_SUMMED = ("sumsq", "n", "count", "zeros", "nonfinite", "sum", "rows")


def _bucketed_stats(
    run: RunData, columns: Sequence[str], width: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The grad/param/update frames on buckets of ``width`` steps, read a few parts at a time."""
    layout = "single" if _single_rank(run) else run.layout
    partials: list[pl.DataFrame] = []

    def reduce(lf: pl.LazyFrame) -> pl.LazyFrame:
        merged = algebra.merge_ranks(lf, layout)
        return merged.group_by("kind", "tensor", (pl.col("step") // width).alias("bucket")).agg(
            *_bucket_aggs(columns)
        )

    # one streaming pass: polars reads the parts in order and keeps only the buckets' partial
    # sums (the buckets, not the rows, bound its memory); ranks are merged window by window
    windows: list[StepWindow | None] = [None]
    if layout != "single":
        windows = list(step_windows(run))
    for w in windows:
        part = _safe_collect(
            run,
            "tensors",
            reduce if w is None else (lambda lf, w=w: reduce(w.rows(lf))),  # type: ignore[misc]
            strings=False,
            only=None if w is None else w.parts,
        )
        if part is not None and part.height:
            partials.append(part.with_columns(pl.col("kind").cast(pl.String)))
    if not partials:
        empty = _empty_stats(columns)
        return empty.drop("kind"), empty.drop("kind"), empty.drop("kind")
    both = pl.concat(partials, how="vertical_relaxed")
    del partials
    present = set(both.columns)
    cells = (
        both.group_by("kind", "tensor", "bucket")
        .agg(
            pl.col("step").min(),
            pl.col("norm_max").max(),
            *([pl.col("absmax").max()] if "absmax" in present else []),
            *[pl.col(c).sum() for c in _SUMMED if c in present],
        )
        .sort("kind", "tensor", "step")
    )
    del both
    mean_sq = pl.col("sumsq") / pl.col("n")
    mean = pl.col("sum") / pl.col("n")
    exprs = {
        "count": pl.col("count") / pl.col("rows"),
        "norm": pl.col("norm_max"),
        "rms": mean_sq.sqrt(),
        "mean": mean,
        "std": (mean_sq - mean * mean).clip(lower_bound=0).sqrt(),
        "zero_frac": pl.col("zeros") / pl.col("count"),
        "nonfinite": pl.col("nonfinite"),
        "absmax": pl.col("absmax"),
    }
    frames = cells.select(
        "kind",
        "step",
        "tensor",
        "bucket",
        *[exprs[c].alias(c) for c in STAT_COLUMNS if c in columns],
        (pl.col("sumsq") / pl.col("rows")).alias("_msq"),
    )
    grad, param, update = (frames.filter(pl.col("kind") == k).drop("kind") for k in STAT_KINDS)
    # the update ratio of a bucket: root mean squared update norm over root mean squared weights
    update = update.join(
        param.select("tensor", "bucket", pl.col("_msq").alias("_pmsq"), pl.col("norm").alias("pn")),
        on=["tensor", "bucket"],
        how="left",
    ).with_columns(
        pl.col("pn").alias("param_norm"),
        algebra.update_ratio(pl.col("_msq").sqrt(), pl.col("_pmsq").sqrt()).alias("ratio"),
    )
    drop = ["bucket", "_msq"]
    return grad.drop(drop), param.drop(drop), update.drop([*drop, "_pmsq", "pn"])
