"""The statistics algebra, defined once: how ranks merge, what the global norm of a step is, how an
update pairs with its weights, how a loss scale shifts the exponent histograms, and which limits
the number formats have. Everything that derives a number from the recorded statistics (the
detectors' frames, the chart data) uses these expressions.

Ranks merge by the run's layout (:attr:`gradlog.rundir.Run.layout`): where every rank holds the
whole tensor (DDP replicas of one all-reduced gradient), additive statistics are averaged over the
ranks and the global norm is their mean; where ranks hold shards (FSDP), additive statistics add
and the global norm is the square root of the sum of the ranks' squared norms. absmax always
takes the max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from gradlog.rundir import Layout
from gradlog.schema import EXP_MAX, EXP_MIN, HIST_NONFINITE_BIN

ADDITIVE = ("count", "sum", "sumsq", "zeros", "nonfinite")
"""Statistics that add over shards (and average over replicas)."""

KEY = ("step", "tensor", "kind")


def merge_ranks(lf: pl.LazyFrame, layout: Layout) -> pl.LazyFrame:
    """``tensors`` rows of every rank merged into one row per (step, tensor, kind)."""
    if layout == "single":
        return lf
    div = pl.len().cast(pl.Float64) if layout == "replicated" else pl.lit(1.0)
    return lf.group_by(*KEY).agg(
        *[(pl.col(c).cast(pl.Float64).sum() / div).alias(c) for c in ADDITIVE],
        pl.col("absmax").max(),
    )


def derived(columns: Sequence[str]) -> list[pl.Expr]:
    """The derived statistics ``columns`` of merged rows: count, norm (L2), rms, mean, std,
    zero_frac, nonfinite, absmax (as float64)."""
    n = (pl.col("count") - pl.col("nonfinite")).cast(pl.Float64)
    sumsq = pl.col("sumsq").cast(pl.Float64)
    mean = pl.col("sum").cast(pl.Float64) / n
    exprs = {
        "count": pl.col("count").cast(pl.Float64),
        "norm": sumsq.sqrt(),
        "rms": (sumsq / n).sqrt(),
        "mean": mean,
        "std": (sumsq / n - mean * mean).clip(lower_bound=0).sqrt(),
        "zero_frac": pl.col("zeros").cast(pl.Float64) / pl.col("count").cast(pl.Float64),
        "nonfinite": pl.col("nonfinite").cast(pl.Float64),
        "absmax": pl.col("absmax").cast(pl.Float64),
    }
    return [exprs[c].alias(c) for c in columns]


def global_norm(layout: Layout) -> pl.Expr:
    """The step's global gradient norm from its ranks' ``grad_norm`` (an aggregation)."""
    gn = pl.col("grad_norm").cast(pl.Float64)
    if layout == "sharded":
        return (gn * gn).sum().sqrt()
    return gn.mean()  # one rank, or replicas of one all-reduced gradient


def update_ratio(update_norm: pl.Expr, param_norm: pl.Expr) -> pl.Expr:
    """|update| / |param| of one tensor at one step (both recorded at that step)."""
    return update_norm / param_norm


def pair_updates(update: pl.DataFrame, param: pl.DataFrame) -> pl.DataFrame:
    """``update`` rows with ``param_norm`` (the weights before that step) and ``ratio``."""
    return update.join(
        param.select("step", "tensor", pl.col("norm").alias("param_norm")),
        on=["step", "tensor"],
        how="left",
    ).with_columns(update_ratio(pl.col("norm"), pl.col("param_norm")).alias("ratio"))


def loss_scale_shift(loss_scale: pl.Series) -> int:
    """log2 of the median AMP loss scale (0 without one): the recorded gradients are unscaled,
    the fp16 limits apply to them times the scale."""
    scales = loss_scale.cast(pl.Float64).drop_nulls().drop_nans()
    scales = scales.filter((scales > 0) & scales.is_finite())
    if not len(scales):
        return 0
    return round(math.log2(float(scales.median())))  # type: ignore[arg-type,unused-ignore]


@dataclass(frozen=True)
class FormatLimit:
    """A number format's limit as a log2 exponent (values below/above it cannot be held)."""

    label: str
    exponent: float
    format: str
    scaled: bool
    """Whether the limit applies to loss-scaled gradients (fp16 under a GradScaler)."""


FP16_SUBNORMAL_EXP = -24
FP16_NORMAL_EXP = -14
FP16_MAX_EXP = 16  # 65504 < 2**16
BF16_SUBNORMAL_EXP = -133
BF16_NORMAL_EXP = -126
BF16_MAX_EXP = 128

FORMAT_LIMITS = (
    FormatLimit("fp16 smallest subnormal", FP16_SUBNORMAL_EXP, "fp16", True),
    FormatLimit("fp16 smallest normal", FP16_NORMAL_EXP, "fp16", True),
    FormatLimit("fp16 largest", math.log2(65504.0), "fp16", True),
    FormatLimit("bf16 smallest normal", BF16_NORMAL_EXP, "bf16", False),
    FormatLimit("bf16 largest", math.log2(3.3895313892515355e38), "bf16", False),
)
"""The limits the exponent-histogram chart marks and the precision detector counts against."""


def exponent_of_bin(i: int) -> int:
    """The exponent k of histogram bin ``i`` (1..EXP_BINS): values in [2**k, 2**(k+1))."""
    if not 1 <= i <= EXP_MAX - EXP_MIN + 1:
        raise ValueError(f"bin {i} is not an exponent bin (1..{EXP_MAX - EXP_MIN + 1})")
    return EXP_MIN + i - 1


def hist_counts(shift: int) -> list[pl.Expr]:
    """Counts folded out of a ``bins`` histogram: nonzero values, values below/above each format
    limit (the gradient times 2**shift, the loss scale), non-finite values."""
    last = HIST_NONFINITE_BIN  # bins 1..last-1 are exponents EXP_MIN..EXP_MAX

    def below(exp: int) -> pl.Expr:
        k = exp - shift  # unscaled exponent k with k + shift < exp
        hi = max(0, min(k - EXP_MIN, last - 1))
        return pl.col("bins").arr.slice(1, hi).list.sum() if hi > 0 else pl.lit(0, pl.Int64)

    def at_or_above(exp: int) -> pl.Expr:
        k = exp - shift
        lo = max(1, min(1 + k - EXP_MIN, last))
        return pl.col("bins").arr.slice(lo, last - lo).list.sum()

    return [
        pl.col("bins").arr.slice(1, last - 1).list.sum().alias("nonzero"),
        below(FP16_NORMAL_EXP).alias("below_fp16_normal"),
        below(FP16_SUBNORMAL_EXP).alias("below_fp16_subnormal"),
        at_or_above(FP16_MAX_EXP).alias("above_fp16_max"),
        below(BF16_NORMAL_EXP + shift).alias("below_bf16_normal"),
        pl.col("bins").arr.get(last).alias("hist_nonfinite"),
    ]
