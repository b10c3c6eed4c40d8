"""A real NaN under AMP: the healthy :mod:`amp` recipe (float16 autocast on CPU, a GradScaler),
but the batch of step 120 holds a corrupted sample (a NaN feature). The loss of that step is
NaN, every gradient is NaN and the GradScaler skips the step, as it skips its routine fp16
overflows; this skip is not routine and must be named as a real NaN, with its step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import RECORD, DigitsMLP, batches, digits, seed_all
from sample_runs.scenarios.amp import CONFIG as AMP_CONFIG

NAME = "amp_nan"
NAN_STEP = 120
CONFIG: dict[str, Any] = {**AMP_CONFIG, "nan_step": NAN_STEP, "nan_in": "the batch (input)"}
EXPECT: dict[str, Any] = {
    "must": [
        {
            "kind": "nonfinite",
            "step_start": NAN_STEP,
            "step_tolerance": 1,
            "severity_at_least": "warning",
        },
    ],
    "must_not": [
        "precision",
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


def train(root: Path, **overrides: Any) -> Path:
    """Train under autocast with a GradScaler; returns the run directory."""
    from gradlog import Recorder

    config = {**CONFIG, **overrides}
    gen = seed_all(config["seed"])
    x, y = digits(flat=True)
    model = DigitsMLP((256, 256))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    scaler = torch.amp.GradScaler(
        "cpu", init_scale=config["init_scale"], growth_interval=config["growth_interval"]
    )
    with Recorder(
        model, optimizer, root=root, name=NAME, run_id=NAME, config=config, scaler=scaler, **RECORD
    ) as rec:
        for step, idx in enumerate(batches(len(x), config["batch_size"], config["steps"], gen)):
            xb = x[idx].clone()
            if step == NAN_STEP:
                xb[0, 5] = float("nan")  # a corrupted sample
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(xb), y[idx])
            torch.autograd.backward(scaler.scale(loss))
            scaler.step(optimizer)
            scaler.update()
            rec.log(loss=loss)
            optimizer.zero_grad()
    return rec.run_dir
