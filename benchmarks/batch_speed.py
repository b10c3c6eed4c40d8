"""Batch analysis throughput: runs per second for many small runs on each executor.

    python -m benchmarks.batch_speed [--runs 200] [--steps 2000] [--root /tmp/gradlog-batch]

Writes ``--runs`` synthetic runs once (tests/report/synthetic.py: 8 tensors, gradient statistics
every step, parameter/update statistics every 10 steps, histograms every 50), then analyses the
batch with each contender in its own process: ``sequential`` (one run after another),
``threads`` (the default: two runs at once in one process), ``jobs2`` (``--jobs 2``: two worker
processes) and ``ray2`` (a local Ray instance with 2 CPUs: two worker processes; the driver only
gathers results and runs the batch stage). Reported: wall time (start-up included), runs/s, the
driver's peak RSS and its RSS growth per run held (what 1,000 runs cost the driver).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CONTENDERS = ("sequential", "threads", "jobs2", "ray2")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(contender: str, root: Path) -> dict[str, object]:
    """Analyse the batch under ``root`` with ``contender``, in this process."""
    t0 = time.perf_counter()
    from gradlog.analysis.executors import (
        Executor,
        ProcessExecutor,
        RayExecutor,
        SequentialExecutor,
    )
    from gradlog.analysis.pipeline import analyze

    ex: Executor | None = None
    if contender == "sequential":
        ex = SequentialExecutor()
    elif contender == "jobs2":
        ex = ProcessExecutor(2)
    elif contender == "ray2":
        import ray

        ray.init(
            num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
        )
        ex = RayExecutor(None)
    before = _rss_mb()
    t1 = time.perf_counter()
    batch = analyze([root], executor=ex)
    t2 = time.perf_counter()
    after = _rss_mb()
    if ex is not None:
        ex.close()
    if contender == "ray2":
        import ray

        ray.shutdown()
    n = len(batch.runs)
    return {
        "contender": contender,
        "runs": n,
        "wall_s": round(time.perf_counter() - t0, 1),
        "analysis_s": round(t2 - t1, 1),
        "runs_per_s": round(n / (t2 - t1), 2),
        "driver_rss_growth_kb_per_run": round((after - before) * 1024 / max(n, 1), 1),
        "result_json_kb_per_run": round(len(json.dumps(batch.to_json())) / 1024 / max(n, 1), 1),
        "partial_runs": sum(r.partial for r in batch.runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--root", type=Path, default=Path("/tmp/gradlog-batch"))
    ap.add_argument("--only", choices=CONTENDERS, nargs="+", default=list(CONTENDERS))
    ap.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    batch = args.root / f"batch-{args.runs}x{args.steps}"
    if args.one:
        print(json.dumps(one(args.one, batch)))
        return
    if not batch.is_dir():
        from tests.report.synthetic import write_run

        tmp = batch.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(args.runs):
            cfg = {"lr": 10.0 ** (-4 + i % 5), "wd": [0.0, 0.01][i % 2]}
            write_run(tmp, name=f"run-{i}", steps=args.steps, seed=i, config=cfg)
        tmp.rename(batch)
    for contender in args.only:
        for f in batch.glob("*/analysis.json"):
            f.unlink()
        cmd = [sys.executable, "-m", "benchmarks.batch_speed", "--one", contender]
        cmd += ["--runs", str(args.runs), "--steps", str(args.steps), "--root", str(args.root)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        assert proc.stdout is not None
        out = json.loads(proc.stdout.read())
        out["process_s"] = round(time.perf_counter() - t0, 1)
        out["driver_peak_rss_gb"] = round(usage.ru_maxrss / 1e6, 2)
        out["exit"] = os.waitstatus_to_exitcode(status)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
