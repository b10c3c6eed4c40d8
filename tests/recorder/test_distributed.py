"""A real 2-process DDP run (gloo on loopback): one run directory, one set of parts per rank,
identical all-reduced gradients on both ranks, and the analysis reading it as one run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_ddp_ranks_share_one_run_with_per_rank_parts(tmp_path: Path) -> None:
    port, steps = _free_port(), 6
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path), str(r), "2", str(port), str(steps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    run_dirs = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(run_dirs) == 1, run_dirs  # both ranks wrote into one directory
    run = Path(run_dirs.pop())
    assert [p.name for p in tmp_path.iterdir()] == [run.name]

    meta = json.loads((run / "meta.json").read_text())
    meta1 = json.loads((run / "meta-rank1.json").read_text())
    assert (meta["rank"], meta["world_size"]) == (0, 2)
    assert (meta1["rank"], meta1["world_size"]) == (1, 2)
    names = [t["name"] for t in meta["tensors"]]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]  # DDP's 'module.' is kept out

    grads = pl.read_parquet(run / "tensors", hive_partitioning=True).filter(
        pl.col("kind") == "grad"
    )
    assert sorted(grads["rank"].cast(pl.Int64).unique().to_list()) == [0, 1]
    by_rank = {
        r: grads.filter(pl.col("rank").cast(pl.Int64) == r).sort("step", "tensor") for r in (0, 1)
    }
    assert by_rank[0]["step"].to_list() == by_rank[1]["step"].to_list()
    assert by_rank[0].height == steps * len(names)
    # after the all-reduce both ranks hold the same gradient: the same statistics
    for col in ("sum", "sumsq", "absmax"):
        assert by_rank[0][col].to_list() == pytest.approx(by_rank[1][col].to_list(), rel=1e-6)

    from gradlog.analysis import analyze

    result = analyze([run])
    (r,) = result.runs
    assert r.steps == steps
    assert not r.partial, r.problems
