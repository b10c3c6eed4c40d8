"""Test helper: write a gradlog run directory from numpy arrays with the real schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradlog.schema import (
    HIST_BINS,
    HISTS,
    SCALARS,
    SCHEMA_VERSION,
    STEPS,
    TENSORS,
    table_at,
)
from tests.parts import write_part

if TYPE_CHECKING:
    from gradlog.analysis.frames import RunFrames
    from gradlog.schema import Table


class FramesOf(Protocol):
    """The ``frames_of`` fixture: write a run with :func:`make_run`, return its frames."""

    def __call__(self, grad_norms: dict[str, np.ndarray], **kw: Any) -> RunFrames: ...


def write_table(
    run: Path, table: Table, rows: dict[str, Any], rank: int = 0, index: int = 0
) -> Path:
    return write_part(run, table, rows, index=index, rank=rank)


def make_run(
    root: Path,
    run_id: str,
    grad_norms: dict[str, np.ndarray],
    *,
    numel: int = 100,
    loss: np.ndarray | None = None,
    param_norms: dict[str, np.ndarray] | None = None,
    update_norms: dict[str, np.ndarray] | None = None,
    every: int = 10,
    nonfinite: dict[str, np.ndarray] | None = None,
    zero_frac: dict[str, np.ndarray] | None = None,
    config: dict[str, Any] | None = None,
    optimizer: dict[str, Any] | None = None,
    catalogue: list[dict[str, Any]] | None = None,
    scalars: dict[str, np.ndarray] | None = None,
    loss_scale: np.ndarray | None = None,
    skipped: np.ndarray | None = None,
    hist_exp: dict[str, int] | None = None,
    rank: int = 0,
    world_size: int = 1,
    status: str = "finished",
) -> Path:
    """A run whose gradient of tensor t at step s has norm grad_norms[t][s] (spread evenly)."""
    run = root / run_id
    run.mkdir(parents=True, exist_ok=True)
    names = list(grad_norms)
    n = len(next(iter(grad_norms.values())))
    cat = catalogue or [
        {
            "name": t,
            "shape": [10, 10],
            "numel": numel,
            "dtype": "float32",
            "module_type": "Linear",
            "requires_grad": True,
            "in_optimizer": True,
            "depth": i,
            "backward_order": len(names) - 1 - i,
        }
        for i, t in enumerate(names)
    ]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "name": run_id,
        "status": status,
        "start_time": 0.0,
        "end_time": 1.0,
        "heartbeat": 1.0,
        "world_size": world_size,
        "rank": 0,
        "config": config or {},
        "optimizer": optimizer or {"class": "SGD", "param_groups": [{"lr": 0.1}]},
        "tensors": cat,
    }
    (run / "meta.json").write_text(json.dumps(meta))
    rows: dict[str, list[Any]] = {c: [] for c in TENSORS.names}

    def add(kind: str, t: str, s: int, norm: float, *, nf: int = 0, zf: float = 0.0) -> None:
        cnt = numel
        v = norm / np.sqrt(cnt) if np.isfinite(norm) else 0.0
        rows["step"].append(s)
        rows["tensor"].append(t)
        rows["kind"].append(kind)
        rows["count"].append(cnt)
        rows["sum"].append(float(v * (cnt - nf)))
        rows["sumsq"].append(float(norm**2) if np.isfinite(norm) else 0.0)
        rows["absmax"].append(float(v))
        rows["zeros"].append(round(zf * cnt))
        rows["nonfinite"].append(nf)

    for t in names:
        for s in range(n):
            nf = int(nonfinite[t][s]) if nonfinite and t in nonfinite else 0
            zf = float(zero_frac[t][s]) if zero_frac and t in zero_frac else 0.0
            add("grad", t, s, float(grad_norms[t][s]), nf=nf, zf=zf)
            if s % every == 0 and param_norms and t in param_norms:
                add("param", t, s, float(param_norms[t][s]))
            if s % every == 0 and update_norms and t in update_norms:
                add("update", t, s, float(update_norms[t][s]))
    write_table(run, TENSORS, rows, rank)
    total = np.sqrt(sum(np.asarray(v, dtype=np.float64) ** 2 for v in grad_norms.values()))
    if nonfinite:
        bad = sum(np.asarray(v) for v in nonfinite.values()) > 0
        total = np.where(bad, np.nan, total)
    write_table(
        run,
        STEPS,
        {
            "step": list(range(n)),
            "time": [float(s) for s in range(n)],
            "grad_norm": total.tolist(),
            "grads_none": [0] * n,
            "loss_scale": [None] * n if loss_scale is None else loss_scale.tolist(),
            "skipped": [None] * n if skipped is None else skipped.tolist(),
            "tensor_stats": [True] * n,
        },
        rank,
    )
    sc: dict[str, np.ndarray] = dict(scalars or {})
    if loss is not None:
        sc["loss"] = loss
    srows: dict[str, list[Any]] = {"step": [], "name": [], "value": []}
    for name, vals in sc.items():
        for s, v in enumerate(vals):
            srows["step"].append(s)
            srows["name"].append(name)
            srows["value"].append(float(v))
    if srows["step"]:
        write_table(run, SCALARS, srows, rank)
    if hist_exp:
        hrows: dict[str, list[Any]] = {"step": [], "tensor": [], "kind": [], "bins": []}
        for t, e in hist_exp.items():
            bins = [0] * HIST_BINS
            bins[1 + e + 149] = numel
            hrows["step"].append(0)
            hrows["tensor"].append(t)
            hrows["kind"].append("grad")
            hrows["bins"].append(bins)
        write_table(run, HISTS, hrows, rank)
    return run


def batch_row(d: dict[str, Any]) -> Any:
    """A BatchRow from a dict of its fields (tests write rows as dicts; defaults filled in)."""
    from gradlog.analysis.result import BatchRow

    return BatchRow(
        run_id=str(d["run_id"]),
        name=str(d.get("name", "")),
        config=dict(d.get("config") or {}),
        outcome=d.get("outcome"),
        failed=bool(d.get("failed", False)),
        initial_loss=d.get("initial_loss"),
        final_loss=d.get("final_loss"),
        nonnegative=bool(d.get("nonnegative", False)),
        lr=d.get("lr"),
        update_ratio_peak=d.get("update_ratio_peak"),
        update_ratio_median=d.get("update_ratio_median"),
    )


def as_schema_2_part(part: Path, *, label: str | None = "2") -> None:
    """Rewrite a ``tensors`` or ``steps`` part as gradlog with schema version 2 wrote it:
    ``tensors`` also with ``min`` and ``max`` (float32) and ``sum`` as float32, ``steps`` with
    ``grad_norm`` as float32 (``label`` None: without the version metadata, as another writer
    would leave it)."""
    t = pq.read_table(part)
    cols = {n: t[n] for n in t.column_names}
    names = list(t.column_names)
    if "sumsq" in cols:
        absmax = t["absmax"].to_numpy()
        cols["sum"] = t["sum"].cast(pa.float32())
        cols["min"] = pa.array(-absmax, pa.float32())
        cols["max"] = pa.array(absmax, pa.float32())
        names = table_at(TENSORS, 2).names
    else:
        cols["grad_norm"] = t["grad_norm"].cast(pa.float32())
    meta = {"gradlog_schema_version": label} if label is not None else None
    pq.write_table(pa.table([cols[n] for n in names], names=names, metadata=meta), part)


def as_schema_2(run: Path) -> None:
    """Rewrite the whole run (meta.json, every tensors and steps part) as schema version 2."""
    for table in ("tensors", "steps"):
        for part in sorted((run / table).glob("rank=*/part-*.parquet")):
            as_schema_2_part(part)
    meta = json.loads((run / "meta.json").read_text())
    meta["schema_version"] = 2
    (run / "meta.json").write_text(json.dumps(meta))
