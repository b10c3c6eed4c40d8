"""Giant single runs: analysis memory and speed as the number of steps grows.

    python -m benchmarks.giant_run [--tensors 720] [--steps 42000 140000 420000]
                                   [--root /tmp/gradlog-giant] [--keep]

Each run is written by the recorder's own background writer (:class:`gradlog.recorder.writer.
Writer`, fed step packets as the recorder feeds it: gradient statistics of every tensor every
step, parameter and update statistics every 10 steps, exponent histograms every 50, the loss as
a scalar), then ``gradlog analyze RUN`` runs as its own process, timed, with its peak RSS from
``wait4``. One JSON line per run; the runs are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gradlog.recorder.stats import ABSMAX, COUNT, SUMSQ
from gradlog.recorder.writer import NSTATS, Packet, Segment, Writer
from gradlog.schema import EXP_MIN, HIST_BINS, META_FILE, SCHEMA_VERSION

BLOCK = 1000
"""Steps whose statistics are drawn at once (then handed to the writer one packet per step)."""


def _meta(run: Path, names: list[str], steps: int) -> dict[str, object]:
    start = 1_700_000_000.0
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run.name,
        "name": run.name,
        "status": "finished",
        "start_time": start,
        "end_time": start + steps * 0.01,
        "heartbeat": start + steps * 0.01,
        "versions": {"gradlog": "0.1.0", "torch": "2.13.0", "python": "3.11"},
        "host": "synthetic",
        "pid": 1,
        "world_size": 1,
        "rank": 0,
        "config": {"lr": 1e-3},
        "optimizer": {"class": "AdamW", "param_groups": [{"lr": 1e-3}]},
        "tensors": [
            {
                "name": n,
                "shape": [64, 64] if i % 2 == 0 else [64],
                "numel": 4096 if i % 2 == 0 else 64,
                "dtype": "float32",
                "module_type": "Linear",
                "requires_grad": True,
                "in_optimizer": True,
                "depth": i,
                "backward_order": len(names) - 1 - i,
            }
            for i, n in enumerate(names)
        ],
        "schedules": {"grads": "every(1)", "params": "every(10)", "hists": "every(50)"},
        "counters": {"steps_recorded": steps},
        "errors": [],
    }


def _stats(norm: np.ndarray, numel: np.ndarray) -> np.ndarray:
    """tensors x NSTATS rows of schema.RECORDED_STATS (zero sums, no zeros or NaN/Inf)."""
    out = np.zeros((len(norm), NSTATS))
    out[:, COUNT] = numel
    out[:, SUMSQ] = norm * norm
    out[:, ABSMAX] = norm
    return out


def _rich_packet(
    step: int,
    base: np.ndarray,
    grad_segs: list[Segment],
    *,
    ids: np.ndarray,
    numel: np.ndarray,
    centre: np.ndarray,
    rng: np.random.Generator,
) -> Packet:
    """A step that also records parameter and update statistics (and every 50: histograms)."""
    tensors = len(ids)
    off = tensors * NSTATS
    chunks, segs = [base[:off]], list(grad_segs)
    p = np.sqrt(numel) * 0.05
    for kind, v in ((1, p), (2, p * 1e-3 * rng.lognormal(0, 0.1, tensors))):
        chunks.append(_stats(v, numel).ravel())
        segs.append(Segment("stats", off, tensors * NSTATS, kind, ids))
        off += tensors * NSTATS
    if step % 50 == 0:
        bins = np.zeros((tensors, HIST_BINS))
        for d, frac in ((-1, 0.25), (0, 0.5), (1, 0.25)):
            bins[ids, centre + d] = numel * frac
        chunks.append(bins.ravel())
        segs.append(Segment("hist", off, tensors * HIST_BINS, 0, ids))
        off += tensors * HIST_BINS
    chunks.append(base[-1:])
    segs.append(Segment("scalars", off, 1, names=["loss"]))
    return Packet(step, 1_700_000_000.0 + step * 0.01, segs, np.concatenate(chunks))


def write_giant(root: Path, tensors: int, steps: int, seed: int = 0) -> Path:
    """A run of ``steps`` x ``tensors`` written by the recorder's writer; returns its directory."""
    run = root / f"giant-{steps}x{tensors}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    names = [f"layers.{i // 2}.{'weight' if i % 2 == 0 else 'bias'}" for i in range(tensors)]
    (run / META_FILE).write_text(json.dumps(_meta(run, names, steps)), encoding="utf-8")
    numel = np.array([4096 if i % 2 == 0 else 64 for i in range(tensors)], np.float64)
    ids = np.arange(tensors, dtype=np.int64)
    scale = 10.0 ** (-(ids % 40) * 0.05)
    writer = Writer(
        run,
        0,
        names,
        max_queue_bytes=256 << 20,
        flush_every_steps=5000,
        flush_every_secs=3600.0,
        on_flush=lambda: None,
    )
    rng = np.random.default_rng(seed)
    centre = np.clip((np.log2(scale) - 8 - EXP_MIN + 1).astype(int), 3, HIST_BINS - 4)
    grad_segs = [Segment("stats", 0, tensors * NSTATS, 0, ids, norm_rows=np.ones(tensors, bool))]
    loss_seg = Segment("scalars", tensors * NSTATS, 1, names=["loss"])
    for s0 in range(0, steps, BLOCK):
        n = min(BLOCK, steps - s0)
        decay = 1.0 / np.sqrt(1.0 + (s0 + np.arange(n)) / 500.0)
        norms = scale[None, :] * decay[:, None] * rng.lognormal(0, 0.2, (n, tensors))
        block = np.zeros((n, tensors, NSTATS))
        block[:, :, 0] = numel
        block[:, :, 2] = norms * norms
        block[:, :, 3], block[:, :, 4], block[:, :, 5] = -norms, norms, norms
        flat = np.concatenate([block.reshape(n, -1), (2.0 * decay + 0.1)[:, None]], axis=1)
        for j in range(n):
            step = s0 + j
            if step % 10:  # the common step: gradient statistics and the loss, no copy
                packet = Packet(
                    step, 1_700_000_000.0 + step * 0.01, [*grad_segs, loss_seg], flat[j]
                )
            else:
                packet = _rich_packet(
                    step, flat[j], grad_segs, ids=ids, numel=numel, centre=centre, rng=rng
                )
            packet.tensor_stats = True
            writer.submit(packet, block=True)
    writer.close()
    if writer.errors or writer.counters.dropped_steps:
        raise SystemExit(f"writer failed: {writer.errors} {writer.counters.to_json()}")
    return run


def _timed(args: list[str]) -> tuple[float, float]:
    """Run ``python -m gradlog.cli ARGS``: (wall seconds, peak RSS of that process in GB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gradlog.cli", *args])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: findings at the --fail-on level
        raise SystemExit(f"gradlog {' '.join(args)} failed: {status}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tensors", type=int, default=720)
    ap.add_argument("--steps", type=int, nargs="+", default=[42_000, 140_000, 420_000])
    ap.add_argument("--root", type=Path, default=Path("/tmp/gradlog-giant"))
    ap.add_argument("--keep", action="store_true", help="keep the runs")
    ap.add_argument("--reuse", action="store_true", help="reuse runs already written")
    ap.add_argument("--write-only", action="store_true", help="write the runs, analyse nothing")
    args = ap.parse_args()
    for steps in args.steps:
        run = args.root / f"giant-{steps}x{args.tensors}"
        write_s = 0.0
        if not (args.reuse and run.is_dir()):
            t0 = time.perf_counter()
            run = write_giant(args.root, args.tensors, steps)
            write_s = time.perf_counter() - t0
            print(f"wrote {run} in {write_s:.0f} s", file=sys.stderr, flush=True)
        if args.write_only:
            continue
        (run / "analysis.json").unlink(missing_ok=True)
        parquet = sum(f.stat().st_size for f in run.rglob("*.parquet"))
        rows = steps * args.tensors
        wall, rss = _timed(["analyze", str(run)])
        print(
            json.dumps(
                {
                    "steps": steps,
                    "tensors": args.tensors,
                    "grad_rows": rows,
                    "parquet_gb": round(parquet / 1e9, 2),
                    "write_s": round(write_s, 1),
                    "analyze_s": round(wall, 1),
                    "rows_per_s_m": round(rows / wall / 1e6, 2),
                    "peak_rss_gb": round(rss, 2),
                }
            ),
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
