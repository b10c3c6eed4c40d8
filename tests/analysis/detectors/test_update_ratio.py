import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import update_ratio
from tests.analysis.synth import FramesOf


def test_lr_too_high_with_suggested_lr(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 50
    f = frames_of(
        {"a": np.ones(n), "b": np.ones(n)},
        param_norms={"a": np.ones(n), "b": np.ones(n)},
        update_norms={"a": np.full(n, 0.1), "b": np.full(n, 0.1)},
        scalars={"lr/0": np.full(n, 1.0)},
    )
    found = update_ratio.detect(f, cfg)
    model = found[0]
    assert model.kind.value == "lr_too_high"
    assert model.tensor is None
    assert model.evidence["suggested_lr"] == pytest.approx(0.01)
    assert {x.tensor for x in found[1:]} == {"a", "b"}


def test_band_is_quiet(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 50
    f = frames_of(
        {"a": np.ones(n)}, param_norms={"a": np.ones(n)}, update_norms={"a": np.full(n, 1e-3)}
    )
    assert update_ratio.detect(f, cfg) == []


def test_layer_imbalance_is_not_a_global_lr_verdict(
    frames_of: FramesOf, cfg: AnalysisConfig
) -> None:
    # vanishing-gradient profile: input side barely moves, the head moves 2% per step
    n = 50
    ratios = {"l0": 1e-8, "l1": 1e-7, "l2": 1e-6, "l3": 1e-5, "head": 2e-2}
    f = frames_of(
        {t: np.ones(n) for t in ratios},
        param_norms={t: np.ones(n) for t in ratios},
        update_norms={t: np.full(n, r) for t, r in ratios.items()},
    )
    found = update_ratio.detect(f, cfg)
    model = found[0]
    assert model.tensor is None
    assert model.kind.value == "lr_too_low"
    assert model.severity.value == "info"
    assert model.evidence["layers_disagree"] == 1
    assert model.evidence["layer_spread_decades"] == pytest.approx(np.log10(2e-2 / 1e-8))
    assert all(x.severity.value == "info" for x in found)


def test_one_sided_imbalance_still_warns(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    # every layer too slow, by different amounts: raising the lr helps all of them
    n = 50
    ratios = {"a": 1e-7, "b": 1e-6, "c": 3e-6}
    f = frames_of(
        {t: np.ones(n) for t in ratios},
        param_norms={t: np.ones(n) for t in ratios},
        update_norms={t: np.full(n, r) for t, r in ratios.items()},
    )
    model = update_ratio.detect(f, cfg)[0]
    assert model.kind.value == "lr_too_low"
    assert model.severity.value == "warning"
    assert model.evidence["layers_disagree"] == 0


def test_steps_after_applied_nan_are_ignored(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    # healthy 1e-3 updates until a NaN gradient is applied at step 30; afterwards the weights
    # are garbage and the measured ratios collapse: that is not a learning-rate verdict
    n = 100
    upd = np.where(np.arange(n) < 30, 1e-3, 1e-9)
    nf = np.zeros(n)
    nf[30:] = 1
    f = frames_of(
        {"a": np.ones(n)},
        param_norms={"a": np.ones(n)},
        update_norms={"a": upd},
        nonfinite={"a": nf},
    )
    assert update_ratio.detect(f, cfg) == []


@pytest.mark.parametrize(("ratio", "severity"), [(1.2e-2, "info"), (2e-2, "warning")])
def test_just_outside_the_band_is_borderline(
    frames_of: FramesOf, cfg: AnalysisConfig, ratio: float, severity: str
) -> None:
    # 1.2x the band edge is within update_ratio_margin (1.5x): info; 2x is beyond it: warning
    n = 50
    f = frames_of(
        {"a": np.ones(n)}, param_norms={"a": np.ones(n)}, update_norms={"a": np.full(n, ratio)}
    )
    model = update_ratio.detect(f, cfg)[0]
    assert model.kind.value == "lr_too_high"
    assert model.severity.value == severity
    assert model.evidence["borderline"] == (severity == "info")
