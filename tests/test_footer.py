"""The footer check Arrow does not make: column chunk physical types, before Arrow reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradlog.footer import footer_problem


def _part(path: Path) -> Path:
    table = pa.table(
        {
            "step": pa.array(np.arange(50), pa.int64()),
            "x": pa.array(np.linspace(0, 1, 50), pa.float32()),
            "name": pa.array(["a", "b"] * 25).dictionary_encode(),
            "flag": pa.array([True, False] * 25),
        }
    )
    pq.write_table(table, path, row_group_size=20, write_page_checksum=True)
    return path


def test_intact_footers_pass(tmp_path: Path) -> None:
    assert footer_problem(_part(tmp_path / "p.parquet")) is None
    for part in sorted(Path("sample_runs/logs").rglob("*.parquet"))[:40]:
        assert footer_problem(part) is None, part


def test_a_column_chunk_type_that_is_no_physical_type_is_named(tmp_path: Path) -> None:
    path = _part(tmp_path / "p.parquet")
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"\x1c\x15\x04")  # meta_data {type: INT64} of the last row group's step
    assert at > 0
    raw[at + 2] ^= 1  # INT64 (zigzag 4) becomes -3
    path.write_bytes(bytes(raw))
    assert footer_problem(path) == (
        "corrupt footer: column 0 of row group 2 has physical type -3, the schema 2"
    )


def test_a_column_chunk_type_other_than_the_schema_s_is_named(tmp_path: Path) -> None:
    path = _part(tmp_path / "p.parquet")
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"\x1c\x15\x04")
    raw[at + 2] = 0x0A  # INT64 becomes DOUBLE (5)
    path.write_bytes(bytes(raw))
    assert footer_problem(path) == (
        "corrupt footer: column 0 of row group 2 has physical type 5, the schema 2"
    )


def test_any_footer_flip_gives_a_reason_or_none_never_an_exception(tmp_path: Path) -> None:
    path = _part(tmp_path / "p.parquet")
    good = path.read_bytes()
    length = int.from_bytes(good[-8:-4], "little")
    start = len(good) - 8 - length
    for bit in range(0, length * 8, 3):
        raw = bytearray(good)
        raw[start + bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(raw))
        why = footer_problem(path)
        assert why is None or why.startswith("corrupt footer: ")


def test_what_arrow_names_itself_is_left_to_arrow(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    for data in (b"", b"PAR1", b"x" * 100, b"PAR1" + b"\x00" * 20 + b"\xff\xff\xff\x7fPAR1"):
        path.write_bytes(data)
        assert footer_problem(path) is None
    assert footer_problem(tmp_path / "missing.parquet") is None
