"""Results as data: RunResult and BatchResult, typed, with their provenance and a JSON round trip.

A run's result holds everything later stages need: findings, the convergence summary, the few
numbers batch comparisons use, and the chart data a report draws (:mod:`gradlog.analysis.charts`).
Its provenance (gradlog version, the full effective config, a fingerprint of the parts read)
tells whether a saved result is still what an analysis would produce now.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradlog._version import __version__
from gradlog.analysis.charts import RunCharts, SweepChart
from gradlog.analysis.findings import Finding, Severity
from gradlog.analysis.trend import Convergence
from gradlog.atomic import write_atomic
from gradlog.errors import CorruptRunError

RESULT_FILE = "analysis.json"
RESULT_VERSION = 3
"""Bumped when the shape of a saved result changes (older files are recomputed, not read)."""

MAX_RESULT_BYTES = 64 << 20
"""A saved result larger than this is not read (the analysis is run again): chart data is
bounded by display buckets, so a real result is a few MiB even for a million-step run."""


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _differs(raw: Any, canon: Any, where: str) -> str | None:
    """Where ``raw`` (as read) is not ``canon`` (the result it parsed to, written again), or None.
    Numbers compare by value (1 == 1.0) but a bool is not a number; keys, lengths, types and
    strings must match exactly."""
    if isinstance(canon, bool) or isinstance(raw, bool) or canon is None or raw is None:
        same = type(raw) is type(canon) and raw == canon
    elif isinstance(canon, (int, float)):
        same = isinstance(raw, (int, float)) and math.isfinite(raw) and raw == canon
    elif isinstance(canon, str):
        same = isinstance(raw, str) and raw == canon
    elif isinstance(canon, (list, tuple)):
        if not isinstance(raw, list) or len(raw) != len(canon):
            return f"{where or 'the result'}: expected a list of {len(canon)}"
        for i, (a, b) in enumerate(zip(raw, canon, strict=True)):
            if (bad := _differs(a, b, f"{where}[{i}]")) is not None:
                return bad
        return None
    elif isinstance(canon, dict):
        if not isinstance(raw, dict) or raw.keys() != canon.keys():
            extra = sorted(set(raw) - set(canon)) if isinstance(raw, dict) else []
            missing = sorted(set(canon) - set(raw)) if isinstance(raw, dict) else []
            detail = f" (unknown {extra[:3]}, missing {missing[:3]})" if extra or missing else ""
            return f"{where or 'the result'}: not the expected object{detail}"
        for k, b in canon.items():
            if (bad := _differs(raw[k], b, f"{where}.{k}" if where else k)) is not None:
                return bad
        return None
    else:
        same = False
    return None if same else f"{where or 'the result'} has the wrong type or value"


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _check_shapes(c: RunCharts) -> None:
    """The chart data a report draws is finite (gaps are None) and the arrays it indexes have
    matching sizes (CorruptRunError otherwise)."""
    if not _finite(c.to_json()):
        raise CorruptRunError("chart data holds NaN or infinity (a gap is null)")
    if c.ratios is not None and not 0 < c.ratios.band[0] <= c.ratios.target <= c.ratios.band[1]:
        raise CorruptRunError("update ratio chart: the band must be positive around the target")
    lines = [c.loss, c.grad_norm, c.preclip, c.loss_scale, *c.lrs.values(), *c.others.values()]
    if c.fit is not None:
        lines += [c.fit.fit, c.fit.projection]
    if c.ratios is not None:
        lines += c.ratios.lines.values()
    for line in lines:
        if line is not None and len(line.x) != len(line.y):
            raise CorruptRunError("a chart line has x and y of different lengths")
    if c.flow is not None:
        f = c.flow
        cols = len(f.bucket_starts)
        if len(f.norms) != len(f.tensors) or any(len(r) != cols for r in f.norms):
            raise CorruptRunError("gradient flow: norms are not tensors x buckets")
        if any(not (0 <= r < len(f.tensors) and 0 <= b < cols) for r, b in f.nonfinite):
            raise CorruptRunError("gradient flow: a NaN/Inf cell is outside the grid")
    if c.hist is not None:
        h = c.hist
        k = len(h.exponents)
        if k and h.exponents != list(range(h.exponents[0], h.exponents[0] + k)):
            raise CorruptRunError("exponent histogram: exponents are not consecutive")
        if len(h.counts) != len(h.steps) or len(h.totals) != len(h.steps):
            raise CorruptRunError("exponent histogram: counts are not columns x exponents")
        if not len(h.tensor_counts) == len(h.tensor_totals) == len(h.tensors):
            raise CorruptRunError("exponent histogram: per-tensor counts do not match tensors")
        if any(len(r) != k for r in [*h.counts, *h.tensor_counts]):
            raise CorruptRunError("exponent histogram: a column has the wrong number of counts")


MAX_DEPTH = 32
"""Values of a run's config and meta nested deeper than this are kept as a note: every later
stage (saving, JSON output, the report) walks them recursively."""


def _bounded(value: Any, depth: int = 0) -> Any:
    """``value`` with what lies below :data:`MAX_DEPTH` levels replaced by a short note."""
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_DEPTH:
        return f"(nested deeper than {MAX_DEPTH} levels; not kept)"
    if isinstance(value, dict):
        return {k: _bounded(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bounded(v, depth + 1) for v in value]
    return value


def _json_safe(value: Any) -> Any:
    """Non-finite floats become strings so that the result is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _unsafe(value: Any) -> Any:
    """The inverse of :func:`_json_safe` for the fields that hold numbers."""
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsafe(v) for v in value]
    return value


