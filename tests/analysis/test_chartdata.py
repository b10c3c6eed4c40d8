"""The part-by-part readers against naive references computed from whole tables with polars."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradlog.analysis import chartdata as data
from gradlog.analysis.decimate import StepBuckets
from gradlog.analysis.loading import load_run
from gradlog.schema import HIST_BINS
from tests.report.synthetic import write_run

STEPS = 2345
FLOW_BUCKETS, RATIO_BUCKETS, HIST_COLUMNS = 50, 20, 12


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several parts whose boundaries fall inside display buckets; a NaN step; a dead tensor."""
    return write_run(
        tmp_path_factory.mktemp("data"),
        steps=STEPS,
        part_steps=400,
        nan_at=1000,
        dead="layer1.bias",
        seed=4,
    )


def _table(run: Path, table: str) -> pl.DataFrame:
    df = pl.read_parquet(sorted((run / table).glob("rank=*/*.parquet")), hive_partitioning=True)
    return df.with_columns(pl.col("tensor").cast(pl.String), pl.col("kind").cast(pl.String))


def _bucket(b: StepBuckets) -> pl.Expr:
    return ((pl.col("step") - b.first) // b.width).clip(0, b.count - 1).alias("b")


def naive_flow(run: Path) -> dict[tuple[str, int], tuple[float, bool]]:
    b = StepBuckets.spanning(0, STEPS - 1, FLOW_BUCKETS)
    df = (
        _table(run, "tensors")
        .filter(pl.col("kind") == "grad")
        .group_by("tensor", _bucket(b))
        .agg(pl.col("sumsq").max(), (pl.col("nonfinite") > 0).any().alias("bad"))
    )
    return {(t, c): (math.sqrt(max(float(s), 0.0)), bool(bad)) for t, c, s, bad in df.iter_rows()}


def naive_ratios(run: Path, buckets: int) -> dict[str, tuple[list[float], list[float]]]:
    df = _table(run, "tensors")
    pairs = (
        df.filter(pl.col("kind") == "update")
        .join(df.filter(pl.col("kind") == "param"), on=["tensor", "step"], suffix="_p")
        .select(
            "tensor",
            "step",
            (
                pl.col("sumsq").cast(pl.Float64).sqrt() / pl.col("sumsq_p").cast(pl.Float64).sqrt()
            ).alias("r"),
        )
        .sort("tensor", "step")
    )
    b = StepBuckets.spanning(0, STEPS - 1, buckets)
    out: dict[str, tuple[list[float], list[float]]] = {}
    for (name,), g in pairs.group_by("tensor"):
        xs: list[float] = []
        ys: list[float] = []
        steps, ratios = g["step"].to_list(), g["r"].to_list()
        cells: dict[int, list[int]] = {}
        for i, s in enumerate(steps):
            cells.setdefault(min(max((s - b.first) // b.width, 0), b.count - 1), []).append(i)
        for c in sorted(cells):
            idx = cells[c]
            finite = [i for i in idx if math.isfinite(ratios[i])]
            if not finite:
                xs.append(float(steps[idx[0]]))
                ys.append(math.nan)
                continue
            lo = min(finite, key=lambda i: (ratios[i], steps[i]))
            hi = max(finite, key=lambda i: (ratios[i], -steps[i]))
            for i in sorted({lo, hi}, key=lambda i: steps[i]):
                xs.append(float(steps[i]))
                ys.append(ratios[i])
        out[str(name)] = (xs, ys)
    return out


def _check_views(views: data.TensorViews, run: Path, ratio_buckets: int = RATIO_BUCKETS) -> None:
    m = views.matrix
    assert m is not None
    want = naive_flow(run)
    assert {t for t, _ in want} == set(m.tensors)
    assert m.width == math.ceil(STEPS / FLOW_BUCKETS)
    for (t, c), (norm, bad) in want.items():
        r = m.tensors.index(t)
        assert m.norms[r, c] == pytest.approx(norm, rel=1e-6, abs=0), (t, c)
        assert m.nonfinite[r, c] == bad, (t, c)
    assert np.isfinite(m.norms).sum() == len(want)
    assert m.nonfinite.sum() == len(m.tensors)  # the NaN step, in every tensor
    assert (m.norms[m.tensors.index("layer1.bias")] == 0).all()  # dead: zero, not missing
    ref = naive_ratios(run, ratio_buckets)
    assert list(views.ratios) == [t for t in m.tensors if t in ref]
    for name, (xs, ys) in ref.items():
        got = views.ratios[name]
        np.testing.assert_array_equal(got.x, xs)
        np.testing.assert_allclose(got.y, ys, rtol=1e-12)
    assert views.ndim == {t: (2 if t.endswith("weight") else 1) for t in views.ratios}


def test_tensor_views_match_naive(run: Path) -> None:
    views = data.tensor_views(load_run(run), FLOW_BUCKETS, RATIO_BUCKETS)
    assert m_shape(views) == (8, FLOW_BUCKETS)
    _check_views(views, run)


def m_shape(views: data.TensorViews) -> tuple[int, ...]:
    assert views.matrix is not None
    return tuple(views.matrix.norms.shape)


def test_exponent_histogram_matches_naive(run: Path) -> None:
    h = data.exponent_histogram(load_run(run), HIST_COLUMNS)
    assert h is not None
    df = _table(run, "hists").filter(pl.col("kind") == "grad")
    b = StepBuckets.spanning(0, STEPS - 1, HIST_COLUMNS)
    steps = df["step"].to_numpy()
    bins = np.asarray(df["bins"].to_list(), dtype=np.int64).reshape(len(df), HIST_BINS)
    cols = sorted(set(b.index(steps).tolist()))
    np.testing.assert_array_equal(h.steps, [steps[b.index(steps) == c].min() for c in cols])
    want = np.stack([bins[b.index(steps) == c].sum(axis=0) for c in cols])
    np.testing.assert_array_equal(h.counts, want)
    assert h.width == b.width
    assert h.end == STEPS
    names = df["tensor"].to_list()
    assert h.tensors == [f"layer{i}.{p}" for i in range(4) for p in ("weight", "bias")]
    for t, row in zip(h.tensors, h.tensor_counts, strict=True):
        mask = np.array([n == t for n in names])
        np.testing.assert_array_equal(row, bins[mask].sum(axis=0))


def test_replicated_ranks_read_as_one(run: Path, tmp_path: Path) -> None:
    """DDP: every rank holds the whole tensor; sums are divided by the rank count."""
    two = tmp_path / "ddp"
    shutil.copytree(run, two)
    meta = json.loads((two / "meta.json").read_text())
    meta["world_size"] = 2
    (two / "meta.json").write_text(json.dumps(meta))
    for table in ("tensors", "hists"):
        shutil.copytree(two / table / "rank=0", two / table / "rank=1")
    src = load_run(two)
    assert src.run.multi_rank
    _check_views(data.tensor_views(src, FLOW_BUCKETS, RATIO_BUCKETS), run)
    one = data.exponent_histogram(load_run(run), HIST_COLUMNS)
    both = data.exponent_histogram(src, HIST_COLUMNS)
    assert one is not None
    assert both is not None
    np.testing.assert_array_equal(both.counts, 2 * one.counts)


def _move_rows(src: Path, dst: Path, keep: pa.Table, moved: pa.Table) -> None:
    schema = pq.read_schema(src)
    pq.write_table(keep.cast(schema), src)
    pq.write_table(pa.concat_tables([moved.cast(schema), pq.read_table(dst).cast(schema)]), dst)


def test_update_written_in_the_next_part_still_pairs(run: Path, tmp_path: Path) -> None:
    """A step whose update rows landed in the next part keeps its ratio; an unreadable part is
    skipped."""
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    parts = sorted((moved / "tensors" / "rank=0").glob("*.parquet"))
    for a, b in zip(parts[:-1:2], parts[1::2], strict=False):
        t = pq.read_table(a)
        kind = t.column("kind").cast(pa.string())
        last = pa.compute.max(t.filter(pa.compute.equal(kind, "update")).column("step"))
        sel = pa.compute.and_(
            pa.compute.equal(kind, "update"), pa.compute.equal(t.column("step"), last)
        )
        _move_rows(a, b, t.filter(pa.compute.invert(sel)), t.filter(sel))
    (parts[0].parent / "part-999999.parquet").write_bytes(b"PAR1 not really")
    views = data.tensor_views(load_run(moved), FLOW_BUCKETS, STEPS)  # every step drawn
    assert len(views.ratios["layer0.weight"]) == math.ceil(STEPS / 10)
    _check_views(views, run, STEPS)
