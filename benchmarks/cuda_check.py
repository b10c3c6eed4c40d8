"""The prepared CUDA check (run it where a GPU is lent): no host sync, and the overhead ratio.

1. Records steps of the sample CNN on CUDA with every statistic on every step inside
   ``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation by the recorder on the
   training thread raises.
2. Times an 8x1024 MLP (batch 256) untracked vs with the default recorder, interleaved, and
   prints the median step-time ratio.
3. Counts the CUDA kernel launches and host synchronisations the recorder adds per step, by kind
   of step (plain, parameter/update, histogram), with ``torch.profiler``; and times the
   statistics kernels on the GPU (``tensor_stats``, ``stats_and_histogram``, ``update_stats``)
   against the one-pass floor (``torch._foreach_norm``). On CUDA the statistics take the
   flattened torch path (``method="flat"``); the one-pass numba kernel is CPU-only.

Usage: ``python -m benchmarks.cuda_check [--out result.json]``. Exits 3 when no GPU is present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradlog import Recorder
from gradlog.recorder.stats import stats_and_histogram, tensor_stats, update_stats
from sample_runs.cnn_digits import DigitsCNN


def _train_under_sync_debug(root: Path, record: bool) -> str | None:
    """Train 40 steps; from step 5 on any host sync raises. Returns the error text or None."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = DigitsCNN().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(64, 1, 8, 8, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    rec = Recorder(model, opt, root=root, grads=1, params=1, updates=1, hists=1) if record else None
    error = None
    try:
        for step in range(40):
            if step == 5:  # warm-up done: layouts cached, allocator warm
                torch.cuda.set_sync_debug_mode("error")
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if rec is not None:
                rec.log(loss=loss)
            opt.zero_grad()
    except RuntimeError as exc:
        error = str(exc)
    finally:
        torch.cuda.set_sync_debug_mode(0)
        if rec is not None:
            rec.close()
    return error


def _sync_check(root: Path) -> dict[str, Any]:
    control = _train_under_sync_debug(root, record=False)  # the loop itself must be sync-free
    recorded = _train_under_sync_debug(root, record=True)
    return {"control_error": control, "recorder_error": recorded, "sync_free": recorded is None}


def _mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _overhead(root: Path, rounds: int = 15, steps: int = 50) -> dict[str, Any]:
    device = torch.device("cuda")
    x = torch.randn(256, 1024, device=device)
    y = torch.randint(0, 10, (256,), device=device)
    loss_fn = nn.CrossEntropyLoss()
    setups = {}
    for key in ("untracked", "gradlog"):
        torch.manual_seed(0)
        model = _mlp(1024, 8).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        rec = Recorder(model, opt, root=root, name=key) if key == "gradlog" else None
        setups[key] = (model, opt, rec)
    times: dict[str, list[float]] = {k: [] for k in setups}
    for r in range(rounds + 1):
        for key, (model, opt, rec) in setups.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
                if rec is not None:
                    rec.log(loss=loss)
                opt.zero_grad()
            torch.cuda.synchronize()
            if r:  # round 0 is warm-up
                times[key].append((time.perf_counter() - t0) / steps * 1e3)
    for _, _, rec in setups.values():
        if rec is not None:
            rec.close()
    ratios = [g / u for g, u in zip(times["gradlog"], times["untracked"], strict=True)]
    return {
        "untracked_ms": statistics.median(times["untracked"]),
        "gradlog_ms": statistics.median(times["gradlog"]),
        "ratio": statistics.median(ratios),
    }


def _one_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    rec: Recorder | None,
    *,
    batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = batch
    loss = nn.CrossEntropyLoss()(model(x), y)
    loss.backward()
    opt.step()
    if rec is not None:
        rec.log(loss=loss)
    opt.zero_grad()


def _count_launches(root: Path, kind: str) -> dict[str, Any]:
    """CUDA kernel launches and synchronisations of one recorded step of ``kind``, beyond those
    of the same step untracked (profiled after warm-up steps)."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device("cuda")
    kinds: dict[str, dict[str, Any]] = {
        "plain": {"params": False, "updates": False, "hists": False},
        "param": {"params": 1, "updates": 1, "hists": False},
        "hist": {"params": False, "updates": False, "hists": 1},
    }
    options = kinds[kind]
    counts = {}
    for record in (False, True):
        torch.manual_seed(0)
        model = _mlp(1024, 8).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        rec = Recorder(model, opt, root=root, name=f"launch-{kind}", **options) if record else None
        x = torch.randn(256, 1024, device=device)
        y = torch.randint(0, 10, (256,), device=device)
        for _ in range(5):
            _one_step(model, opt, rec, batch=(x, y))
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            _one_step(model, opt, rec, batch=(x, y))
            torch.cuda.synchronize()
        names = [e.name for e in prof.events()]
        counts[record] = {
            "launches": sum(1 for e in prof.events() if e.device_type.name == "CUDA"),
            "syncs": sum(1 for n in names if "Synchronize" in n),
        }
        if rec is not None:
            rec.close()
    return {
        "launches_added": counts[True]["launches"] - counts[False]["launches"],
        "syncs_added": counts[True]["syncs"] - counts[False]["syncs"],
    }


def _kernel_times(reps: int = 50) -> dict[str, float]:
    """Median ms of the statistics kernels on the gradients of an 8x1024 MLP on the GPU."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = _mlp(1024, 8).to(device)
    nn.CrossEntropyLoss()(
        model(torch.randn(256, 1024, device=device)), torch.randint(0, 10, (256,), device=device)
    ).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    params = [p.detach() for p in model.parameters()]
    moved = [p - 1e-3 * g for p, g in zip(params, grads, strict=True)]
    snapshot = [p.clone() for p in params]
    fns: dict[str, Callable[[], object]] = {
        "floor_foreach_norm": lambda: torch.stack(torch._foreach_norm(grads, 2)),
        "tensor_stats": lambda: tensor_stats(grads),
        "stats_and_histogram": lambda: stats_and_histogram(grads, hist=True),
        "update_stats": lambda: update_stats(snapshot, moved),
    }
    out = {}
    for key, fn in fns.items():
        for _ in range(3):
            fn()
        times = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        out[key] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        sys.exit(3)
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "sync": _sync_check(Path(tmp)),
            "overhead": _overhead(Path(tmp)),
            "launches_per_step": {
                k: _count_launches(Path(tmp), k) for k in ("plain", "param", "hist")
            },
            "kernel_ms": _kernel_times(),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
