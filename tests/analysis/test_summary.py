import numpy as np
import pytest

from gradlog.analysis.detectors.update_ratio import ratio_profile
from gradlog.analysis.result import RunSummary
from gradlog.analysis.summary import peak_lr, run_summary
from tests.analysis.synth import FramesOf


def test_update_ratio_profile_and_peak_lr(frames_of: FramesOf) -> None:
    n = 50
    ratio = np.where(np.arange(n) == 0, 0.8, 2e-3)  # Adam's first step at a large lr
    f = frames_of(
        {"w": np.ones(n), "v": np.ones(n)},
        param_norms={"w": np.ones(n), "v": np.ones(n)},
        update_norms={"w": ratio, "v": ratio / 2},
        scalars={"lr/0": np.r_[np.linspace(0, 0.03, 10), np.full(n - 10, 0.03)]},
    )
    profile = ratio_profile(f)
    assert profile is not None
    assert profile["peak"] == pytest.approx(0.6)  # median over the two tensors at step 0
    assert profile["peak_step"] == 0
    assert profile["median"] == pytest.approx(1.5e-3)
    assert peak_lr(f) == pytest.approx(0.03)  # the schedule's peak, not its start
    assert run_summary(f).update_ratio_peak == pytest.approx(0.6)


def test_summary_without_updates_or_lr_scalar(frames_of: FramesOf) -> None:
    f = frames_of(
        {"w": np.ones(20)},
        optimizer={"class": "SGD", "param_groups": [{"lr": 0.1}, {"lr": 0.5}]},
    )
    assert ratio_profile(f) is None
    assert run_summary(f) == RunSummary(lr=0.5)
