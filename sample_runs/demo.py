"""The one-command tour (``make demo``): record the sample runs, analyze them, write the reports.

``python -m sample_runs.demo --out demo`` trains every labelled scenario of
``sample_runs/scenarios`` with the recorder (a progress bar on stderr), analyzes the runs,
writes ``demo/report.html`` (the batch page, linking one page per run), prints the findings
summary and the path to open.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from pathlib import Path

import click

from sample_runs.scenarios import SCENARIOS


def run_demo(out: Path) -> Path:
    """Record, analyze and report the sample runs under ``out``; returns the batch report path."""
    from gradlog.analysis import analyze
    from gradlog.cli import analysis_text
    from gradlog.report import build_report

    start = time.perf_counter()
    runs_root = out / "runs"
    if runs_root.exists():
        shutil.rmtree(runs_root)
    run_dirs: list[Path] = []
    items = list(SCENARIOS.items())
    with click.progressbar(
        items,
        label="recording the sample runs",
        file=sys.stderr,
        item_show_func=lambda item: item[0] if item else "",
    ) as bar:
        for name, scenario in bar:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # e.g. CPU autocast notes; not ours
                run_dirs.append(scenario.train(runs_root / name))
    click.echo(f"recorded {len(run_dirs)} runs in {time.perf_counter() - start:.0f} s", err=True)
    result = analyze(run_dirs, progress=True, save=True)
    report = build_report(run_dirs, out / "report.html", progress=True)
    click.echo(analysis_text(result))
    click.echo("")
    click.echo(f"done in {time.perf_counter() - start:.0f} s; open this in a browser:")
    click.echo(f"  {report.resolve()}")
    return report


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo"), help="folder for runs and pages")
    args = parser.parse_args(argv)
    run_demo(args.out)


if __name__ == "__main__":
    main()
