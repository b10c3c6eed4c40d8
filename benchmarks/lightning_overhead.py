"""Overhead of gradlog's Lightning callback on a Lightning CPU workload, side by side.

The sample CNN on the digits data (Adam, batch 64) as a LightningModule, trained by
``Trainer.fit`` for ``--steps`` optimizer steps per fit on CPU, with and without
``GradlogCallback`` (defaults: gradient statistics every step, parameters/updates every 10,
histograms every 50). Each round fits every configuration once, in an order reshuffled per
round, from the same initial weights and batches (the block protocol: each configuration's
steps back to back, as one training process sees them). A step is timed from
``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward, optimizer step, all
callbacks); the first ``--warmup`` steps of each fit are dropped. "x no callback" is the median
over rounds of the per-round ratio of median step times. "In gradlog" is the time on the
training thread inside the callback's per-step hooks and the Recorder (outermost calls only),
measured in situ by wrapping those methods.

``python -m benchmarks.lightning_overhead`` (about two minutes); ``--quick`` for a smoke run;
``--out FILE`` writes the Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import functools
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from gradlog import __version__ as gradlog_version
from gradlog.integrations.lightning import GradlogCallback
from gradlog.recorder import Recorder
from sample_runs.cnn_digits import DigitsCNN, load_digits_tensors

SEED = 0
PER_STEP_HOOKS = ["on_before_optimizer_step", "on_train_batch_end"]
"""The callback's hooks that run every step (fit start/end, run creation and the final flush
are one-time costs, not step overhead)."""


class DigitsModule(pl.LightningModule):
    """DigitsCNN with cross-entropy and Adam."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class StepTimer(pl.Callback):
    """Wall time of each training batch (all of forward, backward, step and callbacks)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self._start)


class InGradlog:
    """Accumulates time spent in wrapped methods, counting only the outermost call."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.depth = 0
        self.undo: list[Callable[[], None]] = []

    def wrap(self, cls: type, names: list[str]) -> None:
        for name in names:
            original = cls.__dict__[name]

            @functools.wraps(original)
            def timed(*args: Any, __f: Any = original, **kwargs: Any) -> Any:
                self.depth += 1
                start = time.perf_counter()
                try:
                    return __f(*args, **kwargs)
                finally:
                    self.depth -= 1
                    if self.depth == 0:
                        self.spent += time.perf_counter() - start

            setattr(cls, name, timed)
            self.undo.append(functools.partial(setattr, cls, name, original))

    def restore(self) -> None:
        for undo in reversed(self.undo):
            undo()


def _loader(batch: int) -> torch.utils.data.DataLoader[Any]:
    x, y = load_digits_tensors()
    ds = torch.utils.data.TensorDataset(x, y)
    gen = torch.Generator().manual_seed(SEED)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, generator=gen)


def _fit(net: nn.Module, steps: int, callbacks: list[Any], root: Path) -> StepTimer:
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*callbacks, timer],  # the timer's batch end comes after gradlog's
        default_root_dir=str(root),
    )
    trainer.fit(DigitsModule(copy.deepcopy(net)), _loader(64))
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup = 2, 25, 5
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    net = DigitsCNN()
    configs = ["no callback", "GradlogCallback default"]
    medians: dict[str, list[float]] = {c: [] for c in configs}
    spent: list[float] = []
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        _fit(net, args.warmup, [], Path(tmp))  # warm the process (imports, allocator)
        for _ in range(args.rounds):
            order = configs[:]
            rng.shuffle(order)
            for config in order:
                probe = InGradlog()
                callbacks: list[Any] = []
                if config != "no callback":
                    callbacks = [GradlogCallback(root=Path(tmp) / "runs")]
                    probe.wrap(GradlogCallback, PER_STEP_HOOKS)
                    probe.wrap(Recorder, ["_safely", "log", "capture_grads"])
                try:
                    timer = _fit(net, args.steps, callbacks, Path(tmp))
                finally:
                    probe.restore()
                kept = timer.times[args.warmup :]
                medians[config].append(statistics.median(kept))
                if callbacks:
                    spent.append(probe.spent / len(timer.times))
    base = medians["no callback"]
    lines = [
        f"gradlog {gradlog_version}, lightning {version('lightning')}, torch {torch.__version__}, "
        f"Python {platform.python_version()}; {args.rounds} rounds x {args.steps} steps "
        f"(first {args.warmup} of each fit dropped), torch threads 2.",
        "",
        "| configuration | median step ms | x no callback (median [quartiles] over rounds) "
        "| in gradlog, ms/step (mean) | in gradlog, % of step |",
        "|---|---:|---:|---:|---:|",
    ]
    for config in configs:
        step = statistics.median(medians[config])
        ratios = [m / b for m, b in zip(medians[config], base, strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        if config == "no callback":
            lines.append(f"| {config} | {step * 1e3:.2f} | 1.000 | — | — |")
        else:
            ms = statistics.mean(spent) * 1e3
            lines.append(
                f"| {config} | {step * 1e3:.2f} | {statistics.median(ratios):.3f} "
                f"[{q[0]:.3f}-{q[2]:.3f}] | {ms:.3f} | {ms / (step * 1e3):.1%} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
