import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig, analyze
from gradlog.analysis.findings import Finding, Kind, Severity
from gradlog.analysis.sweep import sweep_findings as _sweep_findings
from tests.analysis.synth import batch_row, make_run


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


def _lr_run(root: Path, lr: float) -> Path:
    """A run at ``lr`` whose update ratio is lr / 2 (0.05 at lr 0.1: above the 1e-2 band) and
    whose loss levels off at a height set by hand: 0.1 reaches the lowest loss; 0.1 and 0.3
    oscillate step to step (the too-high symptom that makes a single-run lr_too_high a
    warning)."""
    n = 200
    t = np.arange(n)
    floor = {0.01: 1.2, 0.03: 0.8, 0.1: 0.3, 0.3: 0.9}[lr]
    loss = 2.0 * np.exp(-t / 30.0) + floor
    if lr >= 0.1:
        loss *= 1 + 0.08 * np.where(t % 2 == 0, 1.0, -1.0)
    return make_run(
        root,
        f"lr{lr:g}",
        {"fc.weight": np.ones(n)},
        loss=loss,
        param_norms={"fc.weight": np.full(n, 10.0)},
        update_norms={"fc.weight": np.full(n, 10.0 * lr / 2)},
        config={"lr": lr, "model": "mlp"},
        optimizer={"class": "SGD", "param_groups": [{"lr": lr}]},
    )


def test_an_lr_sweep_outranks_the_best_runs_own_lr_finding(tmp_path: Path) -> None:
    """Alone, the lr=0.1 run's update ratio (0.05) and oscillating loss make lr_too_high a
    warning; in a batch with the sweep 0.01/0.03/0.1/0.3, where 0.1 reached the lowest loss,
    the finding is info and names the sweep."""
    runs = [_lr_run(tmp_path, lr) for lr in (0.01, 0.03, 0.1, 0.3)]
    alone = analyze([runs[2]]).runs[0]
    (high,) = [f for f in alone.findings if f.kind is Kind.LR_TOO_HIGH and f.tensor is None]
    assert high.severity is Severity.WARNING

    batch = analyze(runs)
    (sweep,) = [f for f in batch.batch_findings if f.kind is Kind.SWEEP]
    assert sweep.evidence["best_value"] == 0.1
    best = next(r for r in batch.runs if r.run_id == "lr0.1")
    lr_findings = [f for f in best.findings if f.kind in (Kind.LR_TOO_HIGH, Kind.LR_TOO_LOW)]
    assert lr_findings, "the finding is kept, at info, pointing at the sweep"
    for f in lr_findings:
        assert f.severity is Severity.INFO
        assert "the sweep over lr in this batch (0.01, 0.03, 0.1, 0.3" in f.message
        assert "found this run's lr the best" in f.message
        assert f.evidence["sweep_best_value"] == 0.1
    # lr 0.3, above the best, keeps its warning: the sweep agrees with it
    top = next(r for r in batch.runs if r.run_id == "lr0.3")
    (got,) = [f for f in top.findings if f.kind is Kind.LR_TOO_HIGH and f.tensor is None]
    assert got.severity is Severity.WARNING
    assert "best outcome at lr=0.1) agrees." in got.message


def test_a_finding_that_contradicts_the_sweep_becomes_info() -> None:
    """lr_too_high on a run whose lr is below the sweep's best contradicts the sweep."""
    from gradlog.analysis.batch import _deferred

    f = Finding("r", "update_ratio", Kind.LR_TOO_HIGH, Severity.WARNING, None, 0, 9, {}, "m", "h")
    got = _deferred(f, "lr", 0.03, 0.1, "the sweep over lr in this batch (...)")
    assert got.severity is Severity.INFO
    assert "contradicts it: this run's lr=0.03 is below the best" in got.message
    low = dataclasses.replace(f, kind=Kind.LR_TOO_LOW)
    assert _deferred(low, "lr", 0.03, 0.1, "the sweep").severity is Severity.WARNING
