"""The JSON documents the ``gradlog`` commands print (their shapes are in docs/CLI.md).

Every document carries ``gradlog_version`` and ``schema_version`` (the version of these shapes,
bumped on any incompatible change); numbers are always JSON numbers, ``null`` where a value is
not finite; findings are in the order the text output lists them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gradlog._version import __version__

if TYPE_CHECKING:
    from gradlog.analysis.findings import Finding
    from gradlog.analysis.result import BatchResult, RunResult
    from gradlog.rundir import Run

CLI_SCHEMA_VERSION = 1
"""Version of the JSON shapes documented in docs/CLI.md."""

_NONFINITE_TEXT = frozenset({"nan", "inf", "-inf"})


def finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def _header() -> dict[str, Any]:
    return {"gradlog_version": __version__, "schema_version": CLI_SCHEMA_VERSION}


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first; findings of equal severity keep the analysis's order."""
    return sorted(findings, key=lambda f: -f.severity.rank)


def finding_json(f: Finding) -> dict[str, Any]:
    """A finding; evidence that the analysis stored as text because it was not finite is null."""
    out = f.to_json()
    out["evidence"] = {
        k: None if isinstance(v, str) and v in _NONFINITE_TEXT else v
        for k, v in out["evidence"].items()
    }
    doc: dict[str, Any] = finite_or_null(out)
    return doc


def run_json(r: RunResult, broken: str | None) -> dict[str, Any]:
    """One run of ``gradlog analyze`` (without the chart data, which stays in analysis.json)."""
    doc: dict[str, Any] = finite_or_null(
        {
            "run_id": r.run_id,
            "name": r.name,
            "path": r.path,
            "status": r.status,
            "steps": r.steps,
            "partial": r.partial,
            "broken": broken,
            "problems": list(r.problems),
            "findings": [finding_json(f) for f in sorted_findings(r.findings)],
            "convergence": r.convergence.to_json() if r.convergence else None,
            "config": r.config,
            "summary": r.summary.to_json(),
            "provenance": r.provenance.to_json(),
        }
    )
    return doc


def analysis_json(
    result: BatchResult, broken: list[str | None], counts: dict[str, int], exit_code: int, why: str
) -> dict[str, Any]:
    """What ``gradlog analyze --format json`` prints."""
    runs = [run_json(r, b) for r, b in zip(result.runs, broken, strict=True)]
    per_run = [f for r in result.runs for f in sorted_findings(r.findings)]
    batch = sorted_findings(result.batch_findings)
    return {
        **_header(),
        "runs": runs,
        "findings": [finding_json(f) for f in [*per_run, *batch]],
        "batch_findings": [finding_json(f) for f in batch],
        "ranking": [
            finite_or_null(
                {
                    "run_id": e.run_id,
                    "outcome": e.outcome,
                    "projected_loss": e.projected_loss,
                    "projected_low": e.projected_low,
                    "projected_high": e.projected_high,
                }
            )
            for e in result.ranking
        ],
        "summary": {
            "runs": len(result.runs),
            "broken": sum(b is not None for b in broken),
            "findings": dict(counts),
            "exit_code": exit_code,
            "exit_reason": why,
        },
    }


def ls_json(runs: list[Run]) -> dict[str, Any]:
    """What ``gradlog ls --format json`` prints."""
    return {**_header(), "runs": [finite_or_null(r.summary()) for r in runs]}


def show_json(run: Run) -> dict[str, Any]:
    """What ``gradlog show --format json`` prints."""
    doc: dict[str, Any] = finite_or_null(run.summary(detail=True))
    return {**_header(), **doc}
