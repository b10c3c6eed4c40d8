"""One rank of a 2-process FSDP2 run on CPU (gloo over loopback), recorded by gradlog.

``python fsdp2_worker.py ROOT RANK WORLD_SIZE PORT STEPS REFERENCE_JSON``; self-contained like a
user's script. The model is wrapped with ``torch.distributed.fsdp.fully_shard`` on a CPU device
mesh, so its parameters and gradients are DTensors sharded on dim 0 (``Linear(8, 3)`` and
``Linear(3, 1)`` shard unevenly; the latter leaves rank 1 an empty shard).

Besides the Recorder, an independent reference is taken by optimizer hooks registered *before*
the Recorder (hooks run in registration order): the unsharded gradients
(``DTensor.full_tensor()``, a collective) and the unsharded parameters before and after each
step, reduced to float64 L2 norms. Rank 0 writes them to ``REFERENCE_JSON``. The run directory is
the last line printed.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from gradlog.recorder import Recorder


def _full(t: torch.Tensor) -> torch.Tensor:
    """The unsharded tensor in float64 (a collective for DTensors: every rank must call it)."""
    full = t.full_tensor() if isinstance(t, DTensor) else t
    return full.detach().to(torch.float64)


def _local_numel(t: torch.Tensor) -> int:
    return t.to_local().numel() if isinstance(t, DTensor) else t.numel()


def _norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


def main() -> None:
    root, rank, world, port, steps = sys.argv[1], *map(int, sys.argv[2:6])
    ref_path = sys.argv[6]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)  # same initial weights on every rank (fully_shard keeps each one's shard)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Linear(8, 3),  # dim 0 of 3: shards of 2 and 1 rows
        torch.nn.ReLU(),
        torch.nn.Linear(3, 1),  # dim 0 of 1: rank 1 holds an empty shard
    )
    names = [n for n, _ in model.named_parameters()]
    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    params = dict(model.named_parameters())
    assert all(isinstance(p, DTensor) for p in params.values()), "fully_shard made no DTensors"
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)

    grad_norms: dict[str, list[float]] = {n: [] for n in names}
    param_norms: dict[str, list[float]] = {n: [] for n in names}
    update_norms: dict[str, list[float]] = {n: [] for n in names}
    global_norms: list[float] = []
    before: dict[str, torch.Tensor] = {}

    def reference_pre(optimizer: Any, args: Any, kwargs: Any) -> None:
        total = 0.0
        for n in names:
            p = params[n]
            assert p.grad is not None
            g = _norm(_full(p.grad))
            grad_norms[n].append(g)
            total += g * g
            before[n] = _full(p)
            param_norms[n].append(_norm(before[n]))
        global_norms.append(math.sqrt(total))

    def reference_post(optimizer: Any, args: Any, kwargs: Any) -> None:
        for n in names:
            update_norms[n].append(_norm(_full(params[n]) - before[n]))

    # Registered before the Recorder: these hooks run first and see what the Recorder sees.
    opt.register_step_pre_hook(reference_pre)
    opt.register_step_post_hook(reference_post)

    gen = torch.Generator().manual_seed(100 + rank)  # each rank sees its own data
    with Recorder(
        model, opt, root=root, name="fsdp2", params=True, updates=True, hists=True, strict=True
    ) as rec:
        for _ in range(steps):
            x = torch.randn(8, 6, generator=gen)
            loss = model(x).pow(2).mean()
            loss.backward()  # FSDP2 reduce-scatters (averages) the gradients into the shards
            opt.step()
            rec.log(loss=loss)
            opt.zero_grad()

    local_numel = {n: _local_numel(params[n]) for n in names}
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, local_numel)
    dist.destroy_process_group()
    if rank == 0:
        reference = {
            "names": names,
            "shapes": shapes,
            "local_numel": gathered,  # per rank: {name: elements of its shard}
            "grad_norm": grad_norms,
            "param_norm": param_norms,
            "update_norm": update_norms,
            "global_grad_norm": global_norms,
        }
        with open(ref_path, "w") as f:
            json.dump(reference, f)
    print(rec.run_dir)


if __name__ == "__main__":
    main()
