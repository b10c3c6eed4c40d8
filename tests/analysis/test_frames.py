from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from gradlog.analysis.frames import DETECTOR_COLUMNS, build_frames
from gradlog.analysis.loading import RunData, load_run
from gradlog.errors import ConfigError
from tests.analysis.synth import make_run


def _two_ranks(tmp_path: Path, numel_catalogue: int) -> RunData:
    cat = [
        {
            "name": "w",
            "shape": [10, 10],
            "numel": numel_catalogue,
            "depth": 0,
            "backward_order": 0,
            "requires_grad": True,
            "in_optimizer": True,
        }
    ]
    a = np.array([3.0, 4.0])
    b = np.array([4.0, 3.0])
    make_run(tmp_path, "r", {"w": a}, catalogue=cat, rank=0, world_size=2)
    make_run(tmp_path, "r", {"w": b}, catalogue=cat, rank=1, world_size=2)
    return load_run(tmp_path / "r")


def test_shards_add(tmp_path: Path) -> None:
    f = build_frames(_two_ranks(tmp_path, 200))
    g = f.grad.sort("step")
    assert g["norm"].to_list() == pytest.approx([5.0, 5.0])  # sqrt(3^2 + 4^2): disjoint shards
    assert g["count"].to_list() == [200.0, 200.0]
    assert f.steps["grad_norm"].to_list() == pytest.approx([5.0, 5.0])


def test_replicas_average(tmp_path: Path) -> None:
    f = build_frames(_two_ranks(tmp_path, 100))
    g = f.grad.sort("step")
    assert g["count"].to_list() == [100.0, 100.0]
    assert g["norm"].to_list() == pytest.approx([np.sqrt(12.5), np.sqrt(12.5)])  # mean of squares


def test_derived_stats_match_numpy(tmp_path: Path) -> None:
    make_run(
        tmp_path,
        "r",
        {"w": np.array([2.0])},
        param_norms={"w": np.array([4.0])},
        update_norms={"w": np.array([0.004])},
        numel=4,
    )
    f = build_frames(load_run(tmp_path / "r"))
    x = np.full(4, 1.0)  # norm 2 over 4 equal values
    row = f.grad.row(0, named=True)
    assert row["norm"] == pytest.approx(np.linalg.norm(x))
    assert row["mean"] == pytest.approx(x.mean())
    assert row["std"] == pytest.approx(x.std(), abs=1e-6)
    assert f.update["ratio"][0] == pytest.approx(1e-3)


def test_parts_out_of_step_order_are_sorted(tmp_path: Path) -> None:
    # the later steps in part 0 and the earlier ones in part 1: the footers cannot prove the
    # order, so the rows are checked and sorted; every series must come out in step order
    g = np.arange(1.0, 21.0)
    run = make_run(tmp_path, "r", {"a": g, "b": 2 * g})
    part = run / "tensors" / "rank=0" / "part-000000.parquet"
    table = pq.read_table(part)
    late = pc.greater_equal(table["step"], 10)
    pq.write_table(table.filter(late), part)
    pq.write_table(table.filter(pc.invert(late)), part.with_name("part-000001.parquet"))
    data = load_run(run)
    assert not data.parts_in_step_order("tensors")
    f = build_frames(data)
    for t, scale in (("a", 1.0), ("b", 2.0)):
        s = f.grad.filter(pl.col("tensor") == t)
        assert s["step"].to_list() == list(range(20))
        assert s["norm"].to_list() == pytest.approx((scale * g).tolist())


def test_parts_in_step_order_from_footers(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", {"a": np.ones(5)})
    assert load_run(run).parts_in_step_order("tensors")


def test_detector_columns_only(tmp_path: Path) -> None:
    make_run(tmp_path, "r", {"w": np.array([2.0])}, numel=4)
    f = build_frames(load_run(tmp_path / "r"), DETECTOR_COLUMNS)
    assert f.grad.columns == ["step", "tensor", *DETECTOR_COLUMNS]
    with pytest.raises(ConfigError, match=r"unknown frame columns \['nope'\]"):
        build_frames(load_run(tmp_path / "r"), ["nope"])


def test_giant_runs_are_bucketed_keeping_spikes(tmp_path: Path) -> None:
    """Over ``exact_rows`` the frames hold buckets of steps: the largest norm (spikes survive),
    RMS over every element, zero fractions and non-finite counts summed."""
    n = 400
    norms = np.full(n, 2.0)
    norms[123] = 50.0  # a one-step spike
    make_run(
        tmp_path,
        "r",
        {"a": norms, "b": np.ones(n)},
        param_norms={"a": np.ones(n), "b": np.ones(n)},
        update_norms={"a": np.full(n, 1e-3), "b": np.full(n, 1e-2)},
        numel=4,
    )
    exact = build_frames(load_run(tmp_path / "r"), DETECTOR_COLUMNS)
    f = build_frames(load_run(tmp_path / "r"), DETECTOR_COLUMNS, exact_rows=10)
    assert exact.resolution == 1
    assert f.resolution > 1
    assert f.grad.height < exact.grad.height
    a = f.grad.filter(pl.col("tensor").cast(pl.String) == "a").sort("step")
    assert float(a["norm"].max()) == pytest.approx(50.0)  # type: ignore[arg-type]
    spike_bucket = (123 // f.resolution) * f.resolution
    assert a.filter(pl.col("step") == spike_bucket)["norm"].item() == pytest.approx(50.0)
    rms = exact.grad.filter(pl.col("tensor").cast(pl.String) == "a")["rms"].to_numpy()
    assert a["rms"][0] == pytest.approx(np.sqrt(np.mean(rms[: f.resolution] ** 2)))
    ratio = f.update.filter(pl.col("tensor").cast(pl.String) == "b")["ratio"]
    assert ratio.to_numpy() == pytest.approx(1e-2)
