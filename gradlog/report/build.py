"""Write the HTML pages of analysis results: one self-contained page for a run, or a batch page
with one page per run and one shared copy of plotly.js beside them (still fully offline).

The report renders results and only results: :func:`write_report` takes a
:class:`~gradlog.analysis.result.BatchResult`; :func:`build_report` first asks the analysis for
current results (saved ``analysis.json`` files are reused when their version, config and
fingerprint match, else the runs are analysed again).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from gradlog.analysis.result import BatchResult
from gradlog.atomic import write_atomic
from gradlog.errors import ConfigError
from gradlog.report.model import RunReport, batch_report, run_report
from gradlog.report.render import PLOTLY_FILE, plotly_js, render_batch, render_run

if TYPE_CHECKING:
    from gradlog.analysis.config import AnalysisConfig

RUNS_DIR = "runs"
"""Per-run pages of a batch report go to ``<out_dir>/runs/<run_id>.html``."""

T = TypeVar("T")


def _file_name(run_id: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:120].lstrip(".") or "run"
    name, i = base, 1
    while name.lower() in taken:
        i += 1
        name = f"{base}-{i}"
    taken.add(name.lower())
    return f"{name}.html"


def _bar(items: list[T], show: bool, label: str) -> Iterator[T]:
    if not show or len(items) < 2:
        yield from items
        return
    import click

    with click.progressbar(items, label=label, file=sys.stderr) as bar:
        yield from bar


def _write(path: Path, page: str) -> None:
    """Write a page as UTF-8; a lone surrogate (a ``\\ud800`` escape in a run's JSON) becomes
    ``?`` rather than failing the write."""
    write_atomic(path, page.encode("utf-8", "replace").decode("utf-8"))


def _check_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"the report is an HTML file: give a name ending in .html, not {out}")
    return out


def write_report(results: BatchResult, out: str | Path, progress: bool = False) -> Path:
    """Render ``results``: one run gives one self-contained page at ``out``; several give a batch
    page at ``out``, a page per run under ``<out's folder>/runs/`` and plotly.js once beside."""
    out = _check_out(out)
    if len(results.runs) == 1:
        _write(out, render_run(run_report(results.runs[0])))
        return out
    write_atomic(out.parent / PLOTLY_FILE, plotly_js())
    taken: set[str] = set()
    reports: list[RunReport] = []
    links: list[str] = []
    for result in _bar(results.runs, progress, "writing report"):
        report = run_report(result)
        name = _file_name(report.run_id, taken)
        page = render_run(report, back_link=quote(out.name), plotly_src=f"../{PLOTLY_FILE}")
        _write(out.parent / RUNS_DIR / name, page)
        reports.append(report)
        links.append(f"{RUNS_DIR}/{quote(name)}")
    batch = batch_report(results, links, reports)
    _write(out, render_batch(batch, plotly_src=PLOTLY_FILE))
    return out


def build_report(
    paths: Sequence[str | Path],
    out: str | Path,
    progress: bool = False,
    config: AnalysisConfig | None = None,
) -> Path:
    """Write the HTML report of the runs under ``paths`` to ``out`` and return its path, from
    current analysis results (with ``config``, default thresholds otherwise)."""
    if isinstance(paths, (str, Path)):
        raise ConfigError("paths must be a list of paths, e.g. build_report([path], out)")
    out = _check_out(out)
    from gradlog.analysis.current import current_results

    results, _ = current_results(paths, config, progress=progress)
    return write_report(results, out, progress)


__all__ = ["build_report", "write_report"]
