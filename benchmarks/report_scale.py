"""Report scale: a synthetic run of 1M steps x 200 tensors -> analysis, then HTML report.

    python -m benchmarks.report_scale [--steps 1000000] [--tensors 200] [--root /tmp/gradlog-scale]
                                      [--batch 45]

The run is written straight to Parquet (tests/report/synthetic.py; gradients every step, parameter
and update statistics every 10 steps, histograms every 50). Then, as a user would, ``gradlog
analyze RUN`` and ``gradlog report RUN`` run as two processes, each timed with its peak memory
(max RSS of the process, from the kernel's rusage); first paint is timed in headless Chromium
(until every chart is drawn) when it is installed. With ``--batch N`` it also writes N small runs
and reports their batch, to measure the total size of a batch report (shared plotly.js).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.report.synthetic import write_run


def _timed(args: list[str]) -> tuple[float, float]:
    """Run ``python -m gradlog.cli ARGS``: (wall seconds, peak RSS of that process in GB)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "gradlog.cli", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1e6  # KB on Linux


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--root", type=Path, default=Path("/tmp/gradlog-scale"))
    ap.add_argument("--reuse", action="store_true", help="keep an existing synthetic run")
    ap.add_argument("--batch", type=int, default=0, help="also measure a batch of N runs")
    args = ap.parse_args()
    run = args.root / f"scale-{args.steps}x{args.tensors}"
    if not (args.reuse and run.is_dir()):
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        names = [f"block{i // 2}.{'weight' if i % 2 == 0 else 'bias'}" for i in range(args.tensors)]
        write_run(
            args.root,
            name="scale",
            run_id=run.name,
            steps=args.steps,
            tensors=names,
            part_steps=5000,
        )
        print(f"wrote the synthetic run in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    (run / "analysis.json").unlink(missing_ok=True)
    parquet = sum(f.stat().st_size for f in run.rglob("*.parquet"))
    out = args.root / "scale-report.html"
    analyze_s, analyze_gb = _timed(["analyze", str(run)])
    report_s, report_gb = _timed(["report", str(run), "-o", str(out), "--no-progress"])
    paint = None
    from tests.report import browser

    if browser.missing_reason() is None:
        with browser.chromium() as d:
            paint = browser.open_report(d, out, timeout=120)
    result: dict[str, object] = {
        "steps": args.steps,
        "tensors": args.tensors,
        "run_parquet_mb": round(parquet / 1e6, 1),
        "analyze_s": round(analyze_s, 1),
        "analyze_peak_rss_gb": round(analyze_gb, 2),
        "report_s": round(report_s, 1),
        "report_peak_rss_gb": round(report_gb, 2),
        "end_to_end_s": round(analyze_s + report_s, 1),
        "analysis_json_mb": round((run / "analysis.json").stat().st_size / 1e6, 2),
        "report_mb": round(out.stat().st_size / 1e6, 2),
        "first_paint_s": None if paint is None else round(paint, 2),
    }
    if args.batch:
        batch = args.root / f"batch-{args.batch}"
        shutil.rmtree(batch, ignore_errors=True)
        for i in range(args.batch):
            write_run(batch, name=f"run-{i}", steps=2000, seed=i, config={"lr": 10 ** (-4 + i % 5)})
        pages = args.root / f"batch-{args.batch}-report"
        shutil.rmtree(pages, ignore_errors=True)
        index = pages / "index.html"
        batch_s, _ = _timed(["report", str(batch), "-o", str(index), "--no-progress"])
        result["batch_runs"] = args.batch
        result["batch_report_s"] = round(batch_s, 1)
        result["batch_report_mb"] = round(_size(pages) / 1e6, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
