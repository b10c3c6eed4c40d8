"""A real 2-process FSDP2 run on CPU (``fully_shard`` on a gloo CPU device mesh): the recorder's
DTensor path (``.to_local()`` of sharded gradients and parameters) and the analysis's merge of
sharded ranks, checked against an independent reference.

The worker (``fsdp2_worker.py``) records, besides the Recorder, the float64 L2 norms of the
*unsharded* gradients (``DTensor.full_tensor()``), parameters and updates at every step. The
merged per-tensor norms and the merged global gradient norm of :func:`build_frames` must equal
them; merged counts must equal the parameters' numel (padding of the uneven shards not counted),
and the catalogue must name the parameters as in the plain model with global shapes.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch.distributed as dist

from gradlog.analysis.frames import RunFrames, build_frames
from gradlog.analysis.loading import load_run

WORKER = Path(__file__).with_name("fsdp2_worker.py")
REPO = Path(__file__).resolve().parents[2]
STEPS, WORLD = 6, 2
REL = 1e-5  # float32 shards summed in float64 against a float64 norm of the full tensor

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


@dataclass
class Fsdp2Run:
    run: Path
    reference: dict[str, Any]
    frames: RunFrames


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rel_diff(got: float, want: float) -> float:
    return abs(got - want) / abs(want) if want else abs(got)


def _merged(df: pl.DataFrame, name: str, column: str) -> list[float]:
    """The merged ``column`` of tensor ``name``, one value per step in step order."""
    rows = df.filter(pl.col("tensor").cast(pl.String) == name).sort("step")
    assert rows["step"].to_list() == list(range(STEPS)), (name, rows["step"].to_list())
    values: list[float] = rows[column].to_list()
    return values


@pytest.fixture(scope="module")
def fsdp2_run(tmp_path_factory: pytest.TempPathFactory) -> Fsdp2Run:
    root = tmp_path_factory.mktemp("fsdp2")
    ref_path = root / "reference.json"
    runs = root / "runs"
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(runs),
                str(r),
                str(WORLD),
                str(port),
                str(STEPS),
                str(ref_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for r in range(WORLD)
    ]
    outs: list[tuple[str, str]] = []
    try:
        outs = [p.communicate(timeout=90) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        errs = [p.communicate()[1] for p in procs]
        pytest.fail(f"FSDP2 workers timed out; stderr:\n{errs[0][-3000:]}\n{errs[1][-3000:]}")
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-5000:]
    run_dirs = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(run_dirs) == 1, run_dirs  # both ranks wrote into one directory
    run = Path(run_dirs.pop())
    assert [p.name for p in runs.iterdir()] == [run.name]
    reference = json.loads(ref_path.read_text())
    data = load_run(run)
    assert data.problems == []
    return Fsdp2Run(run, reference, build_frames(data))


def test_shards_are_uneven_and_one_is_empty(fsdp2_run: Fsdp2Run) -> None:
    """The worker exercised what the test is about (per the reference, not gradlog)."""
    ref = fsdp2_run.reference
    local = ref["local_numel"]
    assert len(local) == WORLD
    for name in ref["names"]:
        assert sum(r[name] for r in local) == math.prod(ref["shapes"][name])
    assert any(local[0][n] != local[1][n] for n in ref["names"])  # uneven sharding
    assert any(r[n] == 0 for r in local for n in ref["names"])  # a rank with an empty shard


def test_catalogue_names_and_global_shapes(fsdp2_run: Fsdp2Run) -> None:
    ref = fsdp2_run.reference
    for meta_file, rank in (("meta.json", 0), ("meta-rank1.json", 1)):
        meta = json.loads((fsdp2_run.run / meta_file).read_text())
        assert (meta["rank"], meta["world_size"], meta["status"]) == (rank, WORLD, "finished")
        tensors = meta["tensors"]
        assert [t["name"] for t in tensors] == ref["names"]
        for t in tensors:
            assert t["shape"] == ref["shapes"][t["name"]], t
            assert t["numel"] == math.prod(ref["shapes"][t["name"]]), t
            assert t["module_type"] == "Linear", t  # not FSDP2's generated FSDPLinear


def test_each_rank_records_its_own_shard(fsdp2_run: Fsdp2Run) -> None:
    """Per rank and step, the raw count of every tensor is the size of that rank's shard."""
    ref = fsdp2_run.reference
    raw = pl.read_parquet(fsdp2_run.run / "tensors", hive_partitioning=True)
    for kind in ("grad", "param", "update"):
        rows = raw.filter(pl.col("kind").cast(pl.String) == kind)
        for rank in range(WORLD):
            mine = rows.filter(pl.col("rank").cast(pl.Int64) == rank)
            assert mine.height == STEPS * len(ref["names"]), (kind, rank)
            for name in ref["names"]:
                counts = mine.filter(pl.col("tensor").cast(pl.String) == name)["count"]
                assert counts.to_list() == [ref["local_numel"][rank][name]] * STEPS, (kind, name)