@dataclass(frozen=True)
class Provenance:
    """What made a result: the gradlog version, the full effective analysis config, and the
    fingerprint of the run's parts (:meth:`gradlog.rundir.Run.fingerprint`)."""

    version: str = __version__
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    result_version: int = RESULT_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "config": self.config,
            "fingerprint": self.fingerprint,
            "result_version": self.result_version,
        }

    @classmethod
    def from_json(cls, d: Any) -> Provenance:
        if not isinstance(d, dict):
            return cls(version="", result_version=0)
        return cls(
            str(d.get("version", "")),
            dict(d.get("config") or {}),
            str(d.get("fingerprint", "")),
            int(d.get("result_version", 0)),
        )


@dataclass(frozen=True)
class RunSummary:
    """The numbers comparisons across a batch need, where known."""

    lr: float | None = None
    """Peak learning rate (the logged ``lr/0``, else the largest param group's)."""
    update_ratio_median: float | None = None
    update_ratio_peak: float | None = None
    update_ratio_peak_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "update_ratio_median": self.update_ratio_median,
            "update_ratio_peak": self.update_ratio_peak,
            "update_ratio_peak_step": self.update_ratio_peak_step,
        }

    @classmethod
    def from_json(cls, d: Any) -> RunSummary:
        d = d if isinstance(d, dict) else {}

        def f(k: str) -> float | None:
            v = d.get(k)
            return None if v is None else float(v)

        step = d.get("update_ratio_peak_step")
        return cls(
            f("lr"),
            f("update_ratio_median"),
            f("update_ratio_peak"),
            None if step is None else int(step),
        )


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
    convergence: Convergence | None = None
    config: dict[str, Any] = field(default_factory=dict)
    """The run's hyperparameters (meta.json ``config``)."""
    summary: RunSummary = field(default_factory=RunSummary)
    charts: RunCharts | None = None
    provenance: Provenance = field(default_factory=Provenance)
    meta: dict[str, Any] = field(default_factory=dict)
    """The run's meta.json as read (validated), for the report's header and config tables."""

    def __post_init__(self) -> None:
        self.config = _bounded(self.config)
        self.meta = _bounded(self.meta)

    @property
    def hints(self) -> list[Finding]:
        return [f for f in self.findings if f.detector.startswith("hint.")]

    @property
    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)

    @property
    def final_loss(self) -> float | None:
        return self.convergence.final_loss if self.convergence else None

    @property
    def projected_loss(self) -> float | None:
        return self.convergence.projected_loss if self.convergence else None

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
                "convergence": self.convergence.to_json() if self.convergence else None,
                "config": self.config,
                "summary": self.summary.to_json(),
                "provenance": self.provenance.to_json(),
                "meta": self.meta,
                "charts": self.charts.to_json() if self.charts else None,
            }
        )
        return out

    @classmethod
    def from_json(cls, d: Any) -> RunResult:
        """The result ``d`` holds, exactly: every field of the declared type, no key missing or
        unknown, no NaN where a number is due, the chart arrays of consistent shapes; anything
        else raises CorruptRunError naming the first field that differs."""
        if not isinstance(d, dict):
            raise CorruptRunError("not a gradlog run result: not a JSON object")
        try:
            conv, charts = d.get("convergence"), d.get("charts")
            result = cls(
                run_id=str(d["run_id"]),
                name=str(d["name"]),
                path=str(d["path"]),
                status=str(d["status"]),
                steps=int(d["steps"]),
                partial=bool(d["partial"]),
                problems=[str(p) for p in d["problems"]],
                findings=[Finding.from_json(f) for f in d["findings"]],
                convergence=Convergence.from_json(_unsafe(conv)) if conv else None,
                config=dict(d["config"]),
                summary=RunSummary.from_json(d["summary"]),
                charts=RunCharts.from_json(charts) if charts else None,
                provenance=Provenance.from_json(d["provenance"]),
                meta=dict(d["meta"]),
            )
            if result.charts is not None:
                _check_shapes(result.charts)
            where = _differs(d, result.to_json(), "")
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            ArithmeticError,
            IndexError,
            RecursionError,
            CorruptRunError,
        ) as exc:
            raise CorruptRunError(f"not a gradlog run result: {_why(exc)}") from exc
        if where is not None:
            raise CorruptRunError(f"not a gradlog run result: {where}")
        return result

    def save(self, run_dir: Path) -> None:
        """Write ``analysis.json`` next to the run (atomically)."""
        text = json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False)
        write_atomic(run_dir / RESULT_FILE, text)


