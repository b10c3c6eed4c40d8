import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.convergence import change_points, fit_convergence


def test_power_law_recovered(rng: np.random.Generator) -> None:
    t = np.arange(2000)
    y = 0.5 + 3.0 * (t + 1.0) ** -0.7 + rng.normal(0, 1e-3, len(t))
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c["model"] == "power"
    true = 0.5 + 3.0 * (t[-1] + 2000 + 1.0) ** -0.7
    assert c["projected_loss"] == pytest.approx(true, abs=0.01)
    assert c["projected_low"] <= c["projected_loss"] <= c["projected_high"]


def test_exponential_and_stall(rng: np.random.Generator) -> None:
    t = np.arange(1000)
    y = 1.0 + 2.0 * np.exp(-t / 50.0) + rng.normal(0, 1e-4, len(t))
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c["model"] == "exponential"
    assert 100 <= c["stalled_step"] <= 500


def test_change_point() -> None:
    t = np.arange(200.0)
    y = np.where(t < 100, 5 - 0.02 * t, 3 - 0.001 * (t - 100))
    assert change_points(t, y + 1e-6 * np.sin(t), 3)[0] in range(95, 106)


def test_too_short() -> None:
    assert fit_convergence(np.arange(3), np.ones(3), AnalysisConfig()) is None
