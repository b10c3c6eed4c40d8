import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import nonfinite
from tests.analysis.synth import FramesOf


def test_origin_is_most_output_side_tensor(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 20
    nf = {"in": np.zeros(n), "mid": np.zeros(n), "out": np.zeros(n)}
    nf["in"][12:] = 5
    nf["mid"][12:] = 5
    nf["out"][15:] = 5
    loss = np.linspace(2, 1, n)
    loss[13] = np.nan
    f = frames_of(
        {k: np.ones(n) for k in nf}, nonfinite=nf, loss=loss
    )  # backward order: out=0, mid=1, in=2
    found = nonfinite.detect(f, cfg)
    grad = found[0]
    assert grad.step_start == 12
    assert grad.tensor == "mid"
    assert grad.evidence["steps_affected"] == 8
    assert found[1].step_start == 13
    assert found[1].severity.value == "error"


def test_skipped_steps_are_not_errors(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    nf = {"w": np.array([0, 3, 0, 0])}
    f = frames_of(
        {"w": np.ones(4)},
        nonfinite=nf,
        skipped=np.array([False, True, False, False]),
        loss_scale=np.full(4, 1024.0),
    )
    assert nonfinite.detect(f, cfg) == []
