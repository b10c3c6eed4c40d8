"""What reading the gradients once costs where the recorder reads them: after the backward pass.

    python -m benchmarks.insitu_floor [--steps 300] [--threads N]

The workloads of benchmarks/recorder_overhead.py (sample CNN with Adam, MLP 8x512 with SGD) train
without a recorder. After every ``backward()``, in turn by step, one of three reads of the step's
gradients is timed on the training thread (``time.perf_counter_ns``):

* ``floor``: ``torch._foreach_norm`` over the gradients, stacked and copied to numpy (one pass,
  torch's own threads: the least any statistic of every gradient can cost);
* ``kernel``: gradlog's one-pass numba kernel (``kernel.fused_stats``, every statistic);
* ``hooks``: the same kernel, but on each gradient in its post-accumulate-grad hook, during the
  backward pass, while the gradient just written may still be in cache (the time of all hooks);
* ``none``: nothing (the untracked step time is taken from these steps).

Each read runs on a quarter of the steps (round robin after a warm-up), so all of them see the
gradients as cold as the recorder does. Prints a Markdown table: median microseconds of each read
and as a share of the median untracked step.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.recorder_overhead import Workload, _cnn_workload, _mlp_workload
from gradlog.recorder import kernel


def _floor(grads: list[torch.Tensor]) -> object:
    return torch.stack(torch._foreach_norm(grads)).numpy()


def _kernel(grads: list[torch.Tensor]) -> object:
    return kernel.fused_stats(grads, hist=False)


def _none(grads: list[torch.Tensor]) -> object:
    return None


READS: dict[str, Callable[[list[torch.Tensor]], object]] = {
    "none": _none,
    "floor": _floor,
    "kernel": _kernel,
    "hooks": _none,  # the reading happens in the hooks, during backward()
}


def _measure(w: Workload, steps: int, warmup: int) -> dict[str, tuple[list[float], list[float]]]:
    """{read: (its microseconds per step, whole step milliseconds)} over the timed steps."""
    torch.manual_seed(0)
    model = w.build_model()
    opt = w.build_optimizer(model)
    loss_fn = torch.nn.CrossEntropyLoss()
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in READS}
    names = list(READS)
    which = names[0]
    in_hooks = [0]  # nanoseconds spent in the hooks this step

    def hook(p: torch.Tensor) -> None:
        if which == "hooks" and p.grad is not None:
            t0 = time.perf_counter_ns()
            _kernel([p.grad])
            in_hooks[0] += time.perf_counter_ns() - t0

    handles = [
        p.register_post_accumulate_grad_hook(hook)  # type: ignore[no-untyped-call]
        for p in model.parameters()
    ]
    for i in range(warmup + steps):
        which = names[i % len(names)]
        in_hooks[0] = 0
        x, y = w.batches[i % len(w.batches)]
        start = time.perf_counter_ns()
        loss = loss_fn(model(x), y)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        t0 = time.perf_counter_ns()
        READS[which](grads)
        t1 = time.perf_counter_ns()
        opt.step()
        opt.zero_grad()
        end = time.perf_counter_ns()
        if i >= warmup:
            read = t1 - t0 + in_hooks[0]
            out[which][0].append(read / 1e3)
            out[which][1].append((end - start - read) / 1e6)
    for h in handles:
        h.remove()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="timed steps per workload")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not kernel.start_loading(wait=True):
        raise SystemExit(f"the numba kernel is not available: {kernel.unavailable_reason()}")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(
        f"Machine: {platform.machine()}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} torch threads; /proc/loadavg "
        f"{' '.join(load)} before\n"
    )
    print(
        "| workload | elements | untracked step ms | floor us (% of step) | kernel us "
        "(% of step) | kernel / floor | kernel in hooks us (% of step) | in hooks / floor |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for w in (_cnn_workload(), _mlp_workload()):
        res = _measure(w, args.steps, args.warmup)
        step = statistics.median([t for _, steps in res.values() for t in steps])
        floor, kern, hooks = (statistics.median(res[k][0]) for k in ("floor", "kernel", "hooks"))
        elements = sum(p.numel() for p in w.build_model().parameters())
        print(
            f"| {w.key} | {elements:,} | {step:.2f} | {floor:.0f} ({floor / 10 / step:.1f} %) | "
            f"{kern:.0f} ({kern / 10 / step:.1f} %) | {kern / floor:.2f} | "
            f"{hooks:.0f} ({hooks / 10 / step:.1f} %) | {hooks / floor:.2f} |"
        )
    with open("/proc/loadavg") as f:
        print(f"\n/proc/loadavg {' '.join(f.read().split()[:3])} after")


if __name__ == "__main__":
    main()
