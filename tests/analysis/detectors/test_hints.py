import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import adam_eps, batch_size, clipping, warmup, weight_decay
from tests.analysis.synth import FramesOf


def test_clipping_fires_too_often(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 100
    pre = np.exp(rng.normal(1, 0.2, n))
    scalars = {"grad_norm_preclip": pre, "grad_clip_limit": np.full(n, 1.0)}
    slow = np.linspace(2.0, 1.95, n)  # the loss barely moves: the tight clip hurts
    f = frames_of({"a": np.full(n, 1.0)}, scalars=scalars, loss=slow)  # post-clip = 1
    (found,) = clipping.detect(f, cfg)
    assert found.severity.value == "warning"
    assert found.evidence["fired_share"] == 1.0
    assert found.evidence["clip_limit"] == 1.0
    assert "clipping at 1 fired on 100% of steps" in found.message
    assert found.evidence["suggested_max_norm"] == pytest.approx(np.percentile(pre, 99))
    # the same clipping on a loss that falls and converges is a recipe (normalised steps)
    converged = 0.2 + 2.0 * np.exp(-np.arange(n) / 10.0)
    f = frames_of({"a": np.full(n, 1.0)}, scalars=scalars, loss=converged)
    (found,) = clipping.detect(f, cfg)
    assert found.severity.value == "info"
    assert found.hint == "Nothing to change while the loss behaves."


def test_clipping_that_fires_sometimes_keeps_its_threshold(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 100
    pre = np.exp(rng.normal(0, 0.5, n))
    post = np.minimum(pre, 2.0)
    scalars = {"grad_norm_preclip": pre, "grad_clip_limit": np.full(n, 2.0)}
    (found,) = clipping.detect(frames_of({"a": post}, scalars=scalars), cfg)
    assert found.severity.value == "info"
    assert found.evidence["fired_share"] == pytest.approx(np.mean(pre > 2.0))
    assert "at 2 fired on" in found.message
    assert "keep it" in found.hint


def test_warmup(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 200
    g = np.ones(n)
    g[:5] = 50
    (found,) = warmup.detect(frames_of({"a": g}, scalars={"lr/0": np.full(n, 0.1)}), cfg)
    assert found.kind.value == "warmup"
    assert found.evidence["factor"] == pytest.approx(50)
    ramp = np.minimum(1, np.arange(n) / 20 + 0.01) * 0.1
    assert warmup.detect(frames_of({"a": g}, scalars={"lr/0": ramp}), cfg) == []


def test_warmup_is_info_when_the_loss_falls_through_the_large_norms(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    # a fast-fitting classifier: norms shrink with the loss (2.3 -> 0.02), no instability
    n = 150
    t = np.arange(n)
    loss = 0.02 + 2.3 * np.exp(-t / 4) * np.exp(rng.normal(0, 0.02, n))
    g = 0.3 + 3.5 * np.exp(-t / 6)
    (found,) = warmup.detect(frames_of({"a": g}, loss=loss), cfg)
    assert found.severity.value == "info"
    assert found.evidence["loss_fell_steadily"] == 1
    # the same norms with a loss that jumps above its start early on: a warning
    bad = loss.copy()
    bad[3] = 5.0
    (found,) = warmup.detect(frames_of({"a": g}, loss=bad), cfg)
    assert found.severity.value == "warning"
    assert found.evidence["loss_fell_steadily"] == 0


def test_adam_eps(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 20
    opt = {"class": "Adam", "param_groups": [{"lr": 1e-3, "eps": 1e-8}]}
    f = frames_of({"a": np.full(n, 1e-8), "b": np.ones(n)}, optimizer=opt)  # rms of a = 1e-9
    (found,) = adam_eps.detect(f, cfg)
    assert found.tensor == "a"
    assert found.evidence["min_grad_rms"] == pytest.approx(1e-9, rel=1e-3)


def test_weight_decay(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 50
    grow = np.linspace(1, 3, n)
    (found,) = weight_decay.detect(frames_of({"a": np.ones(n)}, param_norms={"a": grow}), cfg)
    assert found.kind.value == "weight_decay"
    assert found.evidence["ratio"] == pytest.approx(grow[40] / 1)


def test_gradient_noise_scale_matches_formula(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 50
    big = np.full(n, 2.0)
    small = np.full(n, 4.0)
    f = frames_of(
        {"a": big},
        scalars={"grad_norm_small": small},
        world_size=1,
        config={"batch_size": 32, "grad_accum": 8},
    )
    (found,) = batch_size.detect(f, cfg)
    bs, bb = 32.0, 256.0
    g2 = (bb * 4 - bs * 16) / (bb - bs)
    tr = (16 - 4) / (1 / bs - 1 / bb)
    assert found.evidence["b_simple"] == pytest.approx(tr / g2)
