from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradlog.analysis import load_run
from gradlog.analysis.frames import build_frames
from gradlog.errors import RunNotFoundError
from tests.analysis.synth import make_run


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
    assert "stray file tensors/rank=0/notes.txt" in text
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
