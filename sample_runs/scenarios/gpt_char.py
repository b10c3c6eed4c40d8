"""A GPT-style character model trained as nanoGPT does: AdamW (weight decay 0.1, betas 0.9/0.95),
gradient accumulation over 2 micro-batches, clipping at 1.0 with torch's clip_grad_norm_ and a
warmup + cosine schedule, on a generated corpus. A healthy recipe: nothing should be alarming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sample_runs.scenarios._common import RECORD, seed_all
from sample_runs.scenarios._text import GPT, MLP, corpus, cosine, encode, windows

NAME = "gpt_char"
CONFIG: dict[str, Any] = {
    "model": "GPT 2 layers, d 32, 4 heads, ctx 16 (tied head)",
    "data": "generated sentences, characters",
    "optimizer": "AdamW",
    "lr": 3e-3,
    "weight_decay": 0.1,
    "betas": (0.9, 0.95),
    "accumulation": 2,
    "micro_batch": 8,
    "ctx": 16,
    "clip": 1.0,
    "warmup": 10,
    "steps": 100,
    "seed": 0,
}
HEALTHY_MUST_NOT = [
    "nonfinite",
    "exploding",
    "vanishing",
    "spike",
    "dead",
    "frozen",
    "lr_too_high",
    "lr_too_low",
    "divergence",
    "plateau",
    "clipping",
    "weight_decay",
]
EXPECT: dict[str, Any] = {"must": [], "must_not": HEALTHY_MUST_NOT}


def run(root: Path, config: dict[str, Any], name: str, nan_step: int | None = None) -> Path:
    """Train the recipe in ``config``; with ``nan_step`` the first block's MLP makes a NaN
    gradient at that step (clipping still on). Returns the run directory."""
    from gradlog import Recorder

    gen = seed_all(config["seed"])
    data, vocab = encode(corpus())
    model = GPT(len(vocab), config["ctx"])
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=config["lr"],
        weight_decay=config["weight_decay"],
        betas=config["betas"],
    )
    mlp = model.h[0].mlp
    assert isinstance(mlp, MLP)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine(config["warmup"], config["steps"]))
    with Recorder(model, opt, root=root, name=name, run_id=name, config=config, **RECORD) as rec:
        for step in range(config["steps"]):
            total = 0.0
            for micro in range(config["accumulation"]):
                mlp.armed = step == nan_step and micro == 0
                x, y = windows(data, config["micro_batch"], config["ctx"], gen)
                loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
                torch.autograd.backward(loss / config["accumulation"])
                total += float(loss) / config["accumulation"]
            nn.utils.clip_grad_norm_(model.parameters(), config["clip"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            rec.log(loss=total)
    return rec.run_dir


def train(root: Path, **overrides: Any) -> Path:
    """Train the healthy recipe (``overrides`` change CONFIG, e.g. lr=...)."""
    return run(root, {**CONFIG, **overrides}, NAME)
