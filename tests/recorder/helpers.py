"""Independent references and readers shared by the recorder tests.

The references here are written without gradlog's kernels: float64 numpy for statistics,
comparisons against exact powers of two for the exponent histogram, and pyarrow for reading parts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gradlog.schema import EXP_MAX, EXP_MIN, HIST_BINS, META_FILE, RECORDED_STATS

STAT_NAMES = RECORDED_STATS
EXACT = [RECORDED_STATS.index(k) for k in ("count", "absmax", "zeros", "nonfinite")]
"""Columns of a statistics row every kernel computes exactly (the sums are rounded)."""

# Exact float64 edges 2**EXP_MIN .. 2**(EXP_MAX + 1) of the exponent bins.
_EDGES = np.array([math.ldexp(1.0, k) for k in range(EXP_MIN, EXP_MAX + 2)], dtype=np.float64)


def as_float64(t: torch.Tensor) -> np.ndarray:
    """The exact values of ``t`` (any float dtype) as a flat float64 numpy array."""
    out: np.ndarray = t.detach().to(torch.float64).reshape(-1).numpy().copy()
    return out


def reference_stats(t: torch.Tensor) -> dict[str, float]:
    """The statistics of schema.RECORDED_STATS, in float64 numpy, from their documented meaning."""
    a = as_float64(t)
    fin = a[np.isfinite(a)]
    return {
        "count": float(a.size),
        "sum": float(fin.sum()),
        "sumsq": float((fin * fin).sum()),
        "absmax": float(np.abs(fin).max()) if fin.size else 0.0,
        "zeros": float(np.count_nonzero(a == 0)),
        "nonfinite": float(a.size - fin.size),
    }


def reference_hist(t: torch.Tensor) -> np.ndarray:
    """The exponent histogram of ``t`` by comparing |x| with the exact bin edges 2**k."""
    a = np.abs(as_float64(t))
    hist = np.zeros(HIST_BINS, dtype=np.int64)
    finite = np.isfinite(a)
    hist[-1] = int(np.count_nonzero(~finite))
    hist[0] = int(np.count_nonzero(a == 0))
    nonzero = a[finite & (a != 0)]
    # Index of the last edge <= |x|: 0 for 2**EXP_MIN <= |x| < 2**(EXP_MIN+1), and so on.
    k = np.searchsorted(_EDGES, nonzero, side="right") - 1
    k = np.clip(k, 0, len(_EDGES) - 2)  # values beyond the float32 range land in the edge bins
    np.add.at(hist, 1 + k, 1)
    return hist


def stats_tolerance(t: torch.Tensor) -> tuple[float, float]:
    """Allowed absolute error of (sum, sumsq) computed in float32 from the values of ``t``.

    float32 accumulation (torch's cascaded sum, BLAS sdot with SIMD partial sums) has a rounding
    error of a few ulps times about sqrt(n) per term for the inputs used here; 3e-5 of the sum of
    |x| (resp. x**2) is well above that for n <= 10**4 yet far below one element's share.
    Squares of tiny values underflow in float32 (a subnormal squared is 0), so each element may
    also lose up to 2**-126 of sumsq (and rounding near the subnormal range up to 2**-149 of sum).
    float64 inputs are accumulated in float64, where 1e-12 relative is ample.
    """
    a = as_float64(t)
    fin = a[np.isfinite(a)]
    rtol = 1e-12 if t.dtype == torch.float64 else 3e-5
    n = max(fin.size, 1)
    sum_tol = rtol * float(np.abs(fin).sum()) + n * math.ldexp(1.0, -149)
    sumsq_tol = rtol * float((fin * fin).sum()) + n * math.ldexp(1.0, -126)
    return sum_tol, sumsq_tol


def assert_stats_match(got: Any, t: torch.Tensor, *, stored_float32: bool = False) -> None:
    """Assert that a row of statistics equals the reference of ``t``: a kernel's row of
    RECORDED_STATS (a sequence or a dict), or a stored ``tensors`` row (a dict).

    Counts and absmax must match exactly; with ``stored_float32`` (values read back from a
    column that holds float32 precision) absmax is compared after rounding the reference to
    float32.
    """
    row = (
        got
        if isinstance(got, dict)
        else dict(zip(STAT_NAMES, [float(v) for v in got], strict=True))
    )
    ref = reference_stats(t)
    sum_tol, sumsq_tol = stats_tolerance(t)
    if stored_float32:  # the column itself rounds to float32: one more half-ulp of the value
        sum_tol += abs(ref["sum"]) * 2.0**-23
        sumsq_tol += abs(ref["sumsq"]) * 2.0**-23
    for name in ("count", "zeros", "nonfinite"):
        assert row[name] == ref[name], (name, row[name], ref[name])
    want = float(np.float32(ref["absmax"])) if stored_float32 else ref["absmax"]
    assert row["absmax"] == want, ("absmax", row["absmax"], want)
    assert abs(row["sum"] - ref["sum"]) <= sum_tol, ("sum", row["sum"], ref["sum"], sum_tol)
    assert abs(row["sumsq"] - ref["sumsq"]) <= sumsq_tol, ("sumsq", row["sumsq"], ref["sumsq"])


# ----------------------------------------------------------------------------- reading runs
def run_dirs(root: Path) -> list[Path]:
    """The run directories under ``root`` (directories holding meta.json), sorted."""
    return sorted(p.parent for p in root.glob(f"*/{META_FILE}"))


def only_run(root: Path) -> Path:
    """The single run directory under ``root``."""
    dirs = run_dirs(root)
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json of rank 0."""
    data: dict[str, Any] = json.loads((run_dir / META_FILE).read_text("utf-8"))
    return data


def part_files(run_dir: Path, table: str, rank: int = 0) -> list[Path]:
    """The visible part files of ``table`` (hidden temporary files excluded), in order."""
    return sorted((run_dir / table / f"rank={rank}").glob("part-*.parquet"))


def read_table(run_dir: Path, table: str) -> pa.Table | None:
    """All visible parts of ``table`` concatenated, or None when there are none."""
    parts = [pq.read_table(p) for p in part_files(run_dir, table)]
    if not parts:
        return None
    return pa.concat_tables(parts)


def read_rows(run_dir: Path, table: str) -> list[dict[str, Any]]:
    """All rows of ``table`` as dicts (dictionary columns decoded to str)."""
    t = read_table(run_dir, table)
    rows: list[dict[str, Any]] = [] if t is None else t.to_pylist()
    return rows


def stat_rows(run_dir: Path, kind: str = "grad") -> dict[tuple[int, str], dict[str, Any]]:
    """Rows of the tensors table for ``kind``, keyed by (step, tensor); duplicates fail."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for row in read_rows(run_dir, "tensors"):
        if row["kind"] != kind:
            continue
        key = (row["step"], row["tensor"])
        assert key not in out, f"duplicate row for {key}"
        out[key] = row
    return out


def scalar_rows(run_dir: Path) -> dict[tuple[int, str], float]:
    """The scalars table as {(step, name): value}; duplicates fail."""
    out: dict[tuple[int, str], float] = {}
    for row in read_rows(run_dir, "scalars"):
        key = (row["step"], row["name"])
        assert key not in out, f"duplicate scalar {key}"
        out[key] = row["value"]
    return out


# ----------------------------------------------------------------------------- training
def chain_model(dtype: torch.dtype = torch.float32) -> torch.nn.Sequential:
    """A small chain: Linear(6, 16) -> Tanh -> Linear(16, 8) -> Tanh -> Linear(8, 3)."""
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        torch.nn.Tanh(),
        torch.nn.Linear(16, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
    ).to(dtype)


def clean_name(name: str) -> str:
    """A parameter name without torch.compile's wrapper prefix."""
    return name.removeprefix("_orig_mod.")


class Capture:
    """Clones what the optimizer sees at each ``optimizer.step()``: gradients and parameters
    before the update (pre-hook) and parameters after it (post-hook).

    Create it before the Recorder so that its hooks run first; it only reads tensors.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.named = [(clean_name(n), p) for n, p in model.named_parameters()]
        self.optimizer = optimizer
        self.grads: list[dict[str, torch.Tensor | None]] = []
        self.before: list[dict[str, torch.Tensor]] = []
        self.after: list[dict[str, torch.Tensor]] = []
        self.lrs: list[list[float]] = []
        self.handles = [
            optimizer.register_step_pre_hook(self._pre),
            optimizer.register_step_post_hook(self._post),
        ]

    def _pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.grads.append(
            {n: None if p.grad is None else p.grad.detach().clone() for n, p in self.named}
        )
        self.before.append({n: p.detach().clone() for n, p in self.named})
        self.lrs.append([float(g["lr"]) for g in self.optimizer.param_groups])

    def _post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.after.append({n: p.detach().clone() for n, p in self.named})

    def grad(self, step: int, name: str) -> torch.Tensor:
        g = self.grads[step][name]
        assert g is not None, (step, name)
        return g

    def update(self, step: int, name: str) -> torch.Tensor:
        """The update as plain torch computes it in the parameter's dtype: after - before."""
        return self.after[step][name] - self.before[step][name]


def global_norm(tensors: list[torch.Tensor]) -> float:
    """L2 norm of all elements of ``tensors``, in float64."""
    return math.sqrt(sum(float((as_float64(t) ** 2).sum()) for t in tensors))
