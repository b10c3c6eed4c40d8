import pytest

from gradlog.analysis import DETECTORS, detector
from gradlog.errors import ConfigError


def test_duplicate_detector_name_is_refused() -> None:
    assert "spikes" in DETECTORS
    with pytest.raises(ConfigError, match="already registered"):
        detector("spikes")(lambda frames, cfg: [])
