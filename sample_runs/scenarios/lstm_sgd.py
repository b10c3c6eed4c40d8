"""PyTorch's word_language_model recipe at small scale: a 2-layer LSTM language model trained with
plain SGD at lr 20 and gradient clipping at 0.25 (its published defaults), here on generated
characters. The tight clip fires on most steps, making the steps normalised ones of length
lr x 0.25: that is the recipe, and it trains well, so nothing should be alarming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import RECORD, seed_all
from sample_runs.scenarios._text import LSTMLM, corpus, encode, windows
from sample_runs.scenarios.gpt_char import HEALTHY_MUST_NOT

NAME = "lstm_sgd"
CONFIG: dict[str, Any] = {
    "model": "LSTM LM, 2 layers, 32 units",
    "data": "generated sentences, characters",
    "optimizer": "SGD",
    "lr": 20.0,
    "clip": 0.25,
    "batch_size": 16,
    "bptt": 16,
    "steps": 120,
    "seed": 0,
}
EXPECT: dict[str, Any] = {"must": [], "must_not": HEALTHY_MUST_NOT}


def train(root: Path, **overrides: Any) -> Path:
    """Train the recipe (``overrides`` change CONFIG, e.g. lr=...); returns the run directory."""
    from gradlog import Recorder

    config = {**CONFIG, **overrides}
    gen = seed_all(config["seed"])
    data, vocab = encode(corpus())
    model = LSTMLM(len(vocab))
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    with Recorder(model, opt, root=root, name=NAME, run_id=NAME, config=config, **RECORD) as rec:
        for _ in range(config["steps"]):
            x, y = windows(data, config["batch_size"], config["bptt"], gen)
            loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            torch.autograd.backward(loss)
            nn.utils.clip_grad_norm_(model.parameters(), config["clip"])
            opt.step()
            opt.zero_grad()
            rec.log(loss=loss)
    return rec.run_dir
