"""The typed result of a detector: a :class:`Finding` with its kind and severity."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gradlog.errors import CorruptRunError


class Severity(str, Enum):
    """How much a finding matters; ordered info < warning < error."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self.value]

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


_SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2}


class Kind(str, Enum):
    """What a finding is about; the CLI's JSON relies on these values."""

    NONFINITE = "nonfinite"
    EXPLODING = "exploding"
    VANISHING = "vanishing"
    SPIKE = "spike"
    DEAD = "dead"
    FROZEN = "frozen"
    LR_TOO_HIGH = "lr_too_high"
    LR_TOO_LOW = "lr_too_low"
    PLATEAU = "plateau"
    DIVERGENCE = "divergence"
    OSCILLATION = "oscillation"
    PRECISION = "precision"
    CLIPPING = "clipping"
    WARMUP = "warmup"
    BATCH_SIZE = "batch_size"
    ADAM_EPS = "adam_eps"
    WEIGHT_DECAY = "weight_decay"
    SWEEP = "sweep"
    DATA = "data"


Evidence = dict[str, float | int | str]


def clean_evidence(evidence: dict[str, Any]) -> Evidence:
    """Evidence as JSON-safe scalars: numpy numbers become Python ones, non-finite floats text."""
    out: Evidence = {}
    for key, value in evidence.items():
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, int):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else str(value)
        elif hasattr(value, "item"):
            item = value.item()
            out[key] = clean_evidence({key: item})[key]
        else:
            out[key] = str(value)
    return out


@dataclass(frozen=True)
class Finding:
    """One thing a detector found in a run (or a batch): plain text and numbers, never markup."""

    run: str
    detector: str
    kind: Kind
    severity: Severity
    tensor: str | None
    step_start: int | None
    step_end: int | None
    evidence: Evidence = field(default_factory=dict)
    message: str = ""
    hint: str = ""
    tensors: tuple[str, ...] = ()
    """Every tensor a grouped finding stands for (``tensor`` is the worst); empty otherwise."""

    def to_json(self) -> dict[str, Any]:
        return {
            "tensors": list(self.tensors),
            "run": self.run,
            "detector": self.detector,
            "kind": self.kind.value,
            "severity": self.severity.value,
            "tensor": self.tensor,
            "step_start": self.step_start,
            "step_end": self.step_end,
            "evidence": dict(self.evidence),
            "message": self.message,
            "hint": self.hint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        try:
            return cls(
                run=str(data["run"]),
                detector=str(data["detector"]),
                kind=Kind(data["kind"]),
                severity=Severity(data["severity"]),
                tensor=None if data.get("tensor") is None else str(data["tensor"]),
                step_start=None if data.get("step_start") is None else int(data["step_start"]),
                step_end=None if data.get("step_end") is None else int(data["step_end"]),
                evidence=clean_evidence(dict(data.get("evidence") or {})),
                message=str(data.get("message", "")),
                hint=str(data.get("hint", "")),
                tensors=tuple(str(t) for t in data.get("tensors") or ()),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptRunError(f"not a gradlog finding: {exc}") from exc


def make(  # noqa: PLR0917 - every finding needs these six; the rest are keyword-only
    run: str,
    detector: str,
    kind: Kind,
    severity: Severity,
    message: str,
    hint: str,
    *,
    tensor: str | None = None,
    steps: tuple[int | None, int | None] = (None, None),
    extra: dict[str, Any] | None = None,
    **evidence: Any,
) -> Finding:
    """A Finding with its evidence cleaned (detectors call this)."""
    start, end = steps
    return Finding(
        run=run,
        detector=detector,
        kind=kind,
        severity=severity,
        tensor=tensor,
        step_start=None if start is None else int(start),
        step_end=None if end is None else int(end),
        evidence=clean_evidence({**(extra or {}), **evidence}),
        message=message,
        hint=hint,
    )


UNGROUPED = ("spikes", "nonfinite")
"""Detectors whose per-tensor findings are separate events (a spike at another step), not one
condition seen in several tensors."""


BROKEN_KINDS = (Kind.NONFINITE, Kind.EXPLODING, Kind.DIVERGENCE)
"""Kinds that, at error, say the run blew up: a too-high step, whatever else looks slow."""
SLOW_KINDS = (Kind.LR_TOO_LOW, Kind.PLATEAU)
"""Kinds whose hints say "raise the learning rate" (or that training converged)."""


def reconcile(findings: list[Finding]) -> list[Finding]:
    """Findings whose hints do not contradict each other: beside an error that says the run blew
    up (non-finite, exploding, diverged), no finding says to raise the learning rate or that
    training converged or stalled (each detector already skips the broken segment; this is the
    cross-check)."""
    broken = any(f.kind in BROKEN_KINDS and f.severity is Severity.ERROR for f in findings)
    if not broken:
        return findings
    return [f for f in findings if f.kind not in SLOW_KINDS]


def group_tensor_findings(findings: list[Finding]) -> list[Finding]:
    """Per-tensor findings of one detector, kind and severity become one finding that lists its
    tensors; the detector's first (its worst) is the headline. Order is otherwise kept. The run's
    findings are reconciled first (:func:`reconcile`): this is the last step of a run's analysis."""
    findings = reconcile(findings)
    groups: dict[tuple[str, Kind, Severity], list[Finding]] = {}
    for f in findings:
        if f.tensor is not None and f.detector not in UNGROUPED:
            groups.setdefault((f.detector, f.kind, f.severity), []).append(f)
    out: list[Finding] = []
    for f in findings:
        key = (f.detector, f.kind, f.severity)
        group = groups.get(key) if f.tensor is not None and f.detector not in UNGROUPED else None
        if group is None or len(group) == 1:
            out.append(f)
            continue
        if group[0] is not f:
            continue  # folded into the group's headline
        names = [g.tensor for g in group if g.tensor is not None]
        rest = names[1:]
        shown = ", ".join(rest[:8]) + (f" and {len(rest) - 8} more" if len(rest) > 8 else "")
        out.append(
            Finding(
                f.run,
                f.detector,
                f.kind,
                f.severity,
                f.tensor,
                min((g.step_start for g in group if g.step_start is not None), default=None),
                max((g.step_end for g in group if g.step_end is not None), default=None),
                {**f.evidence, "tensors_grouped": len(names)},
                f"{f.message} The same in {len(rest)} more tensor{'s' if len(rest) > 1 else ''}: "
                f"{shown}.",
                f.hint,
                tuple(names),
            )
        )
    return out
