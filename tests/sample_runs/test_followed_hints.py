"""Following the analysis's learning-rate hints: the rerun must not end worse, and healthy recipes
get no learning-rate warning at all."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sample_runs.hints import Followed, Outcome, follow, suggested_lr
from sample_runs.scenarios import HEALTHY, SCENARIOS

LOGS = Path(__file__).resolve().parents[2] / "sample_runs" / "logs"


def _result(name: str) -> Any:
    from gradlog.analysis import analyze

    root = LOGS / name
    assert any(root.glob("*/meta.json")), f"no committed logs for {name}; run make samples"
    return analyze([root]).runs[0]


def _suggesting() -> list[str]:
    """Scenarios whose committed run gets a run-level lr warning with a suggested value."""
    return [n for n in SCENARIOS if suggested_lr(list(_result(n).findings)) is not None]


def test_followed_outcome_rules() -> None:
    def f(before: Outcome, after: Outcome) -> Followed:
        return Followed("s", "lr_too_high", 1.0, 0.1, before, after, repeated=False)

    assert f(Outcome(2.0, False), Outcome(2.03, False)).not_worse  # within 2 %
    assert not f(Outcome(2.0, False), Outcome(2.1, False)).not_worse
    assert f(Outcome(0.5, True), Outcome(9.0, False)).not_worse  # no blow-up beats a blow-up
    assert not f(Outcome(0.5, True), Outcome(0.1, True)).not_worse
    warn = SimpleNamespace(
        kind="lr_too_high", severity="warning", tensor=None, evidence={"suggested_lr": 0.01}
    )
    note = SimpleNamespace(
        kind="lr_too_high", severity="info", tensor=None, evidence={"suggested_lr": 0.01}
    )
    assert suggested_lr([note]) is None
    assert suggested_lr([note, warn]) == ("lr_too_high", 0.01)


def test_healthy_recipes_get_no_lr_warning() -> None:
    for name in HEALTHY:
        lr = [
            f
            for f in _result(name).findings
            if f.kind.value in ("lr_too_high", "lr_too_low") and f.severity.value != "info"
        ]
        assert not lr, f"{name} is a healthy recipe, yet: {[f.message for f in lr]}"


def test_the_hint_is_given_where_the_lr_is_wrong() -> None:
    names = _suggesting()
    assert {"exploding_sgd", "lr_too_low", "float64_explode"} <= set(names)
    assert not set(names) & set(HEALTHY)


@pytest.mark.parametrize("name", ["exploding_sgd", "lr_too_low", "float64_explode"])
def test_following_the_hint_is_not_worse(name: str, tmp_path: Path) -> None:
    done = follow(name, _result(name), tmp_path)
    assert done is not None
    assert done.not_worse, (
        f"{name}: lr {done.lr} -> {done.suggested}: {done.before} -> {done.after}"
    )
    assert not done.repeated, f"{name}: the rerun at {done.suggested} is told the same again"
