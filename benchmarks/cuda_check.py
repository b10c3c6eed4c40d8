"""The prepared CUDA check (run it where a GPU is lent): no host sync, and the overhead ratio.

1. Records steps of the sample CNN on CUDA with every statistic on every step inside
   ``torch.cuda.set_sync_debug_mode("error")``: any host synchronisation by the recorder on the
   training thread raises.
2. Times an 8x1024 MLP (batch 256) untracked vs with the default recorder, interleaved, and
   prints the median step-time ratio.

Usage: ``python -m benchmarks.cuda_check [--out result.json]``. Exits 3 when no GPU is present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradlog import Recorder
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
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
