"""Healthy: the seed's small CNN on the 8x8 digits with Adam at lr 1e-3 (no pathology at all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sample_runs.cnn_digits import DigitsCNN
from sample_runs.scenarios._common import digits, record_training, seed_all

NAME = "healthy_cnn"
CONFIG: dict[str, Any] = {
    "model": "DigitsCNN",
    "optimizer": "Adam",
    "lr": 1e-3,
    "batch_size": 64,
    "steps": 150,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [],
    "must_not": [
        "nonfinite",
        "exploding",
        "vanishing",
        "spike",
        "dead",
        "frozen",
        "lr_too_high",
        "lr_too_low",
        "divergence",
        "precision",
        "plateau",
    ],
}


def train(root: Path) -> Path:
    """Train the CNN with the recorder attached; returns the run directory."""
    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=False)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    return record_training(root, NAME, CONFIG, model, optimizer, data=(x, y), gen=gen)