@pytest.mark.parametrize(
    ("kind", "key"), [("grad", "grad_norm"), ("param", "param_norm"), ("update", "update_norm")]
)
def test_merged_tensor_norms_match_the_full_tensors(
    fsdp2_run: Fsdp2Run, kind: str, key: str
) -> None:
    """(a) merged per-tensor norms equal the norms of the unsharded tensors; (c) counts = numel."""
    ref, frames = fsdp2_run.reference, fsdp2_run.frames
    df = getattr(frames, kind)
    assert set(df["tensor"].cast(pl.String).unique()) == set(ref["names"])
    worst = 0.0
    for name in ref["names"]:
        numel = math.prod(ref["shapes"][name])
        assert _merged(df, name, "count") == [float(numel)] * STEPS, (kind, name)
        got, want = _merged(df, name, "norm"), ref[key][name]
        assert len(want) == STEPS
        for step, (g, w) in enumerate(zip(got, want, strict=True)):
            assert w > 0, (kind, name, step)  # a zero reference would prove nothing
            worst = max(worst, _rel_diff(g, w))
            assert _rel_diff(g, w) <= REL, (kind, name, step, g, w)
    print(f"{kind}: largest relative difference {worst:.3g}")


def test_merged_global_grad_norm_matches_the_full_gradients(fsdp2_run: Fsdp2Run) -> None:
    """(b) the steps frame's grad_norm (per-rank shard norms merged) is the global norm."""
    ref, steps = fsdp2_run.reference, fsdp2_run.frames.steps
    assert steps["step"].to_list() == list(range(STEPS))
    assert steps["n_ranks"].to_list() == [WORLD] * STEPS
    want = ref["global_grad_norm"]
    got = steps["grad_norm"].to_list()
    diffs = [_rel_diff(g, w) for g, w in zip(got, want, strict=True)]
    print(f"global grad norm: largest relative difference {max(diffs):.3g}")
    assert max(diffs) <= REL, list(zip(got, want, strict=True))


def test_merged_histograms_count_every_element_once(fsdp2_run: Fsdp2Run) -> None:
    """Shard histograms add: nonzero + zero elements of each (step, tensor) = numel."""
    frames = fsdp2_run.frames
    hist = frames.hist.select("step", pl.col("tensor").cast(pl.String), "nonzero")
    zeros = (pl.col("zero_frac") * pl.col("count")).alias("zeros")
    grad = frames.grad.select("step", pl.col("tensor").cast(pl.String), "count", zeros)
    both = grad.join(hist, on=["step", "tensor"], how="inner")
    assert both.height == STEPS * len(fsdp2_run.reference["names"])
    total = (both["nonzero"] + both["zeros"]).to_list()
    assert total == pytest.approx(both["count"].to_list(), abs=1e-9)


def test_analysis_reads_one_complete_run(fsdp2_run: Fsdp2Run) -> None:
    from gradlog.analysis import analyze

    (r,) = analyze([fsdp2_run.run]).runs
    assert r.steps == STEPS
    assert not r.partial, r.problems
    assert r.problems == []
