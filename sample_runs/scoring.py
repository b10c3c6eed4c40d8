"""Score findings against the scenarios' EXPECT declarations (pure functions, no analysis import).

A finding is anything with ``kind``, ``severity``, ``tensor`` and ``step_start`` attributes
(gradlog's ``Finding``, or a ``SimpleNamespace`` in tests); ``kind`` and ``severity`` may be str
enums or plain strings. The EXPECT format is documented in :mod:`sample_runs.scenarios`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sample_runs.scenarios import DEFAULT_STEP_TOLERANCE, SEVERITIES

WARNING_RANK = SEVERITIES.index("warning")


def _text(value: Any) -> str:
    """The plain string of a str enum or a str."""
    return str(getattr(value, "value", value))


def severity_rank(finding: Any) -> int:
    """0 for info, 1 for warning, 2 for error."""
    return SEVERITIES.index(_text(finding.severity))


def is_alarm(finding: Any) -> bool:
    """True for findings at severity warning or error."""
    return severity_rank(finding) >= WARNING_RANK


def matches(item: Mapping[str, Any], finding: Any) -> bool:
    """Whether ``finding`` meets the ``must`` item ``item`` (see the EXPECT format)."""
    kind = str(item["kind"])
    if _text(finding.kind) != kind:
        return False
    tensor = item.get("tensor")
    if tensor is not None:
        allowed = [tensor] if isinstance(tensor, str) else list(tensor)
        covered = tuple(getattr(finding, "tensors", ()) or ()) or (finding.tensor,)
        if not any(t in allowed for t in covered):  # a grouped finding names all its tensors
            return False
    start = item.get("step_start")
    if start is not None:
        default = 0 if kind == "nonfinite" else DEFAULT_STEP_TOLERANCE
        tolerance = int(item.get("step_tolerance", default))
        if finding.step_start is None or abs(int(finding.step_start) - int(start)) > tolerance:
            return False
    least = item.get("severity_at_least")
    return least is None or severity_rank(finding) >= SEVERITIES.index(str(least))


def describe_item(item: Mapping[str, Any]) -> str:
    """A one-line description of a ``must`` item, e.g. ``nonfinite tensor=fc2.weight step=60``."""
    parts = [str(item["kind"])]
    if item.get("tensor") is not None:
        tensor = item["tensor"]
        parts.append(f"tensor={tensor if isinstance(tensor, str) else '|'.join(tensor)}")
    if item.get("step_start") is not None:
        parts.append(f"step={item['step_start']}")
    if item.get("severity_at_least") is not None:
        parts.append(f">={item['severity_at_least']}")
    return " ".join(parts)


def describe_finding(finding: Any) -> str:
    """A one-line description of a finding for failure messages."""
    return (
        f"{_text(finding.kind)}/{_text(finding.severity)} tensor={finding.tensor} "
        f"steps={finding.step_start}..{getattr(finding, 'step_end', None)}"
    )


@dataclass
class ExpectationReport:
    """What one scenario's findings met and violated."""

    matched: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    violations: list[Any] = field(default_factory=list)
    """Findings at warning or error whose kind is in ``must_not``."""

    @property
    def ok(self) -> bool:
        """True when every ``must`` item matched and no ``must_not`` kind was raised."""
        return not self.missed and not self.violations

    def problems(self) -> list[str]:
        """Readable lines, one per missed item or violating finding."""
        lines = [f"missed: {describe_item(i)}" for i in self.missed]
        lines += [f"must_not violated: {describe_finding(f)}" for f in self.violations]
        return lines


def match_expectations(expect: Mapping[str, Any], findings: Sequence[Any]) -> ExpectationReport:
    """Check ``findings`` against one scenario's EXPECT."""
    report = ExpectationReport()
    for item in expect.get("must", []):
        if any(matches(item, f) for f in findings):
            report.matched.append(dict(item))
        else:
            report.missed.append(dict(item))
    forbidden = set(expect.get("must_not", []))
    report.violations = [f for f in findings if _text(f.kind) in forbidden and is_alarm(f)]
    return report


@dataclass
class KindScore:
    """Detection quality of one finding kind over all scenarios."""

    kind: str
    expected: int = 0
    """``must`` items of this kind."""
    recalled: int = 0
    """``must`` items of this kind that a finding met."""
    true_positives: int = 0
    """Alarms (warning+) of this kind in scenarios that expect the kind."""
    false_positives: int = 0
    """Alarms of this kind in scenarios whose ``must_not`` lists it."""
    unjudged: int = 0
    """Alarms of this kind in scenarios that neither expect nor forbid it."""

    @property
    def recall(self) -> float | None:
        return self.recalled / self.expected if self.expected else None

    @property
    def precision(self) -> float | None:
        judged = self.true_positives + self.false_positives
        return self.true_positives / judged if judged else None


