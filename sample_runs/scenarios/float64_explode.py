"""An explosion in float64: a ReLU regressor on the diabetes data, in double precision, trained by
SGD with momentum at a learning rate far above the stable one. Its gradients grow by orders of
magnitude per step, far past the float32 range (3.4e38, about 1e149 from step 22), and stay
finite in float64 for the whole run. Statistics stored in float32 would read inf; the stored
float32 global norm does, while the recorder's non-finite count stays 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import record_training, seed_all
from sample_runs.scenarios.exploding_sgd import _diabetes

NAME = "float64_explode"
CONFIG: dict[str, Any] = {
    "model": "MLP 10-32-32-1 (float64)",
    "data": "sklearn diabetes (standardised)",
    "optimizer": "SGD",
    "lr": 0.5,
    "momentum": 0.9,
    "batch_size": 32,
    "steps": 60,
    "seed": 0,
}
ONSET = 7
"""The step from which the gradients' largest |g| stays above 3x its level in the first tenth of
the run (0.5-1.6 over steps 0-6; 2.5 at step 7, 61 at step 8, ~1e149 from step 22): found by
replaying the recipe without the recorder (tests/sample_runs/test_new_scenarios.py checks it)."""
EXPECT: dict[str, Any] = {
    "must": [
        {
            "kind": "exploding",
            "step_start": ONSET,
            "step_tolerance": 1,
            "severity_at_least": "error",
        },
        {"kind": "divergence"},
        {"kind": "lr_too_high", "severity_at_least": "warning"},
    ],
    # the gradients stay finite in float64 all along: an overflowed float32 statistic is no NaN
    "must_not": [
        "nonfinite",
        "vanishing",
        "dead",
        "frozen",
        "lr_too_low",
        "plateau",
        "weight_decay",
    ],
}


def model() -> nn.Module:
    """The float64 ReLU regressor."""
    return nn.Sequential(
        nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1)
    ).double()


def train(root: Path, **overrides: Any) -> Path:
    """Train until (and past) the blow-up; returns the run directory."""
    config = {**CONFIG, **overrides}
    gen = seed_all(config["seed"])
    x, y = _diabetes()
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=config["lr"], momentum=config["momentum"])
    return record_training(
        root,
        NAME,
        config,
        m,
        opt,
        data=(x.double(), y.double()),
        gen=gen,
        loss_fn=nn.functional.mse_loss,
    )
