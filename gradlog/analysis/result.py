"""Results as data: RunResult and BatchResult, with a JSON round-trip."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradlog.analysis.findings import Finding, Severity
from gradlog.errors import CorruptRunError

RESULT_FILE = "analysis.json"


def _json_safe(value: Any) -> Any:
    """Non-finite floats become strings so that the result is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


@dataclass
class RunResult:
    """The analysis of one run. Hints are findings whose detector starts with ``hint.``."""

    run_id: str
    name: str
    path: str
    status: str
    steps: int
    partial: bool
    problems: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    convergence: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    """Numbers the batch comparisons need: ``lr`` (peak), ``update_ratio_median``,
    ``update_ratio_peak`` and ``update_ratio_peak_step``, where known."""

    @property
    def hints(self) -> list[Finding]:
        return [f for f in self.findings if f.detector.startswith("hint.")]

    @property
    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_safe(
            {
                "run_id": self.run_id,
                "name": self.name,
                "path": self.path,
                "status": self.status,
                "steps": self.steps,
                "partial": self.partial,
                "problems": list(self.problems),
                "findings": [f.to_json() for f in self.findings],
                "convergence": self.convergence,
                "config": self.config,
                "summary": self.summary,
            }
        )
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunResult:
        try:
            return cls(
                run_id=str(d["run_id"]),
                name=str(d.get("name", "")),
                path=str(d.get("path", "")),
                status=str(d.get("status", "")),
                steps=int(d.get("steps", 0)),
                partial=bool(d.get("partial", False)),
                problems=[str(p) for p in d.get("problems", [])],
                findings=[Finding.from_json(f) for f in d.get("findings", [])],
                convergence=d.get("convergence"),
                config=dict(d.get("config") or {}),
                summary=dict(d.get("summary") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRunError(f"not a gradlog run result: {exc}") from exc

    def save(self, run_dir: Path) -> None:
        """Write ``analysis.json`` next to the run (atomically)."""
        tmp = run_dir / f".{RESULT_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False), encoding="utf-8")
        tmp.replace(run_dir / RESULT_FILE)


@dataclass
class BatchResult:
    """The analysis of many runs: per-run results, all findings, ranking and sweep findings."""

    runs: list[RunResult] = field(default_factory=list)
    batch_findings: list[Finding] = field(default_factory=list)
    ranking: list[dict[str, Any]] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.runs for f in r.findings] + list(self.batch_findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [r.to_json() for r in self.runs],
            "findings": [f.to_json() for f in self.findings],
            "batch_findings": [f.to_json() for f in self.batch_findings],
            "ranking": _json_safe(self.ranking),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchResult:
        if not isinstance(d, dict) or not isinstance(d.get("runs"), list):
            raise CorruptRunError("not a gradlog analysis result (no 'runs' list)")
        return cls(
            runs=[RunResult.from_json(r) for r in d["runs"]],
            batch_findings=[Finding.from_json(f) for f in d.get("batch_findings", [])],
            ranking=list(d.get("ranking", [])),
        )
