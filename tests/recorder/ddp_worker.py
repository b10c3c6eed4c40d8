"""One rank of a 2-process DDP run on CPU (gloo over loopback), recorded by gradlog.

``python ddp_worker.py ROOT RANK WORLD_SIZE PORT STEPS``; self-contained like a user's script.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gradlog.recorder import Recorder


def main() -> None:
    root, rank, world, port, steps = sys.argv[1], *map(int, sys.argv[2:6])
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial weights on every rank
    model = DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank sees its own data
    with Recorder(model, opt, root=root, name="ddp", config={"world": world}) as rec:
        for _ in range(steps):
            x = torch.randn(8, 6, generator=gen)
            loss = model(x).pow(2).mean()
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
            rec.log(loss=loss)
            opt.zero_grad()
    dist.destroy_process_group()
    print(rec.run_dir)


if __name__ == "__main__":
    main()
