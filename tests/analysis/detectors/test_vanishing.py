import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import vanishing
from tests.analysis.synth import FramesOf


def test_depth_profile(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 40
    names = [f"l{i}" for i in range(8)]
    grads = {t: np.full(n, 10.0 ** (-(7 - i))) for i, t in enumerate(names)}  # input side tiny
    params = {t: np.ones(n) for t in names}
    found = vanishing.detect(frames_of(grads, param_norms=params), cfg)
    assert len(found) == 1
    assert found[0].tensor == "l0"
    ratio = found[0].evidence["ratio_median"]
    assert isinstance(ratio, float)
    assert ratio < 1e-3


def test_flat_profile_is_quiet(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 40
    grads = {f"l{i}": np.ones(n) for i in range(8)}
    assert vanishing.detect(frames_of(grads, param_norms=grads), cfg) == []
