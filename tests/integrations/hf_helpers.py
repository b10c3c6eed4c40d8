"""Tiny models, data and run readers shared by the Hugging Face Trainer and accelerate tests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tests.recorder.helpers import part_files


class TinyRegressor(torch.nn.Module):
    """Linear(8, 16) -> Tanh -> Linear(16, 1) returning {"loss", "logits"} as HF models do.

    With ``fail_at`` the forward pass number ``fail_at`` (0-based) raises RuntimeError; every
    loss computed is kept in ``losses``.
    """

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(8, 16)
        self.out = torch.nn.Linear(16, 1)
        self.fail_at = fail_at
        self.calls = 0
        self.losses: list[float] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError(f"boom at forward {self.calls}")
        self.calls += 1
        logits = self.out(torch.tanh(self.hidden(x))).squeeze(-1)
        loss = torch.nn.functional.mse_loss(logits, labels)
        self.losses.append(float(loss.detach()))
        return {"loss": loss, "logits": logits}


def regression_data(n: int = 128, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` samples {"x": (8,), "labels": ()} of a smooth target."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = torch.sin(x[:, :4].sum(1)) + 0.5 * x[:, 4]
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def token_data(n: int, vocab: int, length: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` random token sequences for a causal language model (labels = inputs)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=gen)
    return [{"input_ids": ids[i], "labels": ids[i]} for i in range(n)]


def rel(a: float, b: float) -> float:
    """Relative difference of ``a`` from the reference ``b``."""
    return abs(a - b) / max(abs(b), 1e-30)


def _rows(run: Path, table: str, rank: int) -> list[dict[str, Any]]:
    parts = [pq.read_table(p) for p in part_files(run, table, rank)]
    return pa.concat_tables(parts).to_pylist() if parts else []


def recorded(run: Path, rank: int = 0) -> dict[str, Any]:
    """``rank``'s steps rows, scalars and per-step norm of its grad rows (sqrt of summed sumsq)
    of a run; duplicate rows fail."""
    steps = {row["step"]: row for row in _rows(run, "steps", rank)}
    scalars: dict[tuple[int, str], float] = {}
    for row in _rows(run, "scalars", rank):
        key = (row["step"], row["name"])
        assert key not in scalars, f"duplicate scalar {key}"
        scalars[key] = row["value"]
    sumsq: dict[int, float] = {}
    seen: set[tuple[int, str]] = set()
    for row in _rows(run, "tensors", rank):
        if row["kind"] == "grad":
            assert (row["step"], row["tensor"]) not in seen
            seen.add((row["step"], row["tensor"]))
            sumsq[row["step"]] = sumsq.get(row["step"], 0.0) + row["sumsq"]
    return {
        "steps": steps,
        "scalars": scalars,
        "row_norm": {step: math.sqrt(v) for step, v in sumsq.items()},
    }
