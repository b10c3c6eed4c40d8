from pathlib import Path

import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.convergence import (
    _exp,
    _power,
    change_points,
    fit_convergence,
    initial_level,
)
from gradlog.analysis.trend import Convergence


def test_power_law_recovered(rng: np.random.Generator) -> None:
    t = np.arange(2000)
    y = 0.5 + 3.0 * (t + 1.0) ** -0.7 + rng.normal(0, 1e-3, len(t))
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.model == "power"
    true = 0.5 + 3.0 * (t[-1] + 2000 + 1.0) ** -0.7
    assert c.projected_loss == pytest.approx(true, abs=0.01)
    low, mid, high = _band(c)
    assert low <= mid <= high


def test_exponential_and_stall(rng: np.random.Generator) -> None:
    t = np.arange(1000)
    y = 1.0 + 2.0 * np.exp(-t / 50.0) + rng.normal(0, 1e-4, len(t))
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.model == "exponential"
    assert c.stalled_step is not None
    assert 100 <= c.stalled_step <= 500


def test_change_point() -> None:
    t = np.arange(200.0)
    y = np.where(t < 100, 5 - 0.02 * t, 3 - 0.001 * (t - 100))
    assert change_points(t, y + 1e-6 * np.sin(t), 3)[0] in range(95, 106)


def test_too_short() -> None:
    assert fit_convergence(np.arange(3), np.ones(3), AnalysisConfig()) is None


def _noisy_ce(rng: np.random.Generator, n: int = 87) -> tuple[np.ndarray, np.ndarray]:
    """A cross-entropy-like curve: fast drop to ~0.01, right-skewed (log-normal) batch noise."""
    t = np.arange(n)
    return t, (0.01 + 2.3 * np.exp(-t / 6.0)) * rng.lognormal(0.0, 0.8, n)


def test_nonnegative_loss_is_never_projected_below_zero(rng: np.random.Generator) -> None:
    # a power law to 0 fitted by an unbounded exponential needs a negative asymptote
    for seed in range(5):
        t = np.arange(150)
        noise = np.random.default_rng(seed).lognormal(0.0, 0.3, len(t))
        y = 2.3 * (t + 1.0) ** -1.3 * noise
        c = fit_convergence(t, y, AnalysisConfig())
        assert c is not None
        assert c.nonnegative is True
        assert all(f.asymptote >= 0 and f.low >= 0 for f in c.fits)
        low, mid, high = _band(c)
        assert 0 <= low <= mid <= high
    t, y = _noisy_ce(rng)
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert _band(c)[0] >= 0


def test_projection_follows_the_median_not_the_noisy_mean() -> None:
    # skewed noise: the mean sits ~1.4x above the median; a plain least-squares fit lands
    # above the current loss although the curve still falls
    for seed in range(8):
        t, y = _noisy_ce(np.random.default_rng(seed))
        c = fit_convergence(t, y, AnalysisConfig())
        assert c is not None
        true_now = 0.01 + 2.3 * np.exp(-t[-1] / 6.0)  # = the true projection, ~0.01
        assert c.final_loss == pytest.approx(true_now, rel=0.6)
        assert 0.3 * true_now <= c.projected_loss <= 1.2 * true_now
        assert c.projected_low <= true_now <= c.projected_high


def test_final_loss_is_the_last_windows_median() -> None:
    t = np.arange(100)
    y = np.full(100, 0.5)
    y[-1] = 50.0  # one bad batch at the end
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.final_loss == 0.5
    assert c.initial_loss == 0.5


def test_initial_level_is_the_loss_before_any_update() -> None:
    blow_up = np.array([2.3, 35.0, 30.0, 19.0, 12.0, 6.7, 3.9, 2.7, 2.2, 2.2, 2.1, 2.0])
    assert initial_level(blow_up) == 2.3  # the blow-up is not where training started
    fast = np.array([2.3, 0.01, 0.012, 0.009, 0.011, 0.01])
    assert initial_level(fast) == 2.3  # nor is the level after the first drop


def test_t0_redraws_the_fitted_curve() -> None:
    t = np.arange(500, 1500)
    y = 0.3 + 2.0 * np.exp(-(t - 500) / 80.0)
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.t0 == 500.0
    best = next(f for f in c.fits if f.model == c.model)
    fn = _exp if c.model == "exponential" else _power
    assert fn(t - c.t0, *best.params) == pytest.approx(y, abs=0.01)


def test_negative_losses_are_not_bounded() -> None:
    t = np.arange(300)
    y = -1.0 + np.exp(-t / 40.0)  # e.g. a negative log-likelihood of a density
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.nonnegative is False
    assert c.projected_loss == pytest.approx(-1.0, abs=0.01)
    assert _band(c)[0] < 0


