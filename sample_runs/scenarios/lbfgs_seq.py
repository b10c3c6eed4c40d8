"""PyTorch's time_sequence_prediction recipe at small scale: a two-cell LSTM learns sine waves
with LBFGS (lr 0.8, a closure per step) and MSE. Each step is a quasi-Newton step sized by the
curvature estimate; the recorder takes the gradients of the closure's first evaluation. A
healthy recipe: the update-to-weight band of first-order optimizers does not judge it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import RECORD, seed_all
from sample_runs.scenarios.gpt_char import HEALTHY_MUST_NOT

NAME = "lbfgs_seq"
CONFIG: dict[str, Any] = {
    "model": "LSTMCell x2 (24 units) + Linear",
    "data": "generated sine waves (period 20, random phase)",
    "optimizer": "LBFGS",
    "lr": 0.8,
    "max_iter": 6,
    "sequences": 24,
    "length": 40,
    "steps": 20,
    "seed": 0,
}
EXPECT: dict[str, Any] = {"must": [], "must_not": HEALTHY_MUST_NOT}


class Sequence(nn.Module):
    """Two LSTM cells and a linear read-out over a sequence, one value per time step."""

    def __init__(self, hidden: int = 24) -> None:
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h1 = c1 = h2 = c2 = torch.zeros(n, self.hidden, dtype=x.dtype)
        outs = []
        for t in range(x.shape[1]):
            h1, c1 = self.lstm1(x[:, t : t + 1], (h1, c1))
            h2, c2 = self.lstm2(h1, (h2, c2))
            outs.append(self.linear(h2))
        return torch.cat(outs, dim=1)


def train(root: Path, **overrides: Any) -> Path:
    """Train the recipe (``overrides`` change CONFIG, e.g. lr=...); returns the run directory."""
    from gradlog import Recorder

    config = {**CONFIG, **overrides}
    gen = seed_all(config["seed"])
    phase = torch.randint(0, 20, (config["sequences"], 1), generator=gen).float()
    t = torch.arange(config["length"] + 1).float()
    waves = torch.sin((t + phase) * 2 * torch.pi / 20)
    x, y = waves[:, :-1], waves[:, 1:]
    model = Sequence()
    opt = torch.optim.LBFGS(model.parameters(), lr=config["lr"], max_iter=config["max_iter"])
    with Recorder(model, opt, root=root, name=NAME, run_id=NAME, config=config, **RECORD) as rec:
        for _ in range(config["steps"]):

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                torch.autograd.backward(loss)
                return loss

            loss = opt.step(closure)  # type: ignore[no-untyped-call]
            rec.log(loss=loss)
    return rec.run_dir
