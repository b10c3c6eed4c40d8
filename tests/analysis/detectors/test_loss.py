import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import loss
from gradlog.analysis.detectors.loss import early_stall
from tests.analysis.synth import FramesOf


def test_divergence(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    y = np.concatenate([np.linspace(2, 0.5, 100), np.linspace(0.5, 5, 100)])
    found = loss.detect(frames_of({"a": np.ones(200)}, loss=y), cfg)
    assert [x.kind.value for x in found] == ["divergence"]


def test_early_plateau_is_warning_and_oscillation(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    y = 2.0 + 0.3 * (-1.0) ** np.arange(200)
    found = {x.kind.value: x for x in loss.detect(frames_of({"a": np.ones(200)}, loss=y), cfg)}
    assert found["plateau"].severity.value == "warning"
    autocorr = found["oscillation"].evidence["diff_autocorr"]
    assert isinstance(autocorr, float)
    assert autocorr < -0.99


def test_converged_is_info(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    y = 0.1 + np.exp(-np.arange(400) / 30) + rng.normal(0, 1e-4, 400)
    found = loss.detect(frames_of({"a": np.ones(400)}, loss=y), cfg)
    assert [(x.kind.value, x.severity.value) for x in found] == [("plateau", "info")]


def _blow_up_then_stall(rng: np.random.Generator, n: int = 87) -> np.ndarray:
    """The CNN at lr 0.03 with Adam: 2.3 at init, a blow-up, back near chance and ~flat."""
    y = 2.0 - 0.1 * np.arange(n) / n + rng.normal(0, 0.08, n)
    y[:8] = [2.28, 35.5, 33.4, 19.0, 12.0, 6.7, 3.9, 2.75]
    return y


def test_stalled_early_is_a_warning_with_the_lr_hint(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 87
    y = _blow_up_then_stall(rng, n)
    ratio = np.where(np.arange(n) < 10, 1.0, 3e-3)  # Adam's first step: as large as the weights
    f = frames_of(
        {"w": np.ones(n)},
        loss=y,
        param_norms={"w": np.ones(n)},
        update_norms={"w": ratio},
        optimizer={"class": "Adam", "param_groups": [{"lr": 0.03}]},
    )
    (plateau,) = [x for x in loss.detect(f, cfg) if x.kind.value == "plateau"]
    assert plateau.severity.value == "warning"
    assert plateau.message.startswith("Training stalled early")
    assert plateau.evidence["stalled_early"] == 1
    assert plateau.evidence["initial_loss"] == 2.28  # the blow-up is not progress
    assert plateau.step_start is not None
    assert plateau.step_start <= cfg.early_stall_onset * n
    assert plateau.evidence["update_ratio_peak"] == pytest.approx(1.0)
    assert "Lower the lr" in plateau.hint
    assert "Adam" in plateau.hint


def test_stall_without_update_ratios_names_both_causes(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    y = _blow_up_then_stall(rng)
    (plateau,) = loss.detect(frames_of({"w": np.ones(87)}, loss=y), cfg)
    assert plateau.severity.value == "warning"
    assert "too high" in plateau.hint
    assert "too low" in plateau.hint
    assert "labels" in plateau.hint


def test_learning_runs_do_not_stall(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 87
    t = np.arange(n)
    fast = (0.01 + 2.3 * np.exp(-t / 6.0)) * rng.lognormal(0, 0.5, n)  # the healthy CNN
    steady = np.linspace(2.3, 1.8, n) + rng.normal(0, 0.01, n)  # slow, still falling
    for y in (fast, steady):
        found = loss.detect(frames_of({"w": np.ones(n)}, loss=y), cfg)
        assert not [x for x in found if x.severity.value != "info"], found


def test_late_stall_is_not_early(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    # the loss sat above its start for 40% of the run before settling 10% below it
    n = 200
    y = np.concatenate([[2.3], np.full(79, 5.0), np.full(120, 2.07)])
    found = loss.detect(frames_of({"w": np.ones(n)}, loss=y), cfg)
    assert not [x for x in found if "stalled early" in x.message]


def test_negative_loss_has_no_relative_stall(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 100
    y = np.full(n, -3.0) + 0.01 * np.sin(np.arange(n))
    found = loss.detect(frames_of({"w": np.ones(n)}, loss=y), cfg)
    assert not [x for x in found if "stalled early" in x.message]
    assert early_stall(np.arange(n), y, cfg) is None
