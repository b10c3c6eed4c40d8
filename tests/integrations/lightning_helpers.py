"""Tiny LightningModules, data and run readers shared by the Lightning callback tests and the
DDP worker.

Each module keeps Lightning's own numbers as references: the global gradient norm that
``lightning.pytorch.utilities.grad_norm`` reports in ``on_before_optimizer_step`` (after
accumulation and unscaling, before clipping), the norm after Lightning's clipping, and the
loss of every micro-batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as lp
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from lightning.pytorch.utilities import grad_norm
from torch.utils.data import DataLoader, TensorDataset

from tests.recorder.helpers import part_files

TOTAL = "grad_2.0_norm_total"  # grad_norm's key for the norm of all gradients together


def trainer_kwargs() -> dict[str, Any]:
    """Trainer settings of every test: one CPU device, nothing but the fit itself."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }


def regression_data(
    batches: int, *, batch_size: int = 8, seed: int = 0
) -> DataLoader[tuple[torch.Tensor, ...]]:
    """``batches`` batches of (x, y), x ~ N(0, 1) in R^6 and y ~ N(0, 9) in R^2, unshuffled."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * batch_size, 6, generator=gen)
    y = 3 * torch.randn(batches * batch_size, 2, generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def total_norm(grads: list[torch.Tensor]) -> float:
    """L2 norm of all elements of ``grads``, in float64."""
    return math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads))


class Regression(lp.LightningModule):
    """Linear(6, 16) -> Tanh -> Linear(16, 2), MSE loss, SGD; keeps Lightning's numbers.

    With ``fail_at`` the training step number ``fail_at`` (0-based) raises RuntimeError.
    """

    def __init__(self, lr: float = 0.1, fail_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        )
        self.lr = lr
        self.fail_at = fail_at
        self.calls = 0
        self.reference: list[float] = []  # grad_norm total per optimizer step (before clipping)
        self.applied: list[float] = []  # global norm after Lightning's clipping, per step
        self.scales: list[float] = []  # GradScaler scale per step (16-mixed)
        self.micro_losses: list[tuple[int, float]] = []  # (global_step, loss) per micro-batch

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise RuntimeError(f"boom at training step {self.calls}")
        self.calls += 1
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.micro_losses.append((self.trainer.global_step, loss.item()))
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("loss", loss)  # the callback's own per-step mean must win over this metric
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Runs after the callbacks' hook and before Lightning clips.
        self.reference.append(float(grad_norm(self, norm_type=2)[TOTAL]))
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None:
            self.scales.append(float(scaler.get_scale()))

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.applied.append(total_norm([p.grad for p in self.parameters() if p.grad is not None]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TinyGAN(lp.LightningModule):
    """A generator and a discriminator, each with its own SGD, trained by manual optimization;
    keeps grad_norm of the optimizer's own module at each of its steps."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6)
        )
        self.discriminator = torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )
        self.noise = torch.Generator().manual_seed(1)
        self.reference: dict[str, list[float]] = {"generator": [], "discriminator": []}
        self.d_losses: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        (real,) = batch
        optimizers = self.optimizers()
        assert isinstance(optimizers, list)
        opt_g, opt_d = optimizers
        n = real.shape[0]
        ones, zeros = torch.ones(n, 1), torch.zeros(n, 1)
        fake = self.generator(torch.randn(n, 4, generator=self.noise))
        g_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            self.discriminator(fake), ones
        )
        opt_g.zero_grad()
        self.manual_backward(g_loss)  # also fills the discriminator's .grad: not opt_g's
        opt_g.step()
        d_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            self.discriminator(real), ones
        ) + torch.nn.functional.binary_cross_entropy_with_logits(
            self.discriminator(fake.detach()), zeros
        )
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.d_losses.append(d_loss.item())
        # returns nothing: the only loss a run gets is the metric logged as "loss"
        self.log_dict({"g_loss": g_loss, "loss": d_loss})

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        which = "generator" if optimizer is self.trainer.optimizers[0] else "discriminator"
        module = self.generator if which == "generator" else self.discriminator
        self.reference[which].append(float(grad_norm(module, norm_type=2)[TOTAL]))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(self.generator.parameters(), lr=0.05),
            torch.optim.SGD(self.discriminator.parameters(), lr=0.05),
        ]


def gan_data(batches: int, *, batch_size: int = 8) -> DataLoader[tuple[torch.Tensor, ...]]:
    """``batches`` batches of "real" samples in R^6."""
    gen = torch.Generator().manual_seed(2)
    real = 0.5 * torch.randn(batches * batch_size, 6, generator=gen) + 1.0
    return DataLoader(TensorDataset(real), batch_size=batch_size)


# ----------------------------------------------------------------------------- reading runs
def rank_rows(run: Path, table: str, rank: int = 0) -> list[dict[str, Any]]:
    """All rows of ``table`` written by ``rank``."""
    parts = [pq.read_table(p) for p in part_files(run, table, rank)]
    rows: list[dict[str, Any]] = pa.concat_tables(parts).to_pylist() if parts else []
    return rows


@dataclass
class Recorded:
    """What a run holds for one rank, keyed by step."""

    steps: dict[int, dict[str, Any]]  # the steps table
    scalars: dict[tuple[int, str], float]
    grad_rows: dict[int, list[dict[str, Any]]]  # kind=grad rows of the tensors table

    def preclip(self, step: int) -> float:
        """The recorded norm before clipping: grad_norm_preclip where the step was clipped,
        else the step's grad_norm."""
        pre = self.scalars.get((step, "grad_norm_preclip"))
        return float(self.steps[step]["grad_norm"]) if pre is None else pre

    def norm_from_rows(self, step: int) -> float:
        """sqrt of the sum of sumsq over the step's per-tensor gradient rows."""
        return math.sqrt(sum(r["sumsq"] for r in self.grad_rows[step]))


def read_recorded(run: Path, rank: int = 0) -> Recorded:
    steps: dict[int, dict[str, Any]] = {}
    for row in rank_rows(run, "steps", rank):
        assert row["step"] not in steps, f"duplicate step {row['step']}"
        steps[row["step"]] = row
    scalars: dict[tuple[int, str], float] = {}
    for row in rank_rows(run, "scalars", rank):
        key = (row["step"], row["name"])
        assert key not in scalars, f"duplicate scalar {key}"
        scalars[key] = row["value"]
    grad_rows: dict[int, list[dict[str, Any]]] = {}
    for row in rank_rows(run, "tensors", rank):
        if row["kind"] == "grad":
            grad_rows.setdefault(row["step"], []).append(row)
    return Recorded(steps, scalars, grad_rows)


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def assert_norms_match(run: Path, reference: list[float], rank: int = 0) -> float:
    """One recorded step per reference step, and on every step the recorded pre-clip norm and
    the norm of the per-tensor rows within 1e-5 of Lightning's; returns the largest relative
    difference. A non-finite reference (a step the GradScaler skipped) must be recorded as a
    skipped step with non-finite gradients."""
    got = read_recorded(run, rank)
    assert sorted(got.steps) == list(range(len(reference))), (sorted(got.steps), len(reference))
    worst = 0.0
    for step, want in enumerate(reference):
        if not math.isfinite(want):
            assert got.steps[step]["skipped"] is True, step
            assert math.isnan(got.preclip(step)), step
            assert sum(r["nonfinite"] for r in got.grad_rows[step]) > 0, step
            continue
        for value in (got.preclip(step), got.norm_from_rows(step)):
            diff = rel(value, want)
            assert diff <= 1e-5, (step, value, want)
            worst = max(worst, diff)
    return worst
