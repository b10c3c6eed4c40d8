"""AMP: float16 autocast on CPU with a GradScaler, on the digits MLP with Adam (a healthy run).

The scaler starts at 2**16 and doubles every ``growth_interval`` steps; when the scaled float16
backward overflows, it skips that step and halves the scale: 5 of the 200 steps are skipped,
each with an inf in a gradient, which is the scaler working as designed. The recorder gets
``scaler=`` so the loss scale and the skipped steps are logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import RECORD, DigitsMLP, batches, digits, seed_all

NAME = "amp"
CONFIG: dict[str, Any] = {
    "model": "MLP 64-256-256-10 ReLU",
    "optimizer": "Adam",
    "lr": 1e-3,
    "batch_size": 64,
    "steps": 200,
    "autocast": "cpu float16",
    "init_scale": 2.0**16,
    "growth_interval": 20,
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    # The scaler's routine overflow skips (5 of 200 steps) deserve an info note, not an alarm.
    "must": [{"kind": "precision"}],
    "must_not": [
        "nonfinite",
        "precision",
        "exploding",
        "vanishing",
        "dead",
        "frozen",
        "lr_too_high",
        "lr_too_low",
        "divergence",
    ],
}


def train(root: Path) -> Path:
    """Train under autocast with a GradScaler; returns the run directory."""
    from gradlog import Recorder

    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=True)
    model = DigitsMLP((256, 256))
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    scaler = torch.amp.GradScaler(
        "cpu", init_scale=CONFIG["init_scale"], growth_interval=CONFIG["growth_interval"]
    )
    with Recorder(
        model, optimizer, root=root, name=NAME, run_id=NAME, config=CONFIG, scaler=scaler, **RECORD
    ) as rec:
        for idx in batches(len(x), CONFIG["batch_size"], CONFIG["steps"], gen):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            torch.autograd.backward(scaler.scale(loss))
            scaler.step(optimizer)
            scaler.update()
            rec.log(loss=loss)
            optimizer.zero_grad()
    return rec.run_dir
