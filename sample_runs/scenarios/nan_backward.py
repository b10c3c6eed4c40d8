"""NaN born in backward: an op in the middle of an MLP returns a NaN gradient at a known step.

``BadBackward`` is the identity in forward; at step ``NAN_STEP`` its backward hands NaN to the
layer below it (as a sqrt or a division at 0 would). ``fc2`` is the first parameter whose
gradient is NaN, at that step; the layers below it follow in the same backward pass, and after
Adam writes the NaN into the weights every later step is NaN everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import RECORD, batches, digits, seed_all

NAME = "nan_backward"
NAN_STEP = 60
CONFIG: dict[str, Any] = {
    "model": "MLP 64-128-128-128-10 ReLU",
    "optimizer": "Adam",
    "lr": 1e-3,
    "batch_size": 64,
    "steps": 100,
    "nan_step": NAN_STEP,
    "nan_after": "fc2",
    "seed": 0,
}
EXPECT: dict[str, Any] = {
    "must": [
        {
            "kind": "nonfinite",
            "tensor": ["fc2.weight", "fc2.bias"],
            "step_start": NAN_STEP,
            "severity_at_least": "error",
        },
    ],
    "must_not": ["exploding", "vanishing", "lr_too_high", "lr_too_low", "frozen"],
}


class _NaNGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


class BadBackward(nn.Module):
    """Passes activations through; its backward turns the gradient into NaN when ``armed``."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _NaNGrad.apply(x) if self.armed else x  # type: ignore[no-untyped-call]
        return out


class MLP(nn.Module):
    """fc1 -> fc2 -> (bad backward) -> fc3 -> out, ReLU between."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.fc2 = nn.Linear(128, 128)
        self.bad = BadBackward()
        self.fc3 = nn.Linear(128, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = self.bad(self.fc2(x))
        x = torch.relu(x)
        out: torch.Tensor = self.out(torch.relu(self.fc3(x)))
        return out


def train(root: Path) -> Path:
    """Train through the NaN step and beyond; returns the run directory."""
    from gradlog import Recorder

    gen = seed_all(CONFIG["seed"])
    x, y = digits(flat=True)
    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=CONFIG["lr"])
    with Recorder(
        model, optimizer, root=root, name=NAME, run_id=NAME, config=CONFIG, **RECORD
    ) as rec:
        for step, idx in enumerate(batches(len(x), CONFIG["batch_size"], CONFIG["steps"], gen)):
            model.bad.armed = step == NAN_STEP
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            torch.autograd.backward(loss)
            optimizer.step()
            rec.log(loss=loss)
            optimizer.zero_grad()
    return rec.run_dir
