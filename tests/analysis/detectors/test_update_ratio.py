import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import update_ratio
from tests.analysis.synth import FramesOf

OSCILLATING = 2.0 + 0.3 * (-1.0) ** np.arange(50)
"""A period-2 loss: the too-high-lr symptom."""
CONVERGED = 0.2 + 2.0 * np.exp(-np.arange(50) / 5.0)
"""A loss that fell 10x and flattened: no symptom of either kind."""


def test_lr_too_high_with_suggested_lr(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 50
    f = frames_of(
        {"a": np.ones(n), "b": np.ones(n)},
        param_norms={"a": np.ones(n), "b": np.ones(n)},
        update_norms={"a": np.full(n, 0.1), "b": np.full(n, 0.1)},
        scalars={"lr/0": np.full(n, 1.0)},
        loss=OSCILLATING,
    )
    found = update_ratio.detect(f, cfg)
    model = found[0]
    assert model.kind.value == "lr_too_high"
    assert model.severity.value == "warning"
    assert model.tensor is None
    assert model.evidence["suggested_lr"] == pytest.approx(0.01)
    assert "Lower the learning rate about 1e+02x (peak lr 0.01 instead of 1)" in model.hint
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
        loss=np.linspace(2.0, 1.95, n),  # the symptom: the loss barely moves
    )
    model = update_ratio.detect(f, cfg)[0]
    assert model.kind.value == "lr_too_low"
    assert model.severity.value == "warning"
    assert model.evidence["layers_disagree"] == 0
    assert "barely moved" in model.message


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
        {"a": np.ones(n)},
        param_norms={"a": np.ones(n)},
        update_norms={"a": np.full(n, ratio)},
        loss=OSCILLATING,
    )
    model = update_ratio.detect(f, cfg)[0]
    assert model.kind.value == "lr_too_high"
    assert model.severity.value == severity
    assert model.evidence["borderline"] == (severity == "info")


@pytest.mark.parametrize(("ratio", "kind"), [(0.1, "lr_too_high"), (1e-6, "lr_too_low")])
def test_out_of_band_without_symptom_is_a_note(
    frames_of: FramesOf, cfg: AnalysisConfig, ratio: float, kind: str
) -> None:
    n = 50
    f = frames_of(
        {"a": np.ones(n)},
        param_norms={"a": np.ones(n)},
        update_norms={"a": np.full(n, ratio)},
        loss=CONVERGED,
    )
    model = update_ratio.detect(f, cfg)[0]
    assert (model.kind.value, model.severity.value) == (kind, "info")
    assert model.evidence["symptoms"] == 0
    assert model.hint.startswith("Nothing to change while the loss behaves")


def test_schedule_peak_and_closure_optimizer(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 50
    lr = 0.5 * (1 + np.cos(np.pi * np.arange(n) / n)) * 0.4 + 1e-3  # cosine from 0.4
    kw = {
        "param_norms": {"a": np.ones(n)},
        "update_norms": {"a": np.full(n, 0.1)},
        "scalars": {"lr/0": lr},
        "loss": OSCILLATING,
    }
    model = update_ratio.detect(frames_of({"a": np.ones(n)}, **kw), cfg)[0]
    assert model.evidence["lr"] == pytest.approx(lr.max())  # the peak, not the median
    assert model.evidence["suggested_lr"] == pytest.approx(lr.max() / 100)
    assert "the whole schedule scaled alike" in model.hint
    lbfgs = frames_of({"a": np.ones(n)}, optimizer={"class": "LBFGS", "param_groups": []}, **kw)
    found = update_ratio.detect(lbfgs, cfg)
    assert [x.severity.value for x in found] == ["info"]
    assert "suggested_lr" not in found[0].evidence
    assert "closure optimizer (LBFGS)" in found[0].message
