"""Merge ranks exactly from the sufficient statistics and derive norms, stds, ratios, fractions.

Ranks whose per-tensor ``count`` equals the catalogue ``numel`` hold replicas (DDP: the same
all-reduced gradient on every rank); their additive statistics are averaged. Otherwise ranks hold
shards (FSDP) and their statistics add. min/max/absmax always take min/max.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from gradlog.analysis.loading import RunData, verify_part
from gradlog.errors import ConfigError
from gradlog.schema import EXP_MIN, STAT_KINDS

FP16_NORMAL_EXP = -14
FP16_SUBNORMAL_EXP = -24
FP16_MAX_EXP = 16
BF16_NORMAL_EXP = -126


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
            skipped = self.steps.filter(pl.col("skipped").fill_null(False))["step"]
            bad = pl.concat(
                [
                    self.grad.filter(pl.col("nonfinite") > 0)["step"],
                    self.steps.filter(~pl.col("grad_norm").is_finite())["step"],
                ]
            )
            bad = bad.filter(~bad.is_in(skipped.implode()))
            self.cache["first_nonfinite"] = int(bad.min()) if len(bad) else None
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
) -> pl.DataFrame | None:
    """Collect ``build(scan)`` with the streaming engine (bounded memory on long runs); if a
    part's data is corrupt, find it, leave it out and retry."""
    for _attempt in range(2):
        lf = run.scan(table, strings=strings)
        if lf is None:
            return None
        try:
            return build(lf).collect(engine="streaming")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # polars errors and Rust panics alike must not escape
            bad = [(p, r) for p in list(run.parts[table]) if (r := verify_part(p)) is not None]
            for part, reason in bad:
                run.drop_part(table, part, reason)
            if not bad:
                run.problems.append(f"{table}: cannot be read: {type(exc).__name__}: {exc!s:.200}")
                return None
    run.problems.append(f"{table}: cannot be read after leaving out corrupt parts")
    return None


def _replica_factor(run: RunData) -> pl.Expr:
    """Divide additive statistics by the number of ranks where ranks hold replicas."""
    numel = pl.col("numel")
    replicated = (
        (pl.col("n_ranks") > 1)
        & numel.is_not_null()
        & (pl.col("count") == numel * pl.col("n_ranks"))
    )
    return pl.when(replicated).then(pl.col("n_ranks")).otherwise(1).cast(pl.Float64)


_ADD = ("count", "sum", "sumsq", "zeros", "nonfinite")


def _single_rank(run: RunData, table: str = "tensors") -> bool:
    """One rank recorded ``table``: its rows need no merging."""
    return run.world_size == 1 and len({p.parent.name for p in run.parts[table]}) <= 1


STAT_COLUMNS = ("count", "norm", "rms", "mean", "std", "zero_frac", "nonfinite", "absmax")
"""Derived columns of ``grad``, ``param`` and ``update`` (besides step and tensor)."""

DETECTOR_COLUMNS = ("norm", "rms", "zero_frac", "nonfinite")
"""The derived columns the registered detectors read; :func:`analyze` builds only these (less
to read and hold on long runs). A detector that needs another one adds it here."""


def _merge_stats(run: RunData, lf: pl.LazyFrame, columns: Sequence[str]) -> pl.LazyFrame:
    if _single_rank(run):
        merged = lf.with_columns(pl.lit(1.0).alias("replicas"))
    else:
        merged = lf.group_by("step", "tensor", "kind").agg(
            *[pl.col(c).sum() for c in _ADD],
            pl.col("min").min(),
            pl.col("max").max(),
            pl.col("absmax").max(),
            pl.len().alias("n_ranks"),
        )
        cat = pl.LazyFrame(run.catalogue.select("tensor", "numel"))
        merged = merged.join(cat, on="tensor", how="left")
        merged = merged.with_columns(_replica_factor(run).alias("replicas"))
        merged = merged.with_columns(
            [(pl.col(c).cast(pl.Float64) / pl.col("replicas")) for c in _ADD]
        )
    n = (pl.col("count") - pl.col("nonfinite")).cast(pl.Float64)
    sumsq = pl.col("sumsq").cast(pl.Float64)
    mean = pl.col("sum").cast(pl.Float64) / n
    derived = {
        "count": pl.col("count").cast(pl.Float64),
        "norm": sumsq.sqrt(),
        "rms": (sumsq / n).sqrt(),
        "mean": mean,
        "std": (sumsq / n - mean * mean).clip(lower_bound=0).sqrt(),
        "zero_frac": pl.col("zeros").cast(pl.Float64) / pl.col("count").cast(pl.Float64),
        "nonfinite": pl.col("nonfinite").cast(pl.Float64),
        "absmax": pl.col("absmax").cast(pl.Float64),
    }
    return merged.select(
        "step",
        "tensor",
        "kind",
        *[derived[c].alias(c) for c in STAT_COLUMNS if c in columns],
        pl.col("replicas"),
    )


