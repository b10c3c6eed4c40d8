"""Report scale: a synthetic run of 1M steps x 200 tensors -> HTML report time, size, first paint.

    python -m benchmarks.report_scale [--steps 1000000] [--tensors 200] [--root /tmp/gradlog-scale]

The run is written straight to Parquet (tests/report/synthetic.py; gradients every step, parameter
and update statistics every 10 steps, histograms every 50). The report is built from a saved
analysis.json (as ``gradlog report`` does when the analysis is current), so this times the report
stage; first paint is timed in headless Chromium (until every chart is drawn). Then each reader of
``gradlog.report.data`` is timed on its own. CPU seconds (all threads) are printed next to wall
seconds: on a shared machine they say more than the wall clock.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from gradlog.analysis import RunResult
from gradlog.report import build_report
from tests.report.synthetic import write_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--tensors", type=int, default=200)
    ap.add_argument("--root", type=Path, default=Path("/tmp/gradlog-scale"))
    ap.add_argument("--reuse", action="store_true", help="keep an existing synthetic run")
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
        print(f"wrote the synthetic run in {time.perf_counter() - t0:.0f} s")
    size = sum(f.stat().st_size for f in run.rglob("*.parquet"))
    result = RunResult(run.name, "scale", str(run), "finished", args.steps, False)
    (run / "analysis.json").write_text(json.dumps(result.to_json()), encoding="utf-8")
    out = args.root / "scale-report.html"
    t0, c0 = time.perf_counter(), time.process_time()
    build_report([run], out)
    build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    mb = out.stat().st_size / 1e6
    readers = _time_readers(run)
    paint = None
    from tests.report import browser

    if browser.missing_reason() is None:
        with browser.chromium() as d:
            paint = browser.open_report(d, out, timeout=120)
    print(
        json.dumps(
            {
                "steps": args.steps,
                "tensors": args.tensors,
                "run_parquet_mb": round(size / 1e6, 1),
                "report_build_s": round(build_s, 1),
                "report_build_cpu_s": round(build_cpu, 1),
                "report_mb": round(mb, 2),
                "first_paint_s": None if paint is None else round(paint, 2),
                "readers_wall_cpu_s": readers,
            }
        )
    )


def _time_readers(run: Path) -> dict[str, list[float]]:
    """Each reader of gradlog.report.data on its own: [wall s, CPU s of all threads]."""
    from gradlog.report import data

    src = data.open_run(run)
    out: dict[str, list[float]] = {}
    for name in ("scalar_series", "step_series", "tensor_views", "exponent_histogram"):
        t0, c0 = time.perf_counter(), time.process_time()
        getattr(data, name)(src)
        out[name] = [round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)]
    return out


if __name__ == "__main__":
    main()
