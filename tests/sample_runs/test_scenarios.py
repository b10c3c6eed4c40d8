"""The sample scenarios: the scoring functions, and every scenario's EXPECT against the analysis."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks.detection import replace_section
from sample_runs.scenarios import HEALTHY, KINDS, SCENARIOS, SEVERITIES
from sample_runs.scoring import match_expectations, matches, score

LOGS = Path(__file__).resolve().parents[2] / "sample_runs" / "logs"


def finding(
    kind: Any,
    severity: Any = "warning",
    tensor: str | None = None,
    step_start: int | None = None,
    step_end: int | None = None,
) -> SimpleNamespace:
    return SimpleNamespace(
        kind=kind, severity=severity, tensor=tensor, step_start=step_start, step_end=step_end
    )


# ----------------------------------------------------------------- EXPECT declarations
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_expect_is_well_formed(name: str) -> None:
    module = SCENARIOS[name]
    assert name == module.NAME
    assert set(module.EXPECT) <= {"must", "must_not"}
    for item in module.EXPECT["must"]:
        assert item["kind"] in KINDS
        assert set(item) <= {"kind", "tensor", "step_start", "step_tolerance", "severity_at_least"}
        assert item.get("severity_at_least", "info") in SEVERITIES
    assert set(module.EXPECT["must_not"]) <= set(KINDS)
    assert callable(module.train)


def test_healthy_scenarios_forbid_the_problem_kinds() -> None:
    for name in HEALTHY:
        forbidden = set(SCENARIOS[name].EXPECT["must_not"])
        assert {"exploding", "vanishing", "dead", "divergence", "lr_too_high"} <= forbidden


# ----------------------------------------------------------------- matching
def test_must_item_matches_kind_tensor_step_and_severity() -> None:
    item = {"kind": "nonfinite", "tensor": "fc2.weight", "step_start": 60}
    assert matches(item, finding("nonfinite", "error", "fc2.weight", 60))
    assert not matches(item, finding("nonfinite", "error", "fc2.weight", 61))  # exact by default
    assert not matches(item, finding("nonfinite", "error", "fc1.weight", 60))
    assert not matches(item, finding("exploding", "error", "fc2.weight", 60))
    assert not matches(item, finding("nonfinite", "error", "fc2.weight", None))


def test_tensor_list_and_step_tolerance() -> None:
    item = {"kind": "spike", "tensor": ["a", "b"], "step_start": 100}
    assert matches(item, finding("spike", tensor="b", step_start=105))  # default tolerance 5
    assert not matches(item, finding("spike", tensor="b", step_start=106))
    assert not matches(item, finding("spike", tensor="c", step_start=100))
    narrow = {"kind": "spike", "step_start": 100, "step_tolerance": 1}
    assert matches(narrow, finding("spike", tensor="z", step_start=99))
    assert not matches(narrow, finding("spike", step_start=98))


def test_severity_at_least_and_enum_values() -> None:
    class Str:  # a str enum stand-in: only .value is read
        def __init__(self, value: str) -> None:
            self.value = value

    item = {"kind": "frozen", "severity_at_least": "warning"}
    assert matches(item, finding(Str("frozen"), Str("error")))
    assert matches(item, finding("frozen", "warning"))
    assert not matches(item, finding("frozen", "info"))
    assert matches({"kind": "frozen"}, finding("frozen", "info"))


def test_match_expectations_reports_missed_and_violations() -> None:
    expect = {
        "must": [{"kind": "dead", "tensor": "fc1.weight"}, {"kind": "plateau"}],
        "must_not": ["exploding", "vanishing"],
    }
    findings = [
        finding("dead", "warning", "fc1.weight"),
        finding("exploding", "error"),
        finding("vanishing", "info"),  # info notes are allowed
    ]
    rep = match_expectations(expect, findings)
    assert rep.matched == [{"kind": "dead", "tensor": "fc1.weight"}]
    assert rep.missed == [{"kind": "plateau"}]
    assert [f.kind for f in rep.violations] == ["exploding"]
    assert not rep.ok
    assert rep.problems() == [
        "missed: plateau",
        "must_not violated: exploding/error tensor=None steps=None..None",
    ]
    assert match_expectations({"must": [], "must_not": ["spike"]}, []).ok


def test_score_precision_recall_and_healthy_false_positives() -> None:
    expects: dict[str, dict[str, Any]] = {
        "explode": {"must": [{"kind": "exploding"}, {"kind": "nonfinite"}], "must_not": ["dead"]},
        "healthy": {"must": [], "must_not": ["exploding", "dead"]},
    }
    findings = {
        "explode": [
            finding("exploding", "error"),
            finding("exploding", "warning", "w"),
            finding("dead", "warning"),  # forbidden here: false positive
            finding("spike", "warning"),  # neither expected nor forbidden: unjudged
            finding("nonfinite", "info"),  # info: recalls the must item, no alarm
        ],
        "healthy": [finding("exploding", "warning"), finding("dead", "info")],
    }
    result = score(expects, findings, healthy=["healthy"])
    ex = result.kinds["exploding"]
    assert (ex.expected, ex.recalled, ex.true_positives, ex.false_positives) == (1, 1, 2, 1)
    assert ex.recall == 1.0
    assert ex.precision == pytest.approx(2 / 3)
    dead = result.kinds["dead"]
    assert (dead.expected, dead.true_positives, dead.false_positives) == (0, 0, 1)
    assert dead.recall is None
    assert dead.precision == 0.0
    assert result.kinds["nonfinite"].recall == 1.0
    assert result.kinds["nonfinite"].precision is None
    assert result.kinds["spike"].unjudged == 1
    assert [f.kind for f in result.healthy_false_positives["healthy"]] == ["exploding"]
    assert (result.expectations_met, result.expectations_total, result.violations) == (2, 2, 2)


# ----------------------------------------------------------------- BENCHMARKS.md section
def test_replace_section_keeps_other_sections() -> None:
    text = (
        "# Benchmarks\n\n## Overhead\nold overhead\n\n## Detection scores\nold\n\n## Later\nkeep\n"
    )
    out = replace_section(text, "## Detection scores\nnew\n")
    want = (
        "# Benchmarks\n\n## Overhead\nold overhead\n\n## Detection scores\nnew\n\n## Later\nkeep\n"
    )
    assert out == want
    assert replace_section("# B\n", "## Detection scores\nx\n") == "# B\n\n## Detection scores\nx\n"
    assert replace_section("", "## Detection scores\nx") == "## Detection scores\nx\n"
    end = replace_section("## Detection scores\nold\nmore\n", "## Detection scores\nnew\n")
    assert end == "## Detection scores\nnew\n"


# ----------------------------------------------------------------- the committed logs
def _findings(name: str) -> list[Any]:
    from gradlog.analysis import analyze

    root = LOGS / name
    assert any(root.glob("*/meta.json")), f"no committed logs for {name}; run make samples"
    return list(analyze([root]).findings)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_expectations(name: str) -> None:
    report = match_expectations(SCENARIOS[name].EXPECT, _findings(name))
    assert report.ok, f"{name}: " + "; ".join(report.problems())


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_runs_raise_no_alarm(name: str) -> None:
    from sample_runs.scoring import describe_finding, is_alarm

    alarms = [describe_finding(f) for f in _findings(name) if is_alarm(f)]
    assert not alarms, f"{name} is healthy, yet: {alarms}"
