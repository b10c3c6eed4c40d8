"""Current results for runs: a saved ``analysis.json`` is reused only when it is what an analysis
would produce now (same gradlog version, same effective config, same parts read); otherwise the
run is analysed again and its result saved. A saved file that is not exactly a valid result
(corrupt, truncated, of another shape) is treated as absent: analysed again, never an error. The
report stage reads results only through here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradlog.analysis.batch import batch_result
from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.executors import Executor
from gradlog.analysis.pipeline import analyze, provenance, result_dir
from gradlog.analysis.result import BatchResult, RunResult, read_result
from gradlog.errors import GradlogError, RunNotFoundError
from gradlog.rundir import discover, open_run


def stale_reason(run_dir: Path, saved: RunResult | None, config: AnalysisConfig) -> str | None:
    """Why the saved result of ``run_dir`` cannot be reused (None: it is current)."""
    if saved is None:
        return "no saved analysis"
    now = provenance(open_run(run_dir), config)
    old = saved.provenance
    if old.result_version != now.result_version or old.version != now.version:
        return f"saved by gradlog {old.version or '?'}, this is {now.version}"
    if old.config != now.config:
        changed = sorted(
            k for k in set(old.config) | set(now.config) if old.config.get(k) != now.config.get(k)
        )
        return f"analysis settings differ ({', '.join(changed[:5])})"
    if old.fingerprint != now.fingerprint:
        return "the run's files changed since"
    return None


def current_results(
    paths: Sequence[str | Path],
    config: AnalysisConfig | None = None,
    progress: bool = False,
    *,
    executor: Executor | None = None,
    out: str | Path | None = None,
) -> tuple[BatchResult, list[Path]]:
    """Results for every run under ``paths`` (saved ones reused when current) and the runs
    analysed now (on ``executor``; saved next to the runs or under ``out``). Raises
    RunNotFoundError when ``paths`` hold no run at all."""
    cfg = config or AnalysisConfig()
    run_dirs, missing = discover(paths)
    if not run_dirs:
        why = "; ".join(m for _, m in missing) or "no paths given"
        raise RunNotFoundError(f"no runs under {', '.join(map(str, paths))} ({why})")
    found: dict[Path, RunResult] = {}
    stale: list[Path] = []
    for d in run_dirs:
        saved, why = read_result(result_dir(d, out))
        try:
            reason = why if saved is None else stale_reason(d, saved, cfg)
        except GradlogError:
            reason = "unreadable"
        if reason is None and saved is not None:
            found[d] = saved
        else:
            stale.append(d)
    if stale:
        fresh = analyze(stale, config=cfg, progress=progress, save=True, executor=executor, out=out)
        for d, res in zip(stale, fresh.runs, strict=True):
            found[d] = res
    runs = [found[d] for d in run_dirs]
    return batch_result(runs, cfg), stale
