import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import precision
from tests.analysis.synth import FramesOf


def test_underflow_after_loss_scale_and_skips(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 40
    skipped = np.zeros(n, dtype=bool)
    skipped[::4] = True
    f = frames_of(
        {"a": np.ones(n), "b": np.ones(n)},
        hist_exp={"a": -30, "b": -5},
        loss_scale=np.full(n, 2.0**4),
        skipped=skipped,
    )
    found = precision.detect(f, cfg)
    under = found[0]
    # a: 2^-30 * 2^4 = 2^-26 < 2^-24 flushes; b: 2^-1 fine -> half of the values
    assert under.evidence["share_below_fp16_normal"] == 0.5
    assert under.evidence["share_flush_fp16"] == 0.5
    assert under.severity.value == "warning"
    assert found[1].evidence["skipped_steps"] == 10


def test_rare_skips_are_an_info_note(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 200
    skipped = np.zeros(n, dtype=bool)
    skipped[[50, 120, 180]] = True  # 1.5%: the GradScaler probing its scale
    f = frames_of(
        {"a": np.ones(n)}, loss_scale=np.full(n, 2.0**16), skipped=skipped, hist_exp={"a": -5}
    )
    (found,) = precision.detect(f, cfg)
    assert found.severity.value == "info"
    assert found.evidence["skipped_steps"] == 3
    assert found.step_start == 50
    assert found.step_end == 180
