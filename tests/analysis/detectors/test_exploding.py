import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import exploding
from tests.analysis.synth import FramesOf


def test_growth_global_and_per_tensor(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 200
    grow = np.exp(np.linspace(0, np.log(1e3), n)) * np.exp(rng.normal(0, 0.1, n))
    f = frames_of({"a": grow, "b": np.ones(n)})
    found = exploding.detect(f, cfg)
    assert [x.tensor for x in found] == [None, "a"]
    growth = found[1].evidence["growth"]
    assert isinstance(growth, float)
    assert growth > 100


def test_healthy_is_quiet(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 200
    f = frames_of({"a": np.exp(rng.normal(0, 0.3, n)), "b": np.ones(n)})
    assert exploding.detect(f, cfg) == []


def test_step_start_is_the_onset_of_sustained_growth(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    # flat (with noise and one early excursion) for 100 steps, then 10x per 10 steps, then NaN
    n = 140
    g = np.exp(rng.normal(0, 0.2, n))
    g[40] = 5.0  # an early excursion above 3x that comes back: not the onset
    g[100:130] *= 10 ** (np.arange(30) / 10)
    g[130:] = np.nan  # overflowed: no finite values left
    nf = np.zeros(n)
    nf[130:] = 3
    f = frames_of({"a": g, "b": np.ones(n)}, nonfinite={"a": nf})
    found = exploding.detect(f, cfg)
    assert [x.tensor for x in found] == [None, "a"]
    for x in found:
        assert x.step_start is not None
        assert 100 <= x.step_start <= 110  # the norm needs ~5 steps to grow past 3x
        assert x.step_end is not None
        assert x.step_end >= 129