def _merge_steps(run: RunData, replicated: bool, lf: pl.LazyFrame) -> pl.LazyFrame:
    gn = pl.col("grad_norm").cast(pl.Float64)
    norm = gn.mean() if replicated else (gn * gn).sum().sqrt()
    return (
        lf.group_by("step")
        .agg(
            pl.col("time").max(),
            norm.alias("grad_norm"),
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


def _hist_counts(shift: int) -> list[pl.Expr]:
    def below(exp: int) -> pl.Expr:
        k = exp - shift  # unscaled exponent k with k + shift < exp
        hi = max(0, min(k - EXP_MIN, 277))
        return pl.col("bins").arr.slice(1, hi).list.sum() if hi > 0 else pl.lit(0, pl.Int64)

    def at_or_above(exp: int) -> pl.Expr:
        k = exp - shift
        lo = max(1, min(1 + k - EXP_MIN, 278))
        return pl.col("bins").arr.slice(lo, 278 - lo).list.sum()

    total = pl.col("bins").arr.slice(1, 277).list.sum()
    return [
        total.alias("nonzero"),
        below(FP16_NORMAL_EXP).alias("below_fp16_normal"),
        below(FP16_SUBNORMAL_EXP).alias("below_fp16_subnormal"),
        at_or_above(FP16_MAX_EXP).alias("above_fp16_max"),
        below(BF16_NORMAL_EXP).alias("below_bf16_normal"),
        pl.col("bins").arr.get(278).alias("hist_nonfinite"),
    ]


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


def build_frames(run: RunData, columns: Sequence[str] = STAT_COLUMNS) -> RunFrames:
    """Collect the merged, derived frames of ``run`` with the derived ``columns`` (all of
    STAT_COLUMNS by default); unreadable tables become empty frames."""
    unknown = sorted(set(columns) - set(STAT_COLUMNS))
    if unknown:
        raise ConfigError(f"unknown frame columns {unknown}; known: {list(STAT_COLUMNS)}")
    columns = tuple(dict.fromkeys(("norm", *columns)))  # norm: the update ratio needs it

    def merged_stats(lf: pl.LazyFrame) -> pl.LazyFrame:
        return _merge_stats(run, lf, columns)

    def merged_steps(replicated: bool) -> pl.DataFrame:
        steps = _safe_collect(run, "steps", lambda lf: _merge_steps(run, replicated, lf))
        return pl.DataFrame(schema=_EMPTY_STEPS) if steps is None else steps

    def hist_counts(shift: int, div: float) -> Build:
        def build(lf: pl.LazyFrame) -> pl.LazyFrame:
            counts = lf.filter(pl.col("kind") == "grad").select(
                "step", "tensor", *_hist_counts(shift)
            )
            if _single_rank(run, "hists"):  # one row per (step, tensor) already
                return counts.with_columns(pl.exclude("step", "tensor").cast(pl.Float64))
            return (
                counts.group_by("step", "tensor").agg(pl.all().sum() / div).sort("tensor", "step")
            )

        return build

    stats = _safe_collect(run, "tensors", merged_stats, strings=False)
    # Parts hold their rows sorted by (kind, tensor, step) and follow each other in step order,
    # so a single rank's scan is in step order per series already (the footers prove the parts'
    # order; else the rows are checked); sorting 1e7 rows would cost more than all detectors.
    ordered = _single_rank(run) and run.parts_in_step_order("tensors")
    if stats is not None and not ordered and not _in_step_order(stats):
        stats = stats.sort("kind", "tensor", "step")
    if stats is None:
        stats = pl.DataFrame(
            schema={
                "step": pl.Int64,
                "tensor": pl.Categorical,
                "kind": pl.String,
                **{c: pl.Float64 for c in STAT_COLUMNS if c in columns},
                "replicas": pl.Float64,
            }
        )
    replicated = False
    if stats.height and not _single_rank(run):
        replicated = float(stats["replicas"].mean()) > 1.0  # type: ignore[arg-type,unused-ignore]
    grad, param, update = (
        stats.filter(pl.col("kind") == kind).drop("kind", "replicas") for kind in STAT_KINDS
    )
    del stats  # before the other tables are read: the peak is the split
    update = update.join(
        param.select("step", "tensor", pl.col("norm").alias("param_norm")),
        on=["step", "tensor"],
        how="left",
    ).with_columns((pl.col("norm") / pl.col("param_norm")).alias("ratio"))
    steps = merged_steps(replicated)
    shift = _loss_scale_shift(steps)
    div = float(run.world_size) if replicated else 1.0
    hist = _safe_collect(run, "hists", hist_counts(shift, div), strings=False)
    scalars = _safe_collect(
        run,
        "scalars",
        lambda lf: lf.group_by("step", "name").agg(pl.col("value").mean()).sort("name", "step"),
    )
    if scalars is None:
        scalars = pl.DataFrame(schema={"step": pl.Int64, "name": pl.String, "value": pl.Float64})
    if hist is None:
        hist = pl.DataFrame(schema=_EMPTY_HIST)
    return RunFrames(run, grad, param, update, steps, scalars, hist, shift)


def _loss_scale_shift(steps: pl.DataFrame) -> int:
    """log2 of the median GradScaler loss scale (0 without one)."""
    scales = steps["loss_scale"].drop_nulls().drop_nans()
    scales = scales.filter(scales > 0)
    return round(math.log2(float(scales.median()))) if len(scales) else 0  # type: ignore[arg-type,unused-ignore]
