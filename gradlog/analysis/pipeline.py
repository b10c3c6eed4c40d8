"""The analysis pipeline: open runs, build frames, run every registered detector, fit trends,
compute the chart data, then the batch stage."""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gradlog.analysis import detectors as _detectors  # noqa: F401  (registers every detector)
from gradlog.analysis.batch import BATCH_DETECTORS, batch_result
from gradlog.analysis.chartdata import run_charts
from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.convergence import fit_convergence
from gradlog.analysis.executors import Executor, ThreadExecutor
from gradlog.analysis.findings import Finding, group_tensor_findings
from gradlog.analysis.frames import BUCKET_ROWS, DETECTOR_COLUMNS, EXACT_ROWS, build_frames
from gradlog.analysis.loading import RunData, from_run
from gradlog.analysis.phases import phases
from gradlog.analysis.registry import DETECTORS
from gradlog.analysis.result import BatchResult, Provenance, RunResult, RunSummary
from gradlog.analysis.summary import run_summary
from gradlog.analysis.trend import Convergence
from gradlog.errors import ConfigError, GradlogError
from gradlog.rundir import Run, discover, open_run


def _discover(paths: Sequence[str | Path]) -> tuple[list[Path], list[RunResult]]:
    runs, missing = discover(paths)
    return runs, [RunResult(p.name, "", str(p), "missing", 0, True, [why]) for p, why in missing]


CONCURRENT_ROWS = 8_000_000
"""Runs are analysed two at a time while their ``tensors`` rows together stay below this (about
0.8 GB of frames); a larger run is analysed alone, so memory follows the largest run."""


