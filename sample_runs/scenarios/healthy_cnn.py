"""Healthy: the seed's small CNN on the 8x8 digits with Adam at lr 1e-3 (no pathology at all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.cnn_digits import DigitsCNN
from sample_runs.scenarios._common import RECORD, batches, digits, seed_all

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
    from gradlog import Recorder

    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=False)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    loss_fn = nn.CrossEntropyLoss()
    with Recorder(
        model, optimizer, root=root, name=NAME, run_id=NAME, config=CONFIG, **RECORD
    ) as rec:
        for idx in batches(len(x), CONFIG["batch_size"], CONFIG["steps"], gen):
            loss = loss_fn(model(x[idx]), y[idx])
            torch.autograd.backward(loss)
            optimizer.step()
            rec.log(loss=loss)
            optimizer.zero_grad()
    return rec.run_dir
