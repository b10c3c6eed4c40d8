"""Vanishing: an 8-layer sigmoid MLP on the digits with SGD + momentum at a sane learning rate.

Each sigmoid multiplies the backward signal by at most 1/4, so the input-side layers receive
gradients 6 orders of magnitude smaller than the output layer, and the loss stays at ln(10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import digits, record_training, seed_all

NAME = "vanishing_sigmoid"
DEPTH = 8
CONFIG: dict[str, Any] = {
    "model": f"MLP {DEPTH}x64 sigmoid",
    "optimizer": "SGD",
    "lr": 0.1,
    "momentum": 0.9,
    "batch_size": 64,
    "steps": 200,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [
        {"kind": "vanishing", "severity_at_least": "warning"},
        {"kind": "plateau"},
    ],
    "must_not": ["nonfinite", "exploding", "dead", "frozen", "lr_too_high", "lr_too_low", "spike"],
}


class SigmoidMLP(nn.Module):
    """``DEPTH`` Linear+Sigmoid blocks named ``layers.<i>`` and an output layer ``out``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(DEPTH))
        self.out = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        out: torch.Tensor = self.out(x)
        return out


def train(root: Path) -> Path:
    """Train the deep sigmoid MLP; returns the run directory."""
    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=True)
    model = SigmoidMLP()
    optimizer = torch.optim.SGD(model.parameters(), lr=CONFIG["lr"], momentum=CONFIG["momentum"])
    return record_training(root, NAME, CONFIG, model, optimizer, data=(x, y), gen=gen)
