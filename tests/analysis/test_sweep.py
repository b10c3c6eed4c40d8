import math

import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.sweep import sweep_findings


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
