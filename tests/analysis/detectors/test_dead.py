from typing import Any

import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.detectors import dead
from tests.analysis.synth import FramesOf


def _cat(name: str, depth: int, in_opt: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [10, 10],
        "numel": 100,
        "depth": depth,
        "backward_order": 0,
        "requires_grad": True,
        "in_optimizer": in_opt,
    }


def test_dead_frozen_and_dying(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 60
    zf = np.concatenate([np.zeros(30), np.full(30, 0.8)])
    cat = [_cat("zero", 0), _cat("dying", 1), _cat("notopt", 2, False), _cat("missing", 3)]
    f = frames_of(
        {"zero": np.zeros(n), "dying": np.ones(n), "notopt": np.ones(n)},
        zero_frac={"zero": np.ones(n), "dying": zf},
        catalogue=cat,
    )
    got = {(x.kind.value, x.tensor) for x in dead.detect(f, cfg)}
    assert got == {("dead", "missing"), ("dead", "zero"), ("frozen", "notopt"), ("dead", "dying")}
