"""Write one Parquet part of a gradlog table from plain columns (synthetic runs for tests and
benchmarks), with the recorder's Arrow schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradlog.schema import HIST_BINS, Table, arrow_schema, part_name


def write_part(
    run: Path, table: Table, columns: dict[str, Any], *, index: int = 0, rank: int = 0
) -> Path:
    """``<run>/<table>/rank=<rank>/part-<index>.parquet`` from ``columns``.

    A dictionary column is given as strings or as ``(codes, words)``; a histogram column as an
    ``[n, HIST_BINS]`` array or list of lists; the rest as anything ``pa.array`` takes. ``run_id``
    defaults to the run directory's name.
    """
    schema = arrow_schema(table)
    arrays = []
    rows = len(columns[schema.names[0]])
    for field in schema:
        col: Any = columns.get(field.name)
        if field.name == "run_id" and (col is None or len(col) == 0):
            col = [run.name] * rows
        if pa.types.is_dictionary(field.type) and isinstance(col, tuple):
            codes, words = col
            arrays.append(
                pa.DictionaryArray.from_arrays(
                    pa.array(np.asarray(codes, np.int32)), pa.array(words, pa.string())
                )
            )
        elif pa.types.is_dictionary(field.type):
            arrays.append(pa.array(list(col), pa.string()).dictionary_encode())
        elif pa.types.is_fixed_size_list(field.type):
            flat = pa.array(np.ascontiguousarray(col, dtype=np.int64).reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, HIST_BINS))
        elif isinstance(col, np.ndarray) and col.dtype == object:
            arrays.append(pa.array(col.tolist(), field.type))  # e.g. bools with None
        else:
            arrays.append(pa.array(col, field.type))
    out = run / table.name / f"rank={rank}" / part_name(index)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), out, compression="zstd")
    return out