def test_a_loss_that_ended_above_its_start_is_not_projected() -> None:
    t = np.arange(60)
    y = 0.7 * np.exp(t / 6.0)  # diverging
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.projected_loss is None
    assert c.model is None
    assert c.final_loss > c.initial_loss


def _band(c: Convergence) -> tuple[float, float, float]:
    """(low, projected, high) of a projected curve."""
    assert c.projected_low is not None
    assert c.projected_loss is not None
    assert c.projected_high is not None
    return c.projected_low, c.projected_loss, c.projected_high


def test_a_loss_that_ends_nonfinite_has_no_final_level_projection_or_stall() -> None:
    t = np.arange(120)
    y = 3.0 * np.exp(-t / 30.0) + 0.5
    y[70:] = np.nan  # the run blew up at step 70 and logged NaN from there
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.ended_nonfinite
    assert np.isnan(c.final_loss)
    assert c.final_step == 119
    assert c.projected_loss is None
    assert c.model is None
    assert c.stalled_step is None
    assert c.projected_step == 119 + 120  # counted from the last logged step


def test_a_diverged_loss_has_not_stalled() -> None:
    t = np.arange(200)
    y = 1.0 + np.where(t < 100, 0.0, (t - 100) * 0.5)
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.diverged
    assert c.stalled_step is None


def test_a_loss_that_blew_up_past_1e150_is_fitted_without_overflow() -> None:
    """A float64 run whose loss grows to 1e200 (finite, but its squares overflow)."""
    t = np.arange(60)
    y = np.concatenate([np.linspace(1.2, 0.5, 8), 10.0 ** np.linspace(1, 200, 52)])
    assert np.all(np.isfinite(y))
    c = fit_convergence(t, y, AnalysisConfig())
    assert c is not None
    assert c.diverged
    assert change_points(t, y, 3) == []


def _nan_gradient_run(tmp_path: Path, nan_from: int | None) -> Path:
    """60 steps of a finite, falling loss; gradients NaN from ``nan_from`` on (None: never)."""
    from tests.analysis.synth import make_run

    n = 60
    t = np.arange(n)
    loss = 2.0 * np.exp(-t / 20.0) + 0.3  # finite to the end, whatever the gradients do
    nf = np.zeros(n) if nan_from is None else np.where(t >= nan_from, 100, 0)
    return make_run(tmp_path, f"nan{nan_from}", {"w": np.ones(n)}, loss=loss, nonfinite={"w": nf})


def test_nonfinite_gradients_with_a_finite_loss_get_no_projection(tmp_path: Path) -> None:
    from gradlog.analysis.pipeline import analyze_run

    cfg = AnalysisConfig()
    res = analyze_run(_nan_gradient_run(tmp_path, 30), cfg)
    c = res.convergence
    assert c is not None
    assert c.projected_loss is None
    assert c.projected_low is None
    assert c.model is None
    assert c.healthy_end == 30
    assert c.health_reason == "nonfinite gradients"
    assert "gradients went non-finite at step 30" in c.projection_dropped
    # the last window lies after the gradients went NaN: no final level is read from it
    assert np.isnan(c.final_loss)
    assert c.last_healthy_step == 29
    assert c.last_healthy_loss == pytest.approx(2.0 * np.exp(-29 / 20.0) + 0.3, rel=1e-6)
    assert c.failure.startswith("diverged at step 30 (gradients non-finite); last healthy loss")
    assert c.stalled_step is None
    # the curve is fitted over the healthy steps 0-29 only
    assert all(w.step_end < 30 for w in c.windows)
    assert res.charts is None or res.charts.fit is None
    # the reasons survive the saved result's round trip
    from gradlog.analysis.result import RunResult

    back = RunResult.from_json(res.to_json()).convergence
    assert back is not None
    assert (back.healthy_end, back.health_reason, back.projection_dropped) == (
        c.healthy_end,
        c.health_reason,
        c.projection_dropped,
    )
    assert (back.last_healthy_step, back.last_healthy_loss) == (29, c.last_healthy_loss)


def test_a_healthy_run_is_still_projected(tmp_path: Path) -> None:
    from gradlog.analysis.pipeline import analyze_run

    res = analyze_run(_nan_gradient_run(tmp_path, None), AnalysisConfig())
    c = res.convergence
    assert c is not None
    assert c.projected_loss is not None
    assert c.projection_dropped == ""
    assert c.healthy_end is None
    assert c.failure == ""
    assert c.final_loss == pytest.approx(
        float(np.median(2.0 * np.exp(-np.arange(54, 60) / 20.0) + 0.3)), rel=1e-6
    )
