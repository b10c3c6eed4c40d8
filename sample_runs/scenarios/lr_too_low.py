"""Learning rate far too low: the digits MLP with SGD at lr 1e-4 (a healthy run uses ~0.1).

Gradients are perfectly healthy, but each update moves the weights by ~1e-6 of their norm and
the loss barely leaves ln(10) in 200 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sample_runs.scenarios._common import DigitsMLP, digits, record_training, seed_all

NAME = "lr_too_low"
CONFIG: dict[str, Any] = {
    "model": "MLP 64-128-128-10 ReLU",
    "optimizer": "SGD",
    "lr": 1e-4,
    "batch_size": 64,
    "steps": 200,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [{"kind": "lr_too_low", "severity_at_least": "warning"}],
    "must_not": [
        "nonfinite",
        "exploding",
        "vanishing",
        "spike",
        "dead",
        "frozen",
        "lr_too_high",
        "divergence",
    ],
}


def train(root: Path, **overrides: Any) -> Path:
    """Train the MLP at a tiny learning rate; returns the run directory."""
    config = {**CONFIG, **overrides}
    gen = seed_all(config["seed"])
    x, y = digits(flat=True)
    model = DigitsMLP((128, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    return record_training(root, NAME, config, model, optimizer, data=(x, y), gen=gen)
