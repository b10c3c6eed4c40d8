"""Dying ReLUs: SGD + momentum at lr 0.3 knocks most hidden units of a ReLU MLP into the dead zone.

Early large steps push the pre-activations of many units below zero for every input; such a unit
gets zero gradient forever. Over the run the share of units that never fire on the whole data set
climbs from 2% to ~80% in ``fc1`` and the weight gradients become ~90% exact zeros, while the
surviving units keep the loss going down slowly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sample_runs.scenarios._common import DigitsMLP, digits, record_training, seed_all

NAME = "dying_relu"
CONFIG: dict[str, Any] = {
    "model": "MLP 64-128-128-128-10 ReLU",
    "optimizer": "SGD",
    "lr": 0.3,
    "momentum": 0.9,
    "batch_size": 64,
    "steps": 200,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [
        {"kind": "dead", "tensor": "fc1.weight"},
        {"kind": "dead", "tensor": "fc2.weight"},
    ],
    "must_not": ["nonfinite", "vanishing", "frozen", "lr_too_low"],
}


def train(root: Path) -> Path:
    """Train the ReLU MLP; returns the run directory."""
    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=True)
    model = DigitsMLP((128, 128, 128))
    optimizer = torch.optim.SGD(model.parameters(), lr=CONFIG["lr"], momentum=CONFIG["momentum"])
    return record_training(root, NAME, CONFIG, model, optimizer, data=(x, y), gen=gen)
