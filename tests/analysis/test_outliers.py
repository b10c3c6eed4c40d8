from typing import Any

import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.findings import Finding
from gradlog.analysis.outliers import outlier_findings as _outlier_findings
from tests.analysis.synth import batch_row


def outlier_findings(runs: list[dict[str, Any]], cfg: AnalysisConfig) -> list[Finding]:
    return _outlier_findings([batch_row(r) for r in runs], cfg)


def _run(run_id: str, lr: float, final: float, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_id,
        "name": run_id,
        "config": {"lr": lr, "optimizer": "Adam", "seed": 0},
        "initial_loss": 2.3,
        "final_loss": final,
        "nonnegative": True,
        "failed": False,
        "lr": lr,
        "update_ratio_peak": lr * 30,
        "update_ratio_median": lr * 3,
    }
    row.update(kw)
    return row


def test_stuck_run_with_the_largest_lr_is_lr_too_high() -> None:
    runs = [_run("a", 3e-4, 0.011), _run("b", 3e-3, 0.0072), _run("c", 3e-2, 1.92)]
    (f,) = outlier_findings(runs, AnalysisConfig())
    assert f.run == "c"
    assert f.kind.value == "lr_too_high"
    assert f.severity.value == "warning"
    assert f.evidence["best_run"] == "b"
    assert f.evidence["differs_in"] == "lr"
    assert f.evidence["loss_ratio"] == pytest.approx(1.92 / 0.0072)
    assert f.evidence["update_ratio_peak"] == pytest.approx(0.9)
    assert "largest lr" in f.message


def test_stuck_run_without_evidence_of_a_high_lr_is_a_plateau() -> None:
    cfg = AnalysisConfig()
    # the smallest lr stalled
    (f,) = outlier_findings([_run("a", 3e-4, 1.9), _run("b", 3e-3, 0.01)], cfg)
    assert (f.run, f.kind.value) == ("a", "plateau")
    # the largest lr, but its updates stayed small
    runs = [_run("a", 3e-4, 0.01), _run("b", 3e-3, 1.9, update_ratio_peak=1e-3)]
    (f,) = outlier_findings(runs, cfg)
    assert (f.run, f.kind.value) == ("b", "plateau")
    # replicates differing only in the seed
    seeds = [_run(f"s{i}", 1e-3, 0.02, config={"lr": 1e-3, "seed": i}) for i in range(3)]
    seeds[1]["final_loss"] = 1.5
    (f,) = outlier_findings(seeds, cfg)
    assert (f.run, f.kind.value, f.evidence["differs_in"]) == ("s1", "plateau", "")


def test_no_outlier_without_a_real_gap() -> None:
    cfg = AnalysisConfig()
    # 20x apart, but both near zero: not worth a warning
    assert outlier_findings([_run("a", 1e-3, 0.001), _run("b", 1e-2, 0.02)], cfg) == []
    # cross-entropy replicates within their noise
    noise = [
        _run(f"s{i}", 1e-3, v, config={"lr": 1e-3, "seed": i})
        for i, v in enumerate((2.0, 2.01, 2.03, 1.99))
    ]
    assert outlier_findings(noise, cfg) == []


def test_cross_entropy_run_behind_its_peers_spread() -> None:
    # a language model: finals 2.0 +- 0.02 from 4.2; one run at 2.6 is far outside that spread
    # though never 10x behind (the old rule could not fire on cross-entropy)
    cfg = AnalysisConfig()
    finals = (2.0, 2.02, 1.98, 2.01, 2.6)
    runs = [
        _run(f"s{i}", 1e-3, v, initial_loss=4.2, config={"lr": 1e-3, "seed": i})
        for i, v in enumerate(finals)
    ]
    (f,) = outlier_findings(runs, cfg)
    assert f.run == "s4"
    # a gap of 5x with 2 runs: the one that made far less progress fell behind
    (f,) = outlier_findings([_run("a", 1e-3, 0.3), _run("b", 1e-2, 1.5)], cfg)
    assert f.run == "b"


def test_only_comparable_finished_runs_are_compared() -> None:
    cfg = AnalysisConfig()
    other = _run("b", 1e-2, 1.9, config={"lr": 1e-2, "optimizer": "SGD", "momentum": 0.9})
    assert outlier_findings([_run("a", 1e-3, 0.01), other], cfg) == []
    failed = _run("f", 1e-3, 0.001, failed=True)  # diverged: has its own error finding
    assert outlier_findings([failed, _run("b", 1e-2, 1.9)], cfg) == []
    signed = [_run("a", 1e-3, 0.01, nonnegative=False), _run("b", 1e-2, 1.9, nonnegative=False)]
    assert outlier_findings(signed, cfg) == []
    assert outlier_findings([_run("a", 1e-3, float("nan")), _run("b", 1e-2, 1.9)], cfg) == []
