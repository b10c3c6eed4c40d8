import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from gradlog.analysis import load_run
from gradlog.analysis.chartdata import tensor_views
from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.frames import build_frames
from gradlog.analysis.pipeline import analyze_run
from gradlog.errors import RunNotFoundError
from gradlog.schema import SCALARS, STEPS, TENSORS
from tests.analysis.synth import as_schema_2, as_schema_2_part, make_run, write_table


def _run(tmp_path: Path) -> Path:
    return make_run(tmp_path, "r", {"a": np.ones(30), "b": np.ones(30)}, loss=np.linspace(2, 1, 30))


def test_bad_parts_are_named_and_skipped(tmp_path: Path) -> None:
    run = _run(tmp_path)
    d = run / "tensors" / "rank=0"
    (d / "part-000001.parquet").write_bytes(b"")
    good = (d / "part-000000.parquet").read_bytes()
    (d / "part-000002.parquet").write_bytes(good[: len(good) // 2])
    t = pa.table({"step": [1]}, metadata={"gradlog_schema_version": "99"})
    pq.write_table(t, d / "part-000003.parquet")
    (d / "notes.txt").write_text("hi")
    data = load_run(run)
    text = "\n".join(data.problems)
    assert "part-000001.parquet" in text
    assert "part-000002.parquet" in text
    assert "schema version 99" in text
    assert "tensors/rank=0/notes.txt" in text  # a stray file, named
    assert data.parts["tensors"] == [d / "part-000000.parquet"]
    assert build_frames(data).grad.height == 60


def test_bit_flipped_data_page_is_dropped(tmp_path: Path) -> None:
    run = _run(tmp_path)
    p = run / "tensors" / "rank=0" / "part-000000.parquet"
    raw = bytearray(p.read_bytes())
    for i in range(8, min(len(raw) - 200, 400)):
        raw[i] ^= 0xFF
    p.write_bytes(bytes(raw))
    data = load_run(run)
    frames = build_frames(data)  # must not raise, whatever polars does with the page
    assert frames.grad.height in (0, 60)
    if frames.grad.height == 0:
        assert any("part-000000" in p or "tensors" in p for p in data.problems)


def test_missing_run() -> None:
    with pytest.raises(RunNotFoundError, match="does not exist"):
        load_run("/nonexistent/run")


def _repeat_part(run: Path, first: int, last: int, scale: float, rank: int = 0) -> None:
    """A later part (index 1) of every table recording steps first..last again, with norms
    ``scale`` times larger and the loss negated."""
    steps = list(range(first, last + 1))
    n = len(steps)
    rows: dict[str, list[Any]] = {c: [] for c in TENSORS.names if c != "run_id"}
    for t in ("a", "b"):
        for s in steps:
            norm = scale * (1.0 + s)
            for col, v in {
                "step": s,
                "tensor": t,
                "kind": "grad",
                "count": 100,
                "sum": 0.0,
                "sumsq": norm**2,
                "absmax": 0.0,
                "zeros": 0,
                "nonfinite": 0,
            }.items():
                rows[col].append(v)
    write_table(run, TENSORS, rows, rank, index=1)
    write_table(
        run,
        STEPS,
        {
            "step": steps,
            "time": [float(s) for s in steps],
            "grad_norm": [scale * (1.0 + s) * np.sqrt(2) for s in steps],
            "grads_none": [0] * n,
            "loss_scale": [None] * n,
            "skipped": [None] * n,
            "tensor_stats": [True] * n,
        },
        rank,
        index=1,
    )
    write_table(run, SCALARS, {"step": steps, "name": ["loss"] * n, "value": [-1.0] * n}, index=1)


def test_a_later_part_replaces_the_steps_it_records_again(tmp_path: Path) -> None:
    norms = 1.0 + np.arange(20.0)
    run = make_run(tmp_path, "r", {"a": norms, "b": norms}, loss=np.full(20, 2.0))
    _repeat_part(run, 10, 14, 10.0)
    data = load_run(run)
    want = norms.copy()
    want[10:15] *= 10.0
    assert data.problems == [  # once per table, and nothing else
        f"steps 10-14 of table {t} recorded twice (rank=0/part-000000.parquet, "
        "rank=0/part-000001.parquet); the later part's rows are used"
        for t in ("tensors", "steps", "scalars")
    ]
    assert data.rows["tensors"] == 40
    assert data.rows["steps"] == 20
    f = build_frames(data)
    for t in ("a", "b"):
        g = f.grad.filter(pl.col("tensor") == t)
        assert g["step"].to_list() == list(range(20))  # each step once, in order
        np.testing.assert_allclose(g["norm"].to_numpy(), want, rtol=1e-6)
    assert f.steps["step"].to_list() == list(range(20))
    assert f.steps["n_ranks"].to_list() == [1] * 20  # not counted as two ranks
    np.testing.assert_allclose(f.steps["grad_norm"].to_numpy(), want * np.sqrt(2), rtol=1e-6)
    _, loss = f.loss("loss")
    assert loss.tolist() == [2.0] * 10 + [-1.0] * 5 + [2.0] * 5
    views = tensor_views(data)  # the chart data reads parts with pyarrow: the same rows
    assert views.matrix is not None
    np.testing.assert_allclose(views.matrix.norms[0][: len(want)], want, rtol=1e-6)
    long = build_frames(load_run(run), exact_rows=10)  # a long run's buckets: the same rows
    assert long.resolution == 2
    bucket_max = want.reshape(10, 2).max(axis=1)
    got = long.grad.filter(pl.col("tensor") == "a").sort("step")["norm"].to_numpy()
    np.testing.assert_allclose(got, bucket_max, rtol=1e-6)


def test_each_rank_of_a_resumed_run_keeps_its_later_rows(tmp_path: Path) -> None:
    norms = 1.0 + np.arange(20.0)
    cat = [{"name": t, "shape": [10, 10], "numel": 200, "depth": i} for i, t in enumerate("ab")]
    for rank in (0, 1):  # shards: each rank holds half of every tensor
        make_run(tmp_path, "r", {"a": norms, "b": norms}, catalogue=cat, rank=rank, world_size=2)
        _repeat_part(tmp_path / "r", 10, 14, 10.0, rank)
    data = load_run(tmp_path / "r")
    assert data.problems[0] == (
        "steps 10-14 of table tensors recorded twice (rank=0/part-000000.parquet, "
        "rank=0/part-000001.parquet, rank=1/part-000000.parquet, rank=1/part-000001.parquet); "
        "the later part's rows are used"
    )
    want = norms * np.sqrt(2)  # two equal shards
    want[10:15] *= 10.0
    f = build_frames(data)
    g = f.grad.filter(pl.col("tensor") == "a").sort("step")
    assert g["step"].to_list() == list(range(20))
    np.testing.assert_allclose(g["norm"].to_numpy(), want, rtol=1e-6)
    assert f.steps["n_ranks"].to_list() == [2] * 20
    views = tensor_views(data)  # multi-rank chart data: merged window by window
    assert views.matrix is not None
    np.testing.assert_allclose(views.matrix.norms[0][:20], want, rtol=1e-6)


def test_parts_that_only_share_a_boundary_step_are_not_repeats(tmp_path: Path) -> None:
    """A step written across two parts (different tensors/kinds) repeats no row."""
    run = make_run(tmp_path, "r", {"a": np.ones(5)}, param_norms={"a": np.ones(5)}, every=1)
    d = run / "tensors" / "rank=0"
    t = pq.read_table(d / "part-000000.parquet")
    kinds = t.column("kind").cast(pa.string())
    pq.write_table(t.filter(pc.equal(kinds, "grad")), d / "part-000000.parquet")
    pq.write_table(t.filter(pc.equal(kinds, "param")), d / "part-000001.parquet")
    data = load_run(run)
    assert not data.superseded
    assert not any("recorded" in p for p in data.problems)
    f = build_frames(data)
    assert f.grad.height == 5
    assert f.param.height == 5


_TRAIN = textwrap.dedent(
    """
    import sys, torch
    from gradlog.recorder import Recorder
    root, run_id, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(first)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=root, run_id=run_id, first_step=first, hists=2) as rec:
        for _ in range(10):
            opt.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            rec.log(loss=loss)
    """
)


def test_a_run_resumed_from_an_earlier_step_is_analysed_once_per_step(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for first in ("0", "5"):  # two processes; the second resumes from a checkpoint at step 5
        cmd = [sys.executable, "-c", _TRAIN, str(tmp_path), "job", first]
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
    run = tmp_path / "job"
    raw = pl.read_parquet(run / "steps" / "*" / "*.parquet")
    assert raw.height == 20  # both processes' rows are on disk
    result = analyze_run(run, AnalysisConfig())
    assert result.steps == 15
    repeated = sorted(p.split(" recorded twice")[0] for p in result.problems)
    assert repeated == [  # once per table, and nothing else
        "steps 5-9 of table scalars",
        "steps 5-9 of table steps",
        "steps 5-9 of table tensors",
        "steps 6, 8 of table hists",  # histograms every 2 steps
    ]
    frames = build_frames(load_run(run))
    assert frames.steps["step"].to_list() == list(range(15))
    assert frames.steps["n_ranks"].to_list() == [1] * 15
    later = raw.filter(pl.col("step").is_between(5, 9)).sort("time").tail(5).sort("step")
    got = frames.steps.filter(pl.col("step").is_between(5, 9))["grad_norm"].to_numpy()
    np.testing.assert_allclose(got, later["grad_norm"].cast(pl.Float64).to_numpy(), rtol=1e-6)
    g = frames.grad.group_by("tensor").agg(pl.col("step").n_unique(), pl.len())
    assert g["step"].to_list() == [15] * g.height
    assert g["len"].to_list() == [15] * g.height


def test_a_run_directory_that_is_not_utf8_names_its_parts_relative_to_the_run(
    tmp_path: Path,
) -> None:
    src = make_run(tmp_path, "r", {"a": np.ones(20)}, loss=np.linspace(2, 1, 20))
    run = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run-\xff"))
    shutil.copytree(src, run)
    steps = run / "steps" / "rank=0" / "part-000000.parquet"
    shutil.copy(steps, steps.with_name("part-000003.parquet"))
    (run / "tensors" / "rank=0" / "part-000000.parquet").write_bytes(b"junk")
    problems = load_run(run).problems
    assert problems[0].startswith("unreadable part tensors/rank=0/part-000000.parquet: ")
    assert problems[1:] == [
        "steps 0-19 of table steps recorded twice (rank=0/part-000000.parquet, "
        "rank=0/part-000003.parquet); the later part's rows are used"
    ]


# ----------------------------------------------------------------- schema version 2 runs
def _grad_frame(run: Path) -> pl.DataFrame:
    data = load_run(run)
    assert not data.problems, data.problems
    return build_frames(data).grad.sort("tensor", "step")


def _two_part_run(root: Path, name: str) -> Path:
    rng = np.random.default_rng(7)
    norms = {t: rng.lognormal(0, 1, 40) for t in ("a", "b", "c")}
    run = make_run(root, name, norms, loss=np.linspace(3, 1, 40), numel=64)
    # Split the tensors part in two (steps 0-19 and 20-39), as a run resumed at step 20 has.
    d = run / "tensors" / "rank=0"
    (only,) = sorted(d.iterdir())
    t = pq.read_table(only)
    early = pc.less(t["step"], 20)
    pq.write_table(t.filter(early), d / "part-000000.parquet")
    pq.write_table(t.filter(pc.invert(early)), d / "part-000001.parquet")
    if only.name not in ("part-000000.parquet", "part-000001.parquet"):
        only.unlink()
    return run


def test_schema_2_runs_and_resumed_runs_read_as_schema_3(tmp_path: Path) -> None:
    ref = _grad_frame(_two_part_run(tmp_path, "v3"))
    old = _two_part_run(tmp_path, "v2")
    as_schema_2(old)
    resumed = _two_part_run(tmp_path, "resumed")  # part 0 by the old gradlog, part 1 by this one
    as_schema_2_part(resumed / "tensors" / "rank=0" / "part-000000.parquet")
    foreign = _two_part_run(tmp_path, "foreign")  # v2 columns, no version: another writer
    as_schema_2_part(foreign / "tensors" / "rank=0" / "part-000001.parquet", label=None)
    for run in (old, resumed, foreign):
        got = _grad_frame(run)
        assert got.height == ref.height == 120
        for col in ("norm", "mean", "absmax", "nonfinite"):
            np.testing.assert_allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-6)
        # std = sqrt(sumsq/n - mean**2) of constant values: 0, but for the float32 sum of v2
        gap = np.abs(got["std"].to_numpy() - ref["std"].to_numpy())
        assert (gap <= 1e-3 * ref["rms"].to_numpy()).all()
        data = load_run(run)
        assert data.rows["tensors"] == 120
        scanned = data.scan("tensors")
        assert scanned is not None
        assert "min" not in scanned.collect_schema().names()
        assert scanned.collect_schema()["sum"] == pl.Float64


def test_a_part_not_of_its_stated_version_is_named(tmp_path: Path) -> None:
    run = _two_part_run(tmp_path, "r")
    as_schema_2_part(run / "tensors" / "rank=0" / "part-000001.parquet", label="3")
    data = load_run(run)
    (problem,) = [p for p in data.problems if "part-000001" in p]
    assert "columns differ from schema" in problem
    assert "unexpected ['max', 'min']" in problem
    assert data.rows["tensors"] == 60
