"""A small training script for the fault tests, run in real processes.

``python trainer.py MODE ROOT [options]``; self-contained (imports only gradlog and torch) so
that it behaves like a user's script. Modes:

- ``with``: train inside ``with Recorder(...)``.
- ``noclose``: create a Recorder, train, and end the script without close() (atexit closes).
- ``raise``: like ``noclose`` but the script ends with an uncaught exception.
- ``fsize``: cap the size of any file this process writes (RLIMIT_FSIZE, SIGXFSZ ignored), make
  one small flush, then train until the next part is larger than the cap.
- ``kill``: fork one child per trial that trains with constantly rotating parts, SIGKILL it
  after a random delay, and print one JSON line per trial.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import torch

from gradlog.recorder import Recorder


def _model(layers: int, width: int) -> torch.nn.Sequential:
    mods: list[torch.nn.Module] = []
    for _ in range(layers):
        mods += [torch.nn.Linear(width, width), torch.nn.Tanh()]
    return torch.nn.Sequential(*mods)


def _train(
    rec: Recorder | None, model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, width: int
) -> None:
    for _ in range(steps):
        opt.zero_grad()
        loss = model(torch.randn(8, width)).pow(2).mean()
        loss.backward()
        opt.step()
        if rec is not None:
            rec.log(loss=loss, wall=time.time())


def _recorder(
    args: argparse.Namespace, model: torch.nn.Module, opt: torch.optim.Optimizer
) -> Recorder:
    return Recorder(
        model,
        opt,
        root=args.root,
        name=args.name,
        hists=True,
        params=True,
        updates=True,
        flush_every_steps=args.flush_every_steps,
    )


def _kill_trials(args: argparse.Namespace) -> None:
    """Fork one child per trial (this process has imported torch and gradlog, not run them),
    kill it with SIGKILL after a random delay, report what happened."""
    rng = random.Random(args.seed)
    # Warm up first (lazy imports of the first optimizer and the first part take ~2 s), so that
    # each child starts training within milliseconds of its fork.
    model = _model(args.layers, args.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Recorder(model, opt, root=Path(args.root) / "warmup", flush_every_steps=1) as rec:
        _train(rec, model, opt, 2, args.width)
    for trial in range(args.trials):
        root = Path(args.root) / f"trial{trial:03d}"
        delay = rng.uniform(0.0, args.max_delay)
        pid = os.fork()
        if pid == 0:  # the child: train "forever" with a part rotation on every step
            try:
                torch.manual_seed(trial)
                model = _model(args.layers, args.width)
                opt = torch.optim.SGD(model.parameters(), lr=0.01)
                args.root = str(root)
                rec = _recorder(args, model, opt)
                _train(rec, model, opt, 1_000_000, args.width)
            finally:
                os._exit(3)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        print(json.dumps({"trial": trial, "root": str(root), "delay": delay, "killed": killed}))
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["with", "noclose", "raise", "fsize", "kill"])
    parser.add_argument("root")
    parser.add_argument("--name", default="fault test")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--flush-every-steps", type=int, default=1000)
    parser.add_argument("--fsize", type=int, default=1 << 16)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--max-delay", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    if args.mode == "kill":
        _kill_trials(args)
        return
    model = _model(args.layers, args.width)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if args.mode == "with":
        with _recorder(args, model, opt) as rec:
            _train(rec, model, opt, args.steps, args.width)
    elif args.mode in ("noclose", "raise"):
        rec = _recorder(args, model, opt)
        _train(rec, model, opt, args.steps, args.width)
        if args.mode == "raise":
            raise RuntimeError("training diverged")
    elif args.mode == "fsize":
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
        rec = _recorder(args, model, opt)
        _train(rec, model, opt, 2, args.width)
        rec.flush()  # small parts: under the cap
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, resource.RLIM_INFINITY))
        _train(rec, model, opt, args.steps, args.width)
        rec.close()  # the last parts are over the cap: dropped and counted, no exception
    print("trainer done")


if __name__ == "__main__":
    main()
