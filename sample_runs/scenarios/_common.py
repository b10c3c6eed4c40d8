"""Shared pieces of the scenario scripts: seeding, real data, batching and the recorder settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

RECORD: dict[str, Any] = {"grads": True, "params": 5, "updates": 5, "hists": 5}
"""Recorder schedules of every scenario: gradient statistics every step, parameters, updates and
histograms every 5 steps (enough for the analysis, small enough to commit)."""


def seed_all(seed: int) -> torch.Generator:
    """Seed torch's global generator (weight init) and return a generator for batch order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed + 1)


def digits(*, flat: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled 8x8 digits in [0, 1]: ``[N, 64]`` when ``flat``, else ``[N, 1, 8, 8]``."""
    from sample_runs.cnn_digits import load_digits_tensors

    x, y = load_digits_tensors()
    return (x.flatten(1) if flat else x), y


def batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` index batches of ``batch_size`` over ``n`` samples, reshuffled every epoch."""
    per_epoch = n // batch_size
    order = torch.randperm(n, generator=gen)
    for step in range(steps):
        i = step % per_epoch
        if i == 0 and step > 0:
            order = torch.randperm(n, generator=gen)
        yield order[i * batch_size : (i + 1) * batch_size]


class DigitsMLP(nn.Module):
    """ReLU MLP on flattened digits: hidden layers ``fc1..fcN`` and a classifier ``out``."""

    def __init__(
        self, hidden: tuple[int, ...] = (128, 128), inputs: int = 64, classes: int = 10
    ) -> None:
        super().__init__()
        widths = (inputs, *hidden)
        self.hidden = len(hidden)
        for i in range(self.hidden):
            self.add_module(f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))
        self.out = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.hidden):
            x = torch.relu(getattr(self, f"fc{i + 1}")(x))
        out: torch.Tensor = self.out(x)
        return out


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def record_training(
    root: Path,
    name: str,
    config: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    data: tuple[torch.Tensor, torch.Tensor],
    gen: torch.Generator,
    loss_fn: LossFn = nn.functional.cross_entropy,
) -> Path:
    """The plain recorded loop most scenarios share: ``config['steps']`` batches of
    ``config['batch_size']``, one optimizer step each, the loss logged. Returns the run dir."""
    from gradlog import Recorder

    x, y = data
    with Recorder(
        model, optimizer, root=root, name=name, run_id=name, config=config, **RECORD
    ) as rec:
        for idx in batches(len(x), config["batch_size"], config["steps"], gen):
            loss = loss_fn(model(x[idx]), y[idx])
            torch.autograd.backward(loss)
            optimizer.step()
            rec.log(loss=loss)
            optimizer.zero_grad()
    return rec.run_dir
