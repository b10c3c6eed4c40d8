"""Bytes per gradient row of the ``tensors`` table, as written and under candidate layouts.

    python -m benchmarks.bytes_per_row [--logs sample_runs/logs]

Each committed sample log's ``tensors`` parts are concatenated into one table (so part footers
do not blur the figure) and written to memory with the recorder's settings
(gradlog/recorder/writer.py: zstd level 3, the same dictionary columns, delta-coded steps, step
statistics, page checksums), as stored (schema 2) and with one change at a time:

* ``-absmax``: without ``absmax``, which equals ``max(-min, max)`` of the same finite elements;
* ``bss``: BYTE_STREAM_SPLIT on the float columns (Spark 4.0's reader rejects it);
* ``-absmax, bss``: both.

Also the bytes per row of each column as stored. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import io
import platform
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FLOATS = ["sum", "sumsq", "min", "max", "absmax"]


def _size(table: pa.Table, *, bss: bool) -> tuple[int, dict[str, int]]:
    """Bytes of ``table`` written with the recorder's settings, and each column's share."""
    buf = io.BytesIO()
    floats = [c for c in FLOATS if c in table.column_names]
    pq.write_table(
        table,
        buf,
        compression="zstd",
        compression_level=3,
        use_dictionary=["tensor", "kind", "count", "run_id"],
        use_byte_stream_split=floats if bss else False,
        column_encoding={"step": "DELTA_BINARY_PACKED"},
        write_statistics=["step"],
        write_page_checksum=True,
        row_group_size=1 << 20,
    )
    buf.seek(0)
    footer = pq.read_metadata(buf)
    cols: dict[str, int] = {}
    for g in range(footer.num_row_groups):
        rg = footer.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            cols[col.path_in_schema] = cols.get(col.path_in_schema, 0) + col.total_compressed_size
    return len(buf.getvalue()), cols


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=Path, default=Path("sample_runs/logs"))
    args = ap.parse_args()
    versions = f"Python {platform.python_version()}, pyarrow {pa.__version__}"
    print(f"Machine: {platform.machine()}, {versions}\n")
    print("| run | rows | schema 2 | -absmax | bss | -absmax, bss |")
    print("|---|---:|---:|---:|---:|---:|")
    per_column: dict[str, dict[str, float]] = {}
    for run_dir in sorted(p for p in args.logs.iterdir() if p.is_dir()):
        parts = sorted(run_dir.rglob("tensors/rank=*/part-*.parquet"))
        if not parts:
            continue
        table = pa.concat_tables([pq.read_table(p) for p in parts]).combine_chunks()
        rows = table.num_rows
        lean = table.drop_columns(["absmax"])
        full, cols = _size(table, bss=False)
        figures = [full, _size(lean, bss=False)[0], _size(table, bss=True)[0]]
        figures.append(_size(lean, bss=True)[0])
        cells = " | ".join(f"{b / rows:.1f}" for b in figures)
        print(f"| {run_dir.name} | {rows:,} | {cells} |")
        per_column[run_dir.name] = {k: v / rows for k, v in cols.items()}
    names = list(next(iter(per_column.values())))
    print("\nBytes per row of each column, as stored (schema 2, one part per run):\n")
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for run, shares in per_column.items():
        print(f"| {run} | " + " | ".join(f"{shares.get(n, 0):.2f}" for n in names) + " |")


if __name__ == "__main__":
    main()
