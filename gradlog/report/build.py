"""``build_report``: analysis results (saved or fresh) + the runs' Parquet -> one HTML file."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

from gradlog.analysis import AnalysisConfig, Kind, RunResult
from gradlog.analysis.batch import outcome
from gradlog.analysis.sweep import sweep_sets
from gradlog.errors import ConfigError
from gradlog.report import data, figures
from gradlog.report.decimate import minmax_envelope
from gradlog.report.model import (
    BatchReport,
    Chart,
    RunReport,
    RunRow,
    build_run_report,
    varying_keys,
)
from gradlog.report.render import render_batch, render_run
from gradlog.report.results import discover, load_results

RUNS_DIR = "runs"
"""Per-run pages of a batch report go to ``<out_dir>/runs/<run_id>.html``."""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _file_name(run_id: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:120].lstrip(".") or "run"
    name, i = base, 1
    while name.lower() in taken:
        i += 1
        name = f"{base}-{i}"
    taken.add(name.lower())
    return f"{name}.html"


def _bar(items: list[Path], show: bool, label: str) -> Iterator[Path]:
    if not show or len(items) < 2:
        yield from items
        return
    import click

    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


def _overlay(reports: Iterable[RunReport], which: str) -> list[tuple[str, data.Series]]:
    out = []
    for r in reports:
        s = r.loss_series if which == "loss" else r.norm_series
        if s is not None and len(s):
            out.append((r.name or r.run_id, data.Series(*minmax_envelope(s.x, s.y, 1000))))
    return out


def _sweep_charts(results: list[RunResult], batch: BatchReport) -> list[Chart]:
    """One chart per sweep the analysis recognises (runs that differ only in one numeric
    hyperparameter), with its finding; unrelated runs that merely differ get none."""
    cfg = AnalysisConfig()
    configs = [dict(r.config) for r in results]
    findings = {
        (str(f.evidence.get("hyperparameter")), str(f.evidence.get("group", ""))): f
        for f in batch.findings
        if f.kind is Kind.SWEEP
    }
    charts: list[Chart] = []
    for key, group, fixed in sweep_sets(configs, [outcome(r) for r in results], cfg)[:4]:
        pts = [
            (
                float(results[i].config[key]),
                outcome(results[i]),
                results[i].name or results[i].run_id,
            )
            for i in group
        ]
        finding = findings.get((key, fixed))
        caption = f"{finding.message} {finding.hint}" if finding else ""
        title = f"Sweep over {key[:40]}" + (f" ({fixed[:60]})" if fixed else "")
        charts.append(
            Chart(
                f"sweep-{len(charts)}",
                title,
                caption,
                figures.sweep(key, pts, dict(finding.evidence) if finding else None),
            )
        )
    return charts


def build_report(paths: Sequence[str | Path], out: str | Path, progress: bool = False) -> Path:
    """Write the HTML report of the runs under ``paths`` to ``out`` and return its path.

    One run gives one page. Several give a batch page at ``out`` and one page per run under
    ``<out's folder>/runs/``, linked from the batch table. Saved analyses (``analysis.json``)
    are reused when current; other runs are analysed first (and their analysis saved).
    """
    if isinstance(paths, (str, Path)):
        raise ConfigError("paths must be a list of paths, e.g. build_report([path], out)")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"the report is an HTML file: give a name ending in .html, not {out}")
    run_dirs = discover(paths)
    cfg = AnalysisConfig()
    results, _ = load_results(run_dirs, progress=progress, config=cfg)
    if len(run_dirs) == 1:
        report = build_run_report(data.open_run(run_dirs[0]), results.runs[0], cfg)
        _write(out, render_run(report))
        return out

    taken: set[str] = set()
    rows: list[RunRow] = []
    pairs = dict(zip(run_dirs, results.runs, strict=True))
    for run_dir in _bar(run_dirs, progress, "building report"):
        result = pairs[run_dir]
        report = build_run_report(data.open_run(run_dir), result, cfg)
        name = _file_name(report.run_id, taken)
        _write(out.parent / RUNS_DIR / name, render_run(report, back_link=quote(out.name)))
        rows.append(RunRow(report, f"{RUNS_DIR}/{quote(name)}", dict(result.config)))
    keys = varying_keys([r.hyper for r in rows])
    batch = BatchReport(rows, keys, [], list(results.batch_findings))
    loss = figures.overlay(_overlay((r.report for r in rows), "loss"), "Loss of every run", "loss")
    norm = figures.overlay(
        _overlay((r.report for r in rows), "norm"),
        "Global gradient norm of every run",
        "gradient L2 norm",
        log=True,
    )
    batch.charts = [
        Chart(
            "loss",
            "Loss",
            "Each run's loss over optimizer steps (min/max envelope).",
            loss,
            "" if loss else "No run logged a loss.",
        ),
        Chart(
            "norm",
            "Gradient norm",
            "Each run's global gradient L2 norm (log scale).",
            norm,
            "" if norm else "No run recorded gradient norms.",
        ),
        *_sweep_charts(results.runs, batch),
    ]
    _write(out, render_batch(batch))
    return out


__all__ = ["build_report"]
