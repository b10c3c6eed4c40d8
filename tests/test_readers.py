"""Logs every engine reads: docs/FORMAT.md's polars, DuckDB, pandas and Spark examples run on
recorded runs (one of them with two ranks) and agree with a pyarrow reference; Spark 4.0 with
default settings reads all four tables."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from gradlog import Recorder
from gradlog.schema import HIST_BINS, TABLES

DOC = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"


def _record(root: Path, name: str, lr: float) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with Recorder(model, opt, root=root, name=name, hists=3, params=2) as rec:
        for _ in range(9):
            loss = model(torch.randn(16, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            rec.log(loss=loss)
            opt.zero_grad()
    return rec.run_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two recorded runs; the second has a copy of its rank 0 as rank 1 (a replicated run)."""
    root = tmp_path_factory.mktemp("runs")
    _record(root, "one", 0.1)
    two = _record(root, "two", 0.5)
    for table in TABLES:
        shutil.copytree(two / table / "rank=0", two / table / "rank=1")
    return root


def _reference(root: Path, table: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (run_id, rank): rows and column sums, read part by part with pyarrow."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for part in sorted(root.glob(f"*/{table}/rank=*/part-*.parquet")):
        t = pq.read_table(part)
        rank = int(part.parent.name.removeprefix("rank="))
        run_ids = set(t.column("run_id").cast("string").to_pylist())
        assert run_ids == {part.parents[2].name}
        acc = out.setdefault((part.parents[2].name, rank), {"rows": 0, "step": 0})
        acc["rows"] += t.num_rows
        acc["step"] += int(np.sum(t.column("step").to_numpy()))
    return out


def _expected_max_norm(root: Path) -> dict[str, float]:
    sums: dict[tuple[str, int, str], float] = {}
    for part in root.glob("*/tensors/rank=*/part-*.parquet"):
        t = pq.read_table(part).to_pylist()
        for row in t:
            if row["kind"] == "grad":
                key = (row["run_id"], row["step"], row["tensor"])
                sums[key] = sums.get(key, 0.0) + row["sumsq"]
    best: dict[str, float] = {}
    for (run_id, _, _), s in sums.items():
        best[run_id] = max(best.get(run_id, 0.0), float(np.sqrt(s)))
    return best


def _doc_example(engine: str) -> str:
    """The python block that follows the paragraph starting with ``engine`` in FORMAT.md's
    'Reading many runs' section."""
    section = DOC.read_text(encoding="utf-8").split("## Reading many runs without gradlog")[1]
    section = section.split("\n## ")[0]
    m = re.search(rf"^{re.escape(engine)}.*?```python\n(.*?)```", section, re.S | re.M)
    assert m is not None, f"no {engine} example in docs/FORMAT.md"
    return m.group(1)


def _run_example(engine: str, root: Path, **extra: Any) -> Any:
    code = _doc_example(engine)
    assert 'root = "runs"' in code
    namespace: dict[str, Any] = dict(extra)
    exec(code.replace('root = "runs"', f"root = {str(root)!r}"), namespace)
    return namespace["per_run"]


def _check(per_run: dict[str, float], root: Path) -> None:
    expected = _expected_max_norm(root)
    assert sorted(per_run) == sorted(expected)
    assert len(expected) == 2
    for run_id, value in expected.items():
        assert per_run[run_id] == pytest.approx(value, rel=1e-12)


def test_polars_example(root: Path) -> None:
    df = _run_example("polars", root)
    _check(dict(zip(df["run_id"].cast(str), df["max_grad_norm"], strict=True)), root)


def test_duckdb_example(root: Path) -> None:
    df = _run_example("DuckDB", root)
    _check(dict(zip(df["run_id"], df["max_grad_norm"], strict=True)), root)


def test_pandas_example(root: Path) -> None:
    df = _run_example("pandas", root)
    _check(dict(zip(df["run_id"], df["max_grad_norm"], strict=True)), root)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = SparkSession.builder.master("local[1]").appName("gradlog-readers").getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_example(root: Path, spark: Any) -> None:
    df = _run_example("Spark 4.0", root)
    _check(dict(zip(df["run_id"], df["max_grad_norm"], strict=True)), root)


def test_spark_reads_all_four_tables_of_two_runs_with_default_settings(
    root: Path, spark: Any
) -> None:
    import pyspark
    from pyspark.sql import functions as sf

    assert pyspark.__version__.startswith("4.0."), pyspark.__version__
    for table in TABLES:
        got: dict[tuple[str, int], dict[str, Any]] = {}
        for run in sorted(p for p in root.iterdir() if p.is_dir()):
            df = spark.read.parquet(str(run / table))  # default settings: no options
            assert set(df.columns) == {*TABLES[table].names, "rank"}
            rows = df.groupBy("run_id", "rank").agg(
                sf.count("*").alias("rows"), sf.sum("step").alias("step")
            )
            for r in rows.collect():
                got[(r["run_id"], int(r["rank"]))] = {"rows": r["rows"], "step": r["step"]}
            if table == "hists":  # the fixed-size list arrives whole
                bins = df.select(sf.size("bins").alias("n")).distinct().collect()
                assert [b["n"] for b in bins] == [HIST_BINS]
        assert got == _reference(root, table), table