class _RowBudget:
    """Admits runs while the rows being analysed stay within ``limit`` (a larger run: alone)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self.ready = threading.Condition()

    @contextmanager
    def hold(self, rows: int) -> Iterator[None]:
        with self.ready:
            self.ready.wait_for(lambda: self.used == 0 or self.used + rows <= self.limit)
            self.used += rows
        try:
            yield
        finally:
            with self.ready:
                self.used -= rows
                self.ready.notify_all()


def provenance(run: Run, config: AnalysisConfig) -> Provenance:
    """What an analysis of ``run`` with ``config`` would record as its provenance now."""
    return Provenance(config=config.to_json(), fingerprint=run.fingerprint())


def analyze_run(path: Path, config: AnalysisConfig) -> RunResult:
    """Analyse one run; every failure is named in ``problems`` and marks the result partial."""
    return _analyze_run(path, config, None)


def _analyze_run(path: Path, config: AnalysisConfig, budget: _RowBudget | None = None) -> RunResult:
    try:
        opened = open_run(path)
    except GradlogError as exc:
        return RunResult(path.name, "", str(path), "unreadable", 0, True, [str(exc)])
    prov = provenance(opened, config)
    if not opened.readable:
        problems = list(opened.problems)
        return RunResult(path.name, "", str(path), "unreadable", 0, True, problems, provenance=prov)
    run = from_run(opened)
    rows = min(run.rows.get("tensors", 0), EXACT_ROWS + BUCKET_ROWS)
    if budget is None:
        return _analyze_loaded(run, config, prov)
    with budget.hold(rows):
        return _analyze_loaded(run, config, prov)


def _analyze_loaded(run: RunData, config: AnalysisConfig, prov: Provenance) -> RunResult:
    path = run.path
    frames = build_frames(run, DETECTOR_COLUMNS)
    steps = int(frames.steps["step"].n_unique()) if frames.steps.height else 0
    problems = run.problems
    if steps <= 1:
        problems.append(
            f"run has {steps} recorded step{'s' if steps != 1 else ''}; too few to analyse trends"
        )
    if frames.grad.height and frames.grad["norm"].is_nan().all():
        problems.append("every gradient statistic is NaN")
    findings: list[Finding] = []
    for name, fn in DETECTORS.items():
        if name in config.disabled:
            continue
        try:
            findings += fn(frames, config)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a detector bug or odd data must not abort the batch
            problems.append(f"detector {name} failed: {type(exc).__name__}: {exc!s:.200}")
    convergence: Convergence | None = None
    if "convergence" not in config.disabled:
        try:
            step, loss = frames.loss(config.loss_name)
            convergence = fit_convergence(step, loss, config, phases(frames, config))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            problems.append(f"convergence fit failed: {type(exc).__name__}: {exc!s:.200}")
    summary = RunSummary()
    try:
        summary = run_summary(frames)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        problems.append(f"run summary failed: {type(exc).__name__}: {exc!s:.200}")
    charts = None
    try:
        charts = run_charts(run, frames, convergence, config)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        problems.append(f"chart data failed: {type(exc).__name__}: {exc!s:.200}")
    partial = bool(problems) or run.status == "running"
    if frames.resolution > 1:
        problems.append(
            f"long run: the per-tensor detectors read buckets of {frames.resolution} steps "
            "(the largest norm of each bucket; see docs/ANALYSIS.md)"
        )
    return RunResult(
        run.run_id,
        run.name,
        str(path),
        run.status,
        steps,
        partial,
        problems,
        group_tensor_findings(findings),
        convergence,
        dict(run.meta.get("config") or {}),
        summary,
        charts,
        prov,
        dict(run.meta),
    )


def _failed(path: Path, exc: BaseException) -> RunResult:
    """The result of a run whose analysis task failed outright (a crashed or lost worker)."""
    why = f"analysis task failed: {type(exc).__name__}: {exc!s:.300}"
    return RunResult(path.name, "", str(path), "failed", 0, True, [why])


def result_dir(run_dir: Path, out: str | Path | None = None) -> Path:
    """Where the result of ``run_dir`` is saved: the run itself, or (for read-only data)
    ``out/<run directory name>-<8 hex digits of its absolute path>`` (sweeps often reuse names)."""
    if out is None:
        return run_dir
    digest = hashlib.sha1(str(run_dir.resolve()).encode(), usedforsecurity=False).hexdigest()
    return Path(out) / f"{run_dir.name}-{digest[:8]}"


def analyze(
    paths: Sequence[str | Path],
    config: AnalysisConfig | None = None,
    progress: bool = False,
    save: bool = False,
    *,
    jobs: int | None = None,
    executor: Executor | None = None,
    out: str | Path | None = None,
) -> BatchResult:
    """Analyse every run under ``paths`` (run directories or directories of runs).

    Each run is one task on ``executor`` (:mod:`gradlog.analysis.executors`: a process pool, a
    Ray cluster, ...); by default ``jobs`` runs (2 on a multi-core machine) are analysed at once
    on threads of this process, within CONCURRENT_ROWS. The batch stage runs here. With
    ``save=True`` each run's result is written to ``<run_dir>/analysis.json``, or under ``out``.
    """
    if isinstance(paths, (str, Path)):
        raise ConfigError("paths must be a list of paths, e.g. analyze([path])")
    cfg = config or AnalysisConfig()
    known = [*DETECTORS, *BATCH_DETECTORS, "convergence"]
    unknown = [d for d in cfg.disabled if d not in known]
    if unknown:
        raise ConfigError(f"unknown detectors in disabled: {unknown}; known: {sorted(known)}")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    run_dirs, missing = _discover(paths)
    results: list[RunResult] = list(missing)
    own = executor is None
    if executor is None:
        executor = ThreadExecutor(max(1, min(jobs or min(2, os.cpu_count() or 1), len(run_dirs))))
    task: Callable[[Path], RunResult]
    if isinstance(executor, ThreadExecutor):  # in-process: share one row budget
        task = functools.partial(_analyze_run, config=cfg, budget=_RowBudget(CONCURRENT_ROWS))
    else:
        task = functools.partial(analyze_run, config=cfg)
    try:
        done = _collect(run_dirs, executor.map(task, run_dirs), progress, save, out)
    finally:
        if own:
            executor.close()
    return batch_result(results + done, cfg)


def _collect(
    run_dirs: list[Path],
    outcomes: Iterator[tuple[int, Any]],
    progress: bool,
    save: bool,
    out: str | Path | None,
) -> list[RunResult]:
    """The runs' results in the order of ``run_dirs`` (each saved as it arrives when asked),
    advancing the progress bar (runs done / total)."""
    got: dict[int, RunResult] = {}
    with _bar(len(run_dirs), progress) as advance:
        for i, outcome in outcomes:
            if i in got:  # an engine that reports a run twice must not count it twice
                continue
            path = run_dirs[i]
            res = outcome if isinstance(outcome, RunResult) else _failed(path, outcome)
            if save:
                try:
                    res.save(result_dir(path, out))
                except OSError as exc:
                    res.problems.append(f"cannot save analysis.json: {exc}")
            got[i] = res
            advance()
    missing = [run_dirs[i] for i in range(len(run_dirs)) if i not in got]
    for path in missing:  # an engine that lost a run: named, never silently dropped
        got[run_dirs.index(path)] = _failed(path, RuntimeError("no result came back"))
    return [got[i] for i in range(len(run_dirs))]


@contextmanager
def _bar(total: int, show: bool) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr (runs done / total) while the block runs; a no-op if not shown."""
    if not show or total < 2:
        yield lambda: None
        return
    import click

    with click.progressbar(length=total, label="analysing", file=sys.stderr, show_pos=True) as bar:
        yield lambda: bar.update(1)
