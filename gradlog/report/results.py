"""Analysis results for a report: the saved ``analysis.json`` of each run when it is current,
otherwise a fresh analysis (saved next to the run for the next report)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from gradlog.analysis import (
    AnalysisConfig,
    BatchResult,
    RunResult,
    analyze,
)
from gradlog.analysis.batch import batch_findings
from gradlog.analysis.result import RESULT_FILE
from gradlog.errors import CorruptRunError, RunNotFoundError
from gradlog.rundir import find_runs
from gradlog.schema import META_FILE


def discover(paths: Sequence[str | Path]) -> list[Path]:
    """Every run under ``paths`` (run directories or directories of runs), each once."""
    runs: list[Path] = []
    seen: set[Path] = set()
    for p in paths:
        for run in find_runs(Path(p)):
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(run)
    if not runs:
        raise RunNotFoundError(
            f"no runs under {', '.join(str(p) for p in paths)} "
            "(a run is a directory with meta.json)"
        )
    return runs


def _saved(run_dir: Path) -> RunResult | None:
    """The run's saved result if it is newer than every file of the run, else None."""
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    saved_at = path.stat().st_mtime
    newest = max(
        (f.stat().st_mtime for f in [run_dir / META_FILE, *run_dir.glob("*/rank=*/part-*")]),
        default=0.0,
    )
    if newest > saved_at:
        return None
    try:
        return RunResult.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, CorruptRunError):
        return None


def load_results(
    run_dirs: list[Path], progress: bool = False, config: AnalysisConfig | None = None
) -> tuple[BatchResult, list[Path]]:
    """Results for ``run_dirs`` in order (saved ones reused) and the runs analysed now."""
    cfg = config or AnalysisConfig()
    found: dict[Path, RunResult] = {}
    stale: list[Path] = []
    for d in run_dirs:
        res = _saved(d)
        if res is None:
            stale.append(d)
        else:
            found[d] = res
    if stale:
        fresh = analyze(stale, config=cfg, progress=progress, save=True)
        for d, res in zip(stale, fresh.runs, strict=True):
            found[d] = res
    runs = [found[d] for d in run_dirs]
    return BatchResult(runs, batch_findings(runs, cfg), []), stale
