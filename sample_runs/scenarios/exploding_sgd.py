"""Exploding: SGD with momentum at a learning rate far above the stable one on a ReLU regressor.

The MLP regresses disease progression on scikit-learn's bundled diabetes data (MSE). At lr 0.3
with momentum 0.9 the iterates leave the stable region after ~30 steps: the gradient norm grows
by orders of magnitude within a few steps, overflows to inf and the run turns NaN. Nothing is
injected; the learning rate alone does it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import record_training, seed_all

NAME = "exploding_sgd"
CONFIG: dict[str, Any] = {
    "model": "MLP 10-64-64-1 ReLU",
    "data": "sklearn diabetes (standardised)",
    "optimizer": "SGD",
    "lr": 0.3,
    "momentum": 0.9,
    "batch_size": 32,
    "steps": 120,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [
        {"kind": "exploding", "step_start": 29, "step_tolerance": 6},
        {"kind": "nonfinite", "step_start": 35},
        {"kind": "divergence"},
        {"kind": "lr_too_high"},
    ],
    "must_not": ["vanishing", "dead", "frozen", "lr_too_low", "plateau"],
}


def _diabetes() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.float32).unsqueeze(1)
    return (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()


def train(root: Path, **overrides: Any) -> Path:
    """Train until (and past) the blow-up; returns the run directory."""
    config = {**CONFIG, **overrides}
    gen = seed_all(config["seed"])
    x, y = _diabetes()
    model = nn.Sequential(
        nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    return record_training(
        root, NAME, config, model, optimizer, data=(x, y), gen=gen, loss_fn=nn.functional.mse_loss
    )
