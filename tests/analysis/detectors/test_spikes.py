import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import spikes
from tests.analysis.synth import FramesOf


def test_event_first_tensor_and_loss_lag(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 300
    a = np.exp(rng.normal(0, 0.05, n))
    b = np.exp(rng.normal(0, 0.05, n))
    b[150] *= 50
    a[151] *= 50
    loss = 1 + rng.normal(0, 0.01, n)
    loss[153] = 10
    found = spikes.detect(frames_of({"a": a, "b": b}, loss=loss), cfg)
    assert len(found) == 1
    ev = found[0]
    assert ev.step_start == 150
    assert ev.tensor == "b"
    assert ev.evidence["loss_spike_lag"] == 3
    assert ev.evidence["tensors_spiking"] == 2


def test_noise_is_quiet(frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator) -> None:
    n = 500
    assert spikes.detect(frames_of({"a": np.exp(rng.normal(0, 0.1, n))}), cfg) == []
