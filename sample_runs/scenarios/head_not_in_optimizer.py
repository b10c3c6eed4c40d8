"""A head left out of the optimizer: the classifier ``out`` gets gradients but is never updated.

The optimizer is built over the hidden layers only (a common slip when a head is re-created after
the optimizer, or when param groups are assembled by hand). The head's weights stay exactly at
their initial values while its gradients are as large as anyone's (larger: the body scales its
features up to get through the fixed head, so the head's gradient norm grows ~450x; that growth
is real, so "exploding" is neither expected nor forbidden here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sample_runs.scenarios._common import DigitsMLP, digits, record_training, seed_all

NAME = "head_not_in_optimizer"
CONFIG: dict[str, Any] = {
    "model": "MLP 64-128-128-10 ReLU",
    "optimizer": "Adam (hidden layers only)",
    "lr": 1e-3,
    "batch_size": 64,
    "steps": 150,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [
        {"kind": "frozen", "tensor": "out.weight", "severity_at_least": "warning"},
        {"kind": "frozen", "tensor": "out.bias", "severity_at_least": "warning"},
    ],
    "must_not": [
        "nonfinite",
        "vanishing",
        "dead",
        "lr_too_high",
        "lr_too_low",
        "divergence",
    ],
}


def train(root: Path) -> Path:
    """Train with the head missing from the optimizer; returns the run directory."""
    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=True)
    model = DigitsMLP((128, 128))
    body = [p for name, p in model.named_parameters() if not name.startswith("out.")]
    optimizer = torch.optim.Adam(body, lr=CONFIG["lr"])
    return record_training(root, NAME, CONFIG, model, optimizer, data=(x, y), gen=gen)
