"""Bytes per gradient row of the ``tensors`` table: schema 2 against schema 3, and as recorded.

    python -m benchmarks.bytes_per_row [--logs sample_runs/logs] [--steps 1000]

1. Each committed sample log (written with schema 2) has its ``tensors`` parts concatenated into
   one table (so part footers do not blur the figure) and written to memory with the recorder's
   settings (gradlog/recorder/writer.py ``parquet_options``: zstd level 3, dictionary columns,
   delta-coded steps, step statistics, page checksums): as stored (schema 2:
   ``sum``/``min``/``max`` float32, ``sumsq``/``absmax`` float64) and converted to schema 3
   (no ``min``/``max``, ``sum`` float64 by the writer's own rule: float32 precision where
   float32 holds the value). Also the bytes of each column in schema 3.
2. Fresh runs recorded by this tree's recorder (schema 3, default settings, one part per table:
   the part rotation by time is turned off so the load of the machine does not decide the part
   count): the sample CNN (Adam) and the MLP 8x512 (SGD) of benchmarks/recorder_overhead.py, for
   ``--steps`` steps, file and data (column chunks, without footers) bytes per row.

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gradlog.recorder.writer import parquet_options, stat_floats


def _write(table: pa.Table) -> tuple[int, dict[str, int]]:
    """Bytes of ``table`` written with the recorder's settings, and each column's share."""
    buf = io.BytesIO()
    pq.write_table(table, buf, **parquet_options())
    buf.seek(0)
    footer = pq.read_metadata(buf)
    cols: dict[str, int] = {}
    for g in range(footer.num_row_groups):
        rg = footer.row_group(g)
        for c in range(rg.num_columns):
            col = rg.column(c)
            cols[col.path_in_schema] = cols.get(col.path_in_schema, 0) + col.total_compressed_size
    return len(buf.getvalue()), cols


def _as_schema_3(table: pa.Table) -> pa.Table:
    """A schema 2 ``tensors`` table as schema 3 stores it."""
    out = table.drop_columns(["min", "max"])
    wide = stat_floats(table["sum"].to_numpy(), pa.float64())
    return out.set_column(out.column_names.index("sum"), "sum", wide)


def _sample_logs(logs: Path) -> None:
    print("| run | rows | schema 2 | schema 3 | schema 3, data only |")
    print("|---|---:|---:|---:|---:|")
    per_column: dict[str, dict[str, float]] = {}
    for run_dir in sorted(p for p in logs.iterdir() if p.is_dir()):
        parts = sorted(run_dir.rglob("tensors/rank=*/part-*.parquet"))
        if not parts:
            continue
        table = pa.concat_tables([pq.read_table(p) for p in parts]).combine_chunks()
        rows = table.num_rows
        old, _ = _write(table)
        new, cols = _write(_as_schema_3(table))
        figures = [old / rows, new / rows, sum(cols.values()) / rows]
        cells = " | ".join(f"{b:.1f}" for b in figures)
        print(f"| {run_dir.name} | {rows:,} | {cells} |")
        per_column[run_dir.name] = {k: v / rows for k, v in cols.items()}
    names = list(next(iter(per_column.values())))
    print("\nBytes per row of each column, schema 3 (one part per run):\n")
    print("| run | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for run, shares in per_column.items():
        print(f"| {run} | " + " | ".join(f"{shares.get(n, 0):.2f}" for n in names) + " |")


def _recorded(steps: int) -> None:
    import torch

    from benchmarks.recorder_overhead import _cnn_workload, _disk_usage, _mlp_workload
    from gradlog.recorder import Recorder

    print(f"\nRecorded by this tree (schema 3), {steps} steps, one part per table:\n")
    print("| workload | tensors | rows | parts | file bytes/row | data bytes/row |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for w in (_cnn_workload(), _mlp_workload()):
            model = w.build_model()
            opt = w.build_optimizer(model)
            loss_fn = torch.nn.CrossEntropyLoss()
            with Recorder(
                model, opt, root=tmp, flush_every_steps=steps, flush_every_secs=86400.0
            ) as rec:
                for i in range(steps):
                    x, y = w.batches[i % len(w.batches)]
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    opt.step()
                    rec.log(loss=loss)
                    opt.zero_grad()
            use = _disk_usage(rec.run_dir, "tensors")
            n_tensors = sum(1 for _ in model.parameters())
            print(
                f"| {w.key} | {n_tensors} | {use.rows:,} | {use.parts} | "
                f"{use.file_bytes / use.rows:.1f} | {use.data_bytes / use.rows:.1f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=Path, default=Path("sample_runs/logs"))
    ap.add_argument("--steps", type=int, default=1000, help="steps of each recorded run")
    args = ap.parse_args()
    versions = f"Python {platform.python_version()}, pyarrow {pa.__version__}"
    print(f"Machine: {platform.machine()}, {versions}\n")
    _sample_logs(args.logs)
    if args.steps > 0:
        _recorded(args.steps)


if __name__ == "__main__":
    main()
