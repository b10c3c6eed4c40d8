"""Loss spike: a healthy Adam run on the digits where one batch arrives corrupted.

At step ``SPIKE_STEP`` the batch's pixels arrive on their raw 0..16 scale instead of 0..1 (a
preprocessing slip): the loss jumps ~8x and the gradient norm ~20x for that one step, then
Adam's bounded steps let the run recover within ~15 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import RECORD, DigitsMLP, batches, digits, seed_all

NAME = "loss_spike"
SPIKE_STEP = 120
CONFIG: dict[str, Any] = {
    "model": "MLP 64-128-128-10 ReLU",
    "optimizer": "Adam",
    "lr": 1e-3,
    "batch_size": 64,
    "steps": 200,
    "corrupt_step": SPIKE_STEP,
    "corrupt_scale": 16.0,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [{"kind": "spike", "step_start": SPIKE_STEP, "step_tolerance": 1}],
    "must_not": [
        "nonfinite",
        "exploding",
        "vanishing",
        "dead",
        "frozen",
        "lr_too_high",
        "lr_too_low",
        "divergence",
        "plateau",
    ],
}


def train(root: Path) -> Path:
    """Train with one corrupted batch; returns the run directory."""
    from gradlog import Recorder

    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=True)
    model = DigitsMLP((128, 128))
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    with Recorder(
        model, optimizer, root=root, name=NAME, run_id=NAME, config=CONFIG, **RECORD
    ) as rec:
        for step, idx in enumerate(batches(len(x), CONFIG["batch_size"], CONFIG["steps"], gen)):
            inputs = x[idx] * CONFIG["corrupt_scale"] if step == SPIKE_STEP else x[idx]
            loss = nn.functional.cross_entropy(model(inputs), y[idx])
            torch.autograd.backward(loss)
            optimizer.step()
            rec.log(loss=loss)
            optimizer.zero_grad()
    return rec.run_dir