@dataclass
class Score:
    """Per-kind scores, per-scenario reports and the false alarms on healthy runs."""

    kinds: dict[str, KindScore]
    reports: dict[str, ExpectationReport]
    healthy_false_positives: dict[str, list[Any]]
    """Per healthy scenario, its findings at warning or error (every one is a false positive)."""

    @property
    def expectations_met(self) -> int:
        return sum(len(r.matched) for r in self.reports.values())

    @property
    def expectations_total(self) -> int:
        return sum(len(r.matched) + len(r.missed) for r in self.reports.values())

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.reports.values())


def score(
    expects: Mapping[str, Mapping[str, Any]],
    findings: Mapping[str, Sequence[Any]],
    healthy: Iterable[str] = (),
) -> Score:
    """Score each scenario's ``findings`` against its EXPECT in ``expects``.

    A finding of kind K at warning or error in a scenario is a true positive when the scenario
    has a ``must`` item of kind K, a false positive when K is in its ``must_not``, and unjudged
    otherwise. Recall per kind is matched ``must`` items over ``must`` items. Every alarm on a
    scenario named in ``healthy`` is also listed as a healthy-run false positive.
    """
    kinds: dict[str, KindScore] = {}

    def kind_score(kind: str) -> KindScore:
        return kinds.setdefault(kind, KindScore(kind))

    reports: dict[str, ExpectationReport] = {}
    for name, expect in expects.items():
        found = list(findings.get(name, []))
        report = match_expectations(expect, found)
        reports[name] = report
        for item in expect.get("must", []):
            ks = kind_score(str(item["kind"]))
            ks.expected += 1
            ks.recalled += item in report.matched
        expected_kinds = {str(i["kind"]) for i in expect.get("must", [])}
        forbidden = set(expect.get("must_not", []))
        for kind in forbidden:
            kind_score(kind)
        for f in found:
            if not is_alarm(f):
                continue
            ks = kind_score(_text(f.kind))
            if ks.kind in expected_kinds:
                ks.true_positives += 1
            elif ks.kind in forbidden:
                ks.false_positives += 1
            else:
                ks.unjudged += 1
    healthy_fp = {h: [f for f in findings.get(h, []) if is_alarm(f)] for h in healthy}
    return Score(dict(sorted(kinds.items())), reports, healthy_fp)


@dataclass
class Localisation:
    """Of the ``must`` items that name a tensor or a step: how many were detected by kind and
    how many were also placed right (tensor and step within tolerance)."""

    localisable: int = 0
    detected: int = 0
    localised: int = 0
    misses: list[str] = field(default_factory=list)


def localisation(
    expects: Mapping[str, Mapping[str, Any]], findings: Mapping[str, Sequence[Any]]
) -> Localisation:
    """Localisation accuracy over every ``must`` item with a ``tensor`` or ``step_start``."""
    out = Localisation()
    for name, expect in expects.items():
        found = list(findings.get(name, []))
        for item in expect.get("must", []):
            if item.get("tensor") is None and item.get("step_start") is None:
                continue
            out.localisable += 1
            kind_only = {"kind": item["kind"]}
            if any(matches(kind_only, f) for f in found):
                out.detected += 1
            if any(matches(item, f) for f in found):
                out.localised += 1
            else:
                out.misses.append(f"{name}: {describe_item(item)}")
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: Score) -> str:
    """The scores as Markdown tables (per kind, then per scenario)."""
    lines = [
        "| kind | expected | recalled | recall | TP alarms | FP alarms | precision | unjudged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ks in result.kinds.values():
        lines.append(
            f"| {ks.kind} | {ks.expected} | {ks.recalled} | {_fmt(ks.recall)} | "
            f"{ks.true_positives} | {ks.false_positives} | {_fmt(ks.precision)} | {ks.unjudged} |"
        )
    lines += ["", "| scenario | must met | must_not violations | problems |", "|---|---:|---:|---|"]
    for name, rep in result.reports.items():
        total = len(rep.matched) + len(rep.missed)
        problems = "; ".join(rep.problems()).replace("|", "\\|") or "none"
        lines.append(
            f"| {name} | {len(rep.matched)}/{total} | {len(rep.violations)} | {problems} |"
        )
    lines.append("")
    for name, alarms in result.healthy_false_positives.items():
        lines.append(f"False positives (warning+) on healthy run `{name}`: {len(alarms)}")
    return "\n".join(lines)
