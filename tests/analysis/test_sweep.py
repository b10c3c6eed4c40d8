import math
from typing import Any

import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.findings import Finding
from gradlog.analysis.sweep import sweep_findings as _sweep_findings
from tests.analysis.synth import batch_row


def sweep_findings(runs: list[dict[str, Any]], cfg: AnalysisConfig) -> list[Finding]:
    return _sweep_findings([batch_row(r) for r in runs], cfg)


def test_quadratic_in_log_lr() -> None:
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    runs = [
        {
            "run_id": f"r{i}",
            "config": {"lr": lr, "seed": 0},
            "outcome": (math.log10(lr) + 2.5) ** 2 + 0.1,
        }
        for i, lr in enumerate(lrs)
    ]
    runs.append({"run_id": "boom", "config": {"lr": 10.0, "seed": 0}, "outcome": math.inf})
    (f,) = sweep_findings(runs, AnalysisConfig())
    assert f.evidence["hyperparameter"] == "lr"
    assert f.evidence["failed_runs"] == 1
    assert f.evidence["suggested_value"] == pytest.approx(10**-2.5, rel=1e-6)
    assert f.evidence["optimum_inside"] == 1


def _runs(lrs: list[float], outcomes: list[float], **config: object) -> list[dict[str, Any]]:
    return [
        {"run_id": f"r{i}-{config}", "config": {"lr": lr, **config, "seed": i}, "outcome": y}
        for i, (lr, y) in enumerate(zip(lrs, outcomes, strict=True))
    ]


def test_three_values_are_not_a_fit() -> None:
    # any three points lie on a parabola: R^2 = 1 proves nothing
    runs = _runs([3e-4, 3e-3, 3e-2], [0.011, 0.007, 1.9])
    (f,) = sweep_findings(runs, AnalysisConfig())
    assert f.evidence["fitted"] == 0
    assert f.evidence["distinct_values"] == 3
    assert f.evidence["best_value"] == 3e-3
    assert "suggested_value" not in f.evidence
    assert "r2" not in f.evidence
    assert "too few to fit" in f.message
    assert "R^2" not in f.message
    assert "4 or more values" in f.hint


def test_goodness_of_fit_is_adjusted_for_the_parameters() -> None:
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    outcomes = [0.9, 0.2, 0.85, 0.3]  # no parabola explains this
    (f,) = sweep_findings(_runs(lrs, outcomes), AnalysisConfig())
    assert f.evidence["fitted"] == 1
    assert f.evidence["dof"] == 1
    r2, adj = f.evidence["r2"], f.evidence["r2_adjusted"]
    assert isinstance(r2, float)
    assert isinstance(adj, float)
    assert adj == pytest.approx(1 - (1 - r2) * 3 / 1)
    assert adj < AnalysisConfig().sweep_min_r2
    assert "suggested_value" not in f.evidence
    assert f.evidence["optimum_inside"] == 0
    assert "explains too little" in f.hint
    assert "adjusted" in f.message


def test_unrelated_runs_are_not_a_sweep() -> None:
    # the sample scenarios: different models and optimizers that happen to use different lrs
    runs = [
        {"run_id": "a", "config": {"model": "MLP", "optimizer": "SGD", "lr": 0.3}, "outcome": 0.5},
        {"run_id": "b", "config": {"model": "CNN", "optimizer": "Adam", "lr": 1e-3}, "outcome": 0},
        {"run_id": "c", "config": {"model": "MLP", "optimizer": "Adam", "lr": 1e-4}, "outcome": 2},
        {"run_id": "d", "config": {"model": "RNN", "optimizer": "SGD", "lr": 0.1}, "outcome": 1},
    ]
    assert sweep_findings(runs, AnalysisConfig()) == []


def test_sweeps_are_fitted_within_groups() -> None:
    lrs = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    sgd = _runs(lrs, [(math.log10(lr) + 1.5) ** 2 for lr in lrs], optimizer="SGD")
    adam = _runs(lrs, [(math.log10(lr) + 3.0) ** 2 for lr in lrs], optimizer="Adam")
    found = sweep_findings(sgd + adam, AnalysisConfig())
    by_group = {f.evidence["group"]: f for f in found}
    assert set(by_group) == {"optimizer=SGD", "optimizer=Adam"}
    assert by_group["optimizer=SGD"].evidence["suggested_value"] == pytest.approx(10**-1.5)
    assert by_group["optimizer=Adam"].evidence["suggested_value"] == pytest.approx(10**-3.0)
    assert "optimizer=Adam" in by_group["optimizer=Adam"].message
    # pooled, the two curves would have blurred into one optimum in between
    assert all(f.evidence["runs"] == 5 for f in found)


def test_seeds_and_names_do_not_split_a_sweep() -> None:
    runs: list[dict[str, Any]] = [
        {
            "run_id": f"r{i}",
            "config": {"lr": lr, "seed": i, "data_seed": 7 * i, "name": f"lr-{lr}", "bs": 64},
            "outcome": (math.log10(lr) + 2) ** 2,
        }
        for i, lr in enumerate([1e-4, 1e-3, 1e-2, 1e-1])
    ]
    runs[2]["config"]["bs"] = 64.0  # the same batch size, written as a float
    (f,) = sweep_findings(runs, AnalysisConfig())
    assert f.evidence["runs"] == 4
    assert f.evidence["suggested_value"] == pytest.approx(1e-2)


def test_a_vertex_that_contradicts_the_runs_is_not_suggested() -> None:
    # the real CNN sweep: one stuck run at the largest lr bends the parabola so that its vertex
    # lands below 1e-3, although 3e-3 beat both its neighbours
    runs = _runs([3e-4, 1e-3, 3e-3, 3e-2], [0.011, 0.0087, 4.5e-5, 2.0])
    (f,) = sweep_findings(runs, AnalysisConfig())
    assert f.evidence["fitted"] == 1
    assert f.evidence["best_value"] == 3e-3
    assert "suggested_value" not in f.evidence
    assert "contradicts the runs" in f.hint