def read_result(run_dir: Path) -> tuple[RunResult | None, str]:
    """The run's saved result, or None and why it cannot be used: there is none, it cannot be
    read (not UTF-8, not JSON, nested too deep, too large) or it is not exactly a valid result
    (:meth:`RunResult.from_json`)."""
    path = run_dir / RESULT_FILE
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            return None, f"saved analysis is over {MAX_RESULT_BYTES >> 20} MiB"
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
        return RunResult.from_json(data), ""
    except FileNotFoundError:
        return None, "no saved analysis"
    except (OSError, ValueError, RecursionError, MemoryError, CorruptRunError) as exc:
        return None, f"saved analysis unusable: {_why(exc)}"


def load_result(run_dir: Path) -> RunResult | None:
    """The run's saved result, or None when there is none or it is not exactly a valid one."""
    return read_result(run_dir)[0]


@dataclass(frozen=True)
class BatchRow:
    """One run as the batch stage compares it."""

    run_id: str
    name: str
    config: dict[str, Any]
    outcome: float | None
    """Lower is better: projected (else final) loss; inf when the run diverged or went NaN."""
    failed: bool
    initial_loss: float | None
    final_loss: float | None
    nonnegative: bool
    lr: float | None = None
    update_ratio_peak: float | None = None
    update_ratio_median: float | None = None

    @property
    def label(self) -> str:
        return self.name or self.run_id


@dataclass(frozen=True)
class RankEntry:
    """A run's place in the batch ranking (lower outcome is better)."""

    run_id: str
    outcome: float
    projected_loss: float | None
    projected_low: float | None
    projected_high: float | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_safe(self.__dict__)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RankEntry:
        d = _unsafe(d)

        def f(k: str) -> float | None:
            return None if d.get(k) is None else float(d[k])

        return cls(
            str(d["run_id"]),
            float(d["outcome"]),
            f("projected_loss"),
            f("projected_low"),
            f("projected_high"),
        )


@dataclass
class BatchResult:
    """The analysis of many runs: per-run results, batch findings, ranking and sweep charts."""

    runs: list[RunResult] = field(default_factory=list)
    batch_findings: list[Finding] = field(default_factory=list)
    ranking: list[RankEntry] = field(default_factory=list)
    sweeps: list[SweepChart] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.runs for f in r.findings] + list(self.batch_findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [r.to_json() for r in self.runs],
            "findings": [f.to_json() for f in self.findings],
            "batch_findings": [f.to_json() for f in self.batch_findings],
            "ranking": [r.to_json() for r in self.ranking],
            "sweeps": _json_safe([s.to_json() for s in self.sweeps]),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BatchResult:
        if not isinstance(d, dict) or not isinstance(d.get("runs"), list):
            raise CorruptRunError("not a gradlog analysis result (no 'runs' list)")
        try:
            return cls(
                runs=[RunResult.from_json(r) for r in d["runs"]],
                batch_findings=[Finding.from_json(f) for f in d.get("batch_findings", [])],
                ranking=[RankEntry.from_json(r) for r in d.get("ranking", [])],
                sweeps=[SweepChart.from_json(_unsafe(s)) for s in d.get("sweeps", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptRunError(f"not a gradlog analysis result: {exc}") from exc
