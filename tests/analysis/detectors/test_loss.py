import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import loss
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
