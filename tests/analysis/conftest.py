from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.frames import DETECTOR_COLUMNS, RunFrames, build_frames
from gradlog.analysis.loading import load_run
from tests.analysis.synth import FramesOf, make_run


@pytest.fixture
def frames_of(tmp_path: Path) -> FramesOf:
    """Build a synthetic run and return its frames: frames_of(grad_norms, **make_run kwargs)."""
    counter = iter(range(1000))

    def build(grad_norms: dict[str, np.ndarray], **kw: Any) -> RunFrames:
        run = make_run(tmp_path, f"run{next(counter)}", grad_norms, **kw)
        return build_frames(load_run(run), DETECTOR_COLUMNS)  # as analyze() builds them

    return build


@pytest.fixture
def cfg() -> AnalysisConfig:
    return AnalysisConfig()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
