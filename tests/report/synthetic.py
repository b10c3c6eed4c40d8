"""Synthetic gradlog runs written straight to Parquet (no torch): for report tests and benchmarks.

The layout and columns come from ``gradlog/schema.py``; values are plausible, not trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gradlog.schema import (
    EXP_MIN,
    HIST_BINS,
    HISTS,
    META_FILE,
    SCALARS,
    SCHEMA_VERSION,
    STEPS,
    TENSORS,
    Table,
)
from tests.parts import write_part


def _write(run: Path, table: Table, index: int, columns: dict[str, Any]) -> None:
    write_part(run, table, columns, index=index)


def write_run(
    root: Path,
    *,
    name: str = "synthetic",
    run_id: str | None = None,
    steps: int = 120,
    tensors: list[str] | None = None,
    config: dict[str, Any] | None = None,
    lr: float = 1e-3,
    nan_at: int | None = None,
    dead: str | None = None,
    scalar_names: tuple[str, ...] = (),
    part_steps: int = 10_000,
    param_every: int = 10,
    hist_every: int = 50,
    seed: int = 0,
) -> Path:
    """Write one run under ``root`` and return its directory."""
    rng = np.random.default_rng(seed)
    default = [f"layer{i}.{p}" for i in range(4) for p in ("weight", "bias")]
    names = tensors if tensors is not None else default
    run = root / (run_id or f"{name[:20].replace('/', '_')}-{seed}")
    run.mkdir(parents=True, exist_ok=False)
    numel = [256 if i % 2 == 0 else 16 for i in range(len(names))]
    start = 1_700_000_000.0
    meta = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.name,
        "name": name,
        "status": "finished",
        "start_time": start,
        "end_time": start + steps * 0.01,
        "heartbeat": start + steps * 0.01,
        "versions": {"gradlog": "0.1.0", "torch": "2.4.0", "python": "3.11"},
        "host": "synthetic",
        "pid": 1,
        "world_size": 1,
        "rank": 0,
        "config": config if config is not None else {"lr": lr},
        "optimizer": {"class": "SGD", "param_groups": [{"lr": lr}]},
        "tensors": [
            {
                "name": n,
                "shape": [16, 16] if numel[i] == 256 else [16],
                "numel": numel[i],
                "dtype": "float32",
                "module_type": "Linear",
                "requires_grad": True,
                "in_optimizer": True,
                "depth": i,
                "backward_order": len(names) - 1 - i,
            }
            for i, n in enumerate(names)
        ],
        "schedules": {"grads": "every(1)"},
        "counters": {"steps_recorded": steps},
        "errors": [],
    }
    (run / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    scale = 10.0 ** (-np.arange(len(names)) * 0.3)  # deeper = smaller: a visible gradient flow
    t = len(names)
    for part, s0 in enumerate(range(0, steps, part_steps)):
        s1 = min(steps, s0 + part_steps)
        st = np.arange(s0, s1, dtype=np.int64)
        n = len(st)
        decay = 1.0 / np.sqrt(1.0 + st / 50.0)
        norm = scale[:, None] * decay[None, :] * rng.lognormal(0, 0.2, (t, n))
        if dead is not None and dead in names:
            norm[names.index(dead)] = 0.0
        nonfinite = np.zeros((t, n), dtype=np.int64)
        if nan_at is not None and s0 <= nan_at < s1:
            nonfinite[:, nan_at - s0] = 3
        tidx = np.repeat(np.arange(t, dtype=np.int32), n)
        kidx = np.zeros(t * n, np.int32)
        cnt = np.repeat(np.array(numel, dtype=np.int64), n)
        cols: dict[str, Any] = {
            "step": np.tile(st, t),
            "tensor": tidx,
            "kind": kidx,
            "count": cnt,
            "sum": np.zeros(t * n, np.float32),
            "sumsq": (norm.reshape(-1) ** 2).astype(np.float32),
            "absmax": norm.reshape(-1).astype(np.float32),
            "zeros": np.zeros(t * n, np.int64),
            "nonfinite": nonfinite.reshape(-1),
        }
        pst = st[st % param_every == 0]
        if len(pst):
            m = len(pst)
            pnorm = np.repeat(np.sqrt(np.array(numel, np.float64)) * 0.05, m)
            unorm = pnorm * lr * rng.lognormal(0, 0.1, t * m)
            for kind, vals in (("param", pnorm), ("update", unorm)):
                extra = {
                    "step": np.tile(pst, t),
                    "tensor": np.repeat(np.arange(t, dtype=np.int32), m),
                    "kind": np.full(t * m, 1 if kind == "param" else 2, np.int32),
                    "count": np.repeat(np.array(numel, np.int64), m),
                    "sum": np.zeros(t * m, np.float32),
                    "sumsq": (vals**2).astype(np.float32),
                    "absmax": vals.astype(np.float32),
                    "zeros": np.zeros(t * m, np.int64),
                    "nonfinite": np.zeros(t * m, np.int64),
                }
                for k, v in extra.items():
                    cols[k] = np.concatenate([cols[k], v])
        cols["tensor"] = (cols["tensor"], names)
        cols["kind"] = (cols["kind"], ["grad", "param", "update"])
        _write(run, TENSORS, part, cols)
        hst = st[st % hist_every == 0]
        if len(hst):
            m = len(hst)
            bins = np.zeros((t * m, HIST_BINS), np.int64)
            centre = (np.log2(np.repeat(scale, m)) - 8 - EXP_MIN + 1).astype(int)
            for off, frac in ((-2, 0.1), (-1, 0.25), (0, 0.3), (1, 0.25), (2, 0.1)):
                bins[np.arange(t * m), np.clip(centre + off, 1, HIST_BINS - 2)] = (
                    np.repeat(numel, m) * frac
                ).astype(np.int64)
            _write(
                run,
                HISTS,
                part,
                {
                    "step": np.tile(hst, t),
                    "tensor": (np.repeat(np.arange(t, dtype=np.int32), m), names),
                    "kind": (np.zeros(t * m, np.int32), ["grad"]),
                    "bins": bins,
                },
            )
        gnorm = np.sqrt((norm**2).sum(axis=0))
        _write(
            run,
            STEPS,
            part,
            {
                "step": st,
                "time": start + st * 0.01,
                "grad_norm": gnorm.astype(np.float32),
                "grads_none": np.zeros(n, np.int32),
                "loss_scale": [None] * n,
                "skipped": [None] * n,
                "tensor_stats": np.ones(n, bool),
            },
        )
        loss = 2.0 * decay + 0.1 + rng.normal(0, 0.02, n)
        if nan_at is not None and s0 <= nan_at < s1:
            loss[nan_at - s0 :] = np.nan
        snames = ["loss", "lr/0", *scalar_names]
        svals = [loss, np.full(n, lr), *[rng.normal(0, 1, n) for _ in scalar_names]]
        _write(
            run,
            SCALARS,
            part,
            {
                "step": np.tile(st, len(snames)),
                "name": (np.repeat(np.arange(len(snames), dtype=np.int32), n), snames),
                "value": np.concatenate(svals),
            },
        )
    return run
