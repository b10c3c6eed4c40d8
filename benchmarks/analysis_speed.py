"""Analysis speed: the full detector suite against a plain polars scan + aggregate and pandas.

    python -m benchmarks.analysis_speed [--rows 20000000] [--runs 8] [--tensors 200] [--repeat 3]

A synthetic batch of runs is written once (cached under ``benchmarks/out/analysis_speed/``) with
the real schema and the recorder's default schedules: gradient statistics of every tensor at
every step, parameter and update statistics every 10 steps, exponent histograms every 50, one
``steps`` row and two scalars (loss, lr/0) per step, in parts of 1000 steps. ``--rows`` counts
(step, tensor) gradient rows over all runs. Values are plausible: log-normal norms per tensor
with a slow drift, a few injected spikes (global and single-tensor) and NaNs.

Each contender runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own:

* ``floor``: ``pl.scan_parquet`` over every run's tensors parts, one ``group_by(run, tensor,
  kind)`` aggregate of the columns the suite reads (sums of count/sum/sumsq/zeros/nonfinite,
  min/max/absmax, step range);
* ``suite``: ``gradlog.analysis.analyze(paths)``, every detector and the convergence fits;
* ``pandas``: the detectors' core work in pandas, run by run: norms from sumsq, per-tensor
  group statistics (medians of early/late windows, zero fractions, non-finite counts), the
  rolling median and MAD (window 50) of log10 norms per tensor and of the global norm.

Libraries are imported before the clock starts. Floor and suite run ``--repeat`` times,
interleaved, and the best wall and CPU times count (pandas, far slower, runs once); CPU time
(user + sys of the child) is printed next to wall time because a shared machine's load moves
wall times far more than CPU times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
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

OUT = Path(__file__).resolve().parent / "out" / "analysis_speed"
PART_STEPS = 1000
PARAM_EVERY = 10
HIST_EVERY = 50
WINDOW = 50


# ------------------------------------------------------------------------------ synthetic runs
def _write(run: Path, table: Table, index: int, cols: dict[str, Any]) -> None:
    from tests.parts import write_part  # pyarrow stays out of the measured child processes

    write_part(run, table, cols, index=index)


def _names(tensors: int) -> list[str]:
    return [f"blocks.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}" for i in range(tensors)]


def _stat_block(
    rng: np.random.Generator, norm: np.ndarray, numel: np.ndarray, nonfinite: np.ndarray
) -> dict[str, np.ndarray]:
    """Sufficient statistics whose sumsq gives ``norm`` (tensor-major [t, n] arrays)."""
    t, n = norm.shape
    cnt = np.repeat(numel, n)
    flat = norm.reshape(-1)
    finite = np.isfinite(flat)
    safe = np.where(finite, flat, 0.0)
    rms = safe / np.sqrt(cnt)
    absmax = (rms * rng.uniform(3.0, 6.0, t * n)).astype(np.float32)
    return {
        "count": cnt,
        "sum": (safe * np.sqrt(cnt) * 0.01 * rng.standard_normal(t * n)).astype(np.float32),
        "sumsq": (safe**2).astype(np.float32),
        "min": -absmax,
        "max": absmax,
        "absmax": absmax,
        "zeros": (cnt * 0.002).astype(np.int64),
        "nonfinite": nonfinite.reshape(-1).astype(np.int64),
    }


def _add(
    cols: dict[str, list[np.ndarray]], kind: int, steps: np.ndarray, block: dict[str, np.ndarray]
) -> None:
    """Append a tensor-major block of ``kind`` rows (0 grad, 1 param, 2 update) to ``cols``."""
    tensors = len(block["count"]) // len(steps)
    cols["step"].append(np.tile(steps, tensors))
    cols["tensor"].append(np.repeat(np.arange(tensors, dtype=np.int32), len(steps)))
    cols["kind"].append(np.full(tensors * len(steps), kind, np.int32))
    for k, v in block.items():
        cols[k].append(v)


def write_run(root: Path, index: int, steps: int, tensors: int) -> Path:
    """One synthetic run ``run-<index>`` of ``steps`` x ``tensors`` gradient rows."""
    rng = np.random.default_rng(index)
    names = _names(tensors)
    run = root / f"run-{index:02d}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    width = 256
    numel = np.array([width * width if i % 2 == 0 else width for i in range(tensors)], np.int64)
    lr = float(10 ** rng.uniform(-4, -2.5))
    start = 1_700_000_000.0
    meta = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.name,
        "name": f"synthetic {index}",
        "status": "finished",
        "start_time": start,
        "end_time": start + steps * 0.05,
        "heartbeat": start + steps * 0.05,
        "versions": {"gradlog": "bench", "torch": "none", "python": platform.python_version()},
        "host": "synthetic",
        "pid": 1,
        "world_size": 1,
        "rank": 0,
        "config": {"lr": lr, "batch_size": 64, "seed": index},
        "optimizer": {
            "class": "AdamW",
            "param_groups": [{"lr": lr, "eps": 1e-8, "weight_decay": 0.01}],
        },
        "tensors": [
            {
                "name": n,
                "shape": [width, width] if i % 2 == 0 else [width],
                "numel": int(numel[i]),
                "dtype": "float32",
                "module_type": "Linear",
                "requires_grad": True,
                "in_optimizer": True,
                "depth": i,
                "backward_order": tensors - 1 - i,
            }
            for i, n in enumerate(names)
        ],
        "schedules": {"grads": "every step", "params": "every 10", "hists": "every 50"},
        "counters": {"steps_recorded": steps},
        "errors": [],
    }
    (run / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    # per-tensor scale: deeper layers a little smaller, biases smaller than weights
    scale = 10 ** (-0.004 * np.arange(tensors) + rng.normal(0, 0.3, tensors))
    scale[1::2] *= 0.1
    spikes = rng.choice(np.arange(200, steps), size=min(4, max(0, steps - 200)), replace=False)
    solo = {int(s): int(rng.integers(tensors)) for s in rng.choice(steps, 3, replace=False)}
    nan_at = int(steps * 0.97) if index == 0 else None  # one run ends in NaN
    drift = np.cumsum(rng.normal(0, 0.002, steps))  # log-space random walk of all norms
    tid = np.arange(tensors, dtype=np.int32)
    kinds = ["grad", "param", "update"]
    for part, s0 in enumerate(range(0, steps, PART_STEPS)):
        st = np.arange(s0, min(steps, s0 + PART_STEPS), dtype=np.int64)
        n = len(st)
        decay = (1.0 + st / 500.0) ** -0.5 * np.exp(drift[st])
        norm = scale[:, None] * decay[None, :] * rng.lognormal(0, 0.15, (tensors, n))
        for s in spikes[(spikes >= s0) & (spikes < s0 + n)]:
            norm[:, s - s0] *= 20.0
        for s, t in solo.items():
            if s0 <= s < s0 + n:
                norm[t, s - s0] *= 50.0
        nonfinite = np.zeros((tensors, n), np.int64)
        if nan_at is not None and s0 <= nan_at < s0 + n:
            nonfinite[-3:, nan_at - s0 :] = 7
            norm[-3:, nan_at - s0 :] = np.nan
        cols: dict[str, list[np.ndarray]] = {c: [] for c in TENSORS.names}
        _add(cols, 0, st, _stat_block(rng, norm, numel, nonfinite))
        pst = st[st % PARAM_EVERY == 0]
        if len(pst):
            m = len(pst)
            pn = np.sqrt(numel)[:, None] * 0.03 * (1 + pst[None, :] / (4.0 * steps))
            un = pn * lr * rng.lognormal(0, 0.2, (tensors, m)) * 3
            zero = np.zeros((tensors, m), np.int64)
            _add(cols, 1, pst, _stat_block(rng, pn, numel, zero))
            _add(cols, 2, pst, _stat_block(rng, un, numel, zero))
        joined: dict[str, Any] = {k: np.concatenate(v) for k, v in cols.items()}
        joined["tensor"] = (joined["tensor"], names)
        joined["kind"] = (joined["kind"], kinds)
        _write(run, TENSORS, part, joined)
        hst = st[st % HIST_EVERY == 0]
        if len(hst):
            m = len(hst)
            hn = norm[:, hst - s0]
            rms = np.where(np.isfinite(hn), hn, 1.0) / np.sqrt(numel)[:, None]
            centre = np.floor(np.log2(rms)).astype(np.int64).reshape(-1) - EXP_MIN + 1
            bins = np.zeros((tensors * m, HIST_BINS), np.int64)
            per = np.repeat(numel, m)
            rows = np.arange(tensors * m)
            for off, frac in ((-3, 0.05), (-2, 0.1), (-1, 0.25), (0, 0.35), (1, 0.25)):
                bins[rows, np.clip(centre + off, 1, HIST_BINS - 2)] += (per * frac).astype(np.int64)
            _write(
                run,
                HISTS,
                part,
                {
                    "step": np.tile(hst, tensors),
                    "tensor": (np.repeat(tid, m), names),
                    "kind": (np.zeros(tensors * m, np.int32), kinds),
                    "bins": bins,
                },
            )
        with np.errstate(invalid="ignore"):
            gnorm = np.sqrt(np.nansum(norm**2, axis=0))
        if nan_at is not None:
            gnorm[st >= nan_at] = np.nan
        _write(
            run,
            STEPS,
            part,
            {
                "step": st,
                "time": start + st * 0.05,
                "grad_norm": gnorm.astype(np.float32),
                "grads_none": np.zeros(n, np.int32),
                "loss_scale": np.full(n, None),
                "skipped": np.full(n, None),
                "tensor_stats": np.ones(n, bool),
            },
        )
        loss = 0.4 + 2.5 * (1.0 + st / 300.0) ** -0.6 * rng.lognormal(0, 0.03, n)
        for s in spikes[(spikes >= s0) & (spikes < s0 + n)]:
            loss[s - s0 : s - s0 + 3] *= 3.0
        if nan_at is not None:
            loss[st > nan_at] = np.nan
        _write(
            run,
            SCALARS,
            part,
            {
                "step": np.concatenate([st, st]),
                "name": (np.repeat(np.array([0, 1], np.int32), n), ["loss", "lr/0"]),
                "value": np.concatenate([loss, np.full(n, lr)]),
            },
        )
    return run


def ensure_data(rows: int, runs: int, tensors: int) -> tuple[Path, list[Path], float | None]:
    """The cached batch for these sizes, written (in parallel) when absent; (root, runs, secs)."""
    steps = rows // (runs * tensors)
    root = OUT / f"rows{rows}-runs{runs}-tensors{tensors}"
    done = root / "complete.json"
    paths = [root / f"run-{i:02d}" for i in range(runs)]
    if done.is_file():
        return root, paths, None
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(write_run, [root] * runs, range(runs), [steps] * runs, [tensors] * runs))
    secs = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    done.write_text(json.dumps({"steps": steps, "bytes": size, "write_s": secs}))
    return root, paths, secs


# ------------------------------------------------------------------------------ contenders
STAT_COLS = ("count", "sum", "sumsq", "zeros", "nonfinite")


def run_floor(paths: list[Path]) -> dict[str, Any]:
    import polars as pl

    lf = pl.concat(
        [
            pl.scan_parquet(str(p / "tensors" / "rank=0" / "*.parquet")).with_columns(
                pl.lit(p.name).alias("run")
            )
            for p in paths
        ]
    )
    out = (
        lf.group_by("run", "tensor", "kind")
        .agg(
            *[pl.col(c).cast(pl.Float64).sum() for c in STAT_COLS],
            pl.col("min").min(),
            pl.col("max").max(),
            pl.col("absmax").max(),
            pl.col("step").min().alias("s0"),
            pl.col("step").max().alias("s1"),
            pl.len(),
        )
        .collect()
    )
    return {"groups": out.height}


def run_suite(paths: list[Path]) -> dict[str, Any]:
    from gradlog.analysis import analyze

    res = analyze(paths)
    problems = [p for r in res.runs for p in r.problems]
    return {"findings": len(res.findings), "problems": problems[:5]}


def run_pandas(paths: list[Path]) -> dict[str, Any]:
    import pandas as pd

    groups = 0
    for p in paths:
        df = pd.read_parquet(
            p / "tensors",
            columns=["step", "tensor", "kind", *STAT_COLS],
            filters=[("kind", "==", "grad")],
        )
        df["tensor"] = df["tensor"].astype(str)
        df = df.sort_values(["tensor", "step"], kind="stable")
        n = (df["count"] - df["nonfinite"]).astype("float64")
        df["norm"] = np.sqrt(df["sumsq"].astype("float64"))
        df["rms"] = np.sqrt(df["sumsq"].astype("float64") / n)
        df["zero_frac"] = df["zeros"] / df["count"]
        with np.errstate(divide="ignore", invalid="ignore"):
            df["logn"] = np.log10(df["norm"].where(df["norm"] > 0))
        by = df.groupby("tensor", sort=False)
        w = max(5, df["step"].nunique() // 10)
        stats = by.agg(
            median=("norm", "median"),
            nonfinite=("nonfinite", "sum"),
            zero_frac=("zero_frac", "mean"),
            s0=("step", "min"),
            s1=("step", "max"),
        )
        stats["early"] = by["norm"].apply(lambda s, w=w: s.iloc[:w].median())
        stats["late"] = by["norm"].apply(lambda s, w=w: s.iloc[-w:].median())
        med = by["logn"].rolling(WINDOW, min_periods=10).median().reset_index(level=0, drop=True)
        dev = (df["logn"] - med).abs()
        mad = dev.groupby(df["tensor"]).rolling(WINDOW, min_periods=10).median()
        groups += len(stats) + int(mad.notna().sum() > 0)
        steps = pd.read_parquet(p / "steps", columns=["step", "grad_norm"]).sort_values("step")
        g = np.log10(steps["grad_norm"].astype("float64").where(steps["grad_norm"] > 0))
        gmed = g.rolling(WINDOW, min_periods=10).median()
        (g - gmed).abs().rolling(WINDOW, min_periods=10).median()
    return {"groups": groups}


CONTENDERS = {"floor": run_floor, "suite": run_suite, "pandas": run_pandas}


def child(name: str, paths: list[Path]) -> None:
    """Run one contender and print wall time and peak RSS as JSON (in a fresh process).

    The libraries are imported before the clock starts: the timings are of the work alone.
    """
    import pandas  # noqa: F401
    import polars  # noqa: F401

    import gradlog.analysis  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    extra = CONTENDERS[name](paths)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak = after.ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"name": name, "wall_s": wall, "cpu_s": cpu, "peak_rss_bytes": peak, **extra}))


def measure(name: str, paths: list[Path]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.analysis_speed", "--child", name]
    cmd += [str(p) for p in paths]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------ report
def table(rows: int, results: dict[str, dict[str, Any]]) -> str:
    floor = results.get("floor")
    lines = [
        "| contender | wall (best) | rows/s | CPU (best) | peak RSS | wall / floor | CPU / floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        wall = f"{r['wall_s'] / floor['wall_s']:.2f}" if floor else "-"
        cpu = f"{r['cpu_s'] / floor['cpu_s']:.2f}" if floor else "-"
        lines.append(
            f"| {name} | {r['wall_s']:.1f} s | {rows / r['wall_s'] / 1e6:.2f} M | "
            f"{r['cpu_s']:.1f} s | {r['peak_rss_bytes'] / 2**30:.2f} GiB | {wall} | {cpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000, help="(step, tensor) gradient rows")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--only", default="floor,suite,pandas", help="comma-separated contenders")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (pandas runs once)")
    ap.add_argument("--child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.paths)
        return
    root, paths, secs = ensure_data(args.rows, args.runs, args.tensors)
    info = json.loads((root / "complete.json").read_text())
    print(
        f"data: {root} ({info['bytes'] / 1e9:.2f} GB of Parquet, {info['steps']} steps x "
        f"{args.tensors} tensors x {args.runs} runs"
        + (f", written in {secs:.0f} s)" if secs is not None else ", cached)"),
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    names = args.only.split(",")
    for rep in range(args.repeat):  # interleaved, so that load from other jobs hits all alike
        for name in names:
            if name == "pandas" and rep > 0:
                continue  # tens of seconds, far from the others: once is enough
            r = measure(name, paths)
            print(
                f"{name}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
                f"{args.rows / r['wall_s'] / 1e6:.2f} M rows/s, "
                f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB",
                flush=True,
            )
            best = results.setdefault(name, r)
            for key in ("wall_s", "cpu_s", "peak_rss_bytes"):
                best[key] = (
                    min(best[key], r[key]) if key != "peak_rss_bytes" else max(best[key], r[key])
                )
    print(table(args.rows, results))


if __name__ == "__main__":
    main()
