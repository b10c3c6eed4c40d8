"""The format declared once: its constants, the Arrow and polars schemas derived from it."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from gradlog import schema
from gradlog.schema import (
    CATALOGUE_FIELDS,
    EXP_BINS,
    EXP_MAX,
    EXP_MIN,
    HIST_BINS,
    HIST_NONFINITE_BIN,
    HIST_ZERO_BIN,
    META_FIELDS,
    STAT_COLUMNS,
    TABLES,
    arrow_schema,
    part_name,
    polars_schema,
)


def test_histogram_layout_covers_float32_exactly() -> None:
    # Smallest float32 subnormal is 2**-149, largest finite float32 is below 2**128.
    assert math.ldexp(1.0, EXP_MIN) == 2.0**-149
    assert EXP_MAX == 127
    assert EXP_BINS == EXP_MAX - EXP_MIN + 1 == 277
    assert HIST_BINS == EXP_BINS + 2
    assert HIST_ZERO_BIN == 0
    assert HIST_NONFINITE_BIN == HIST_BINS - 1


def test_stat_columns_in_documented_order() -> None:
    assert [c.name for c in STAT_COLUMNS] == [
        "count",
        "sum",
        "sumsq",
        "absmax",
        "zeros",
        "nonfinite",
    ]


def test_tables_are_well_formed() -> None:
    assert set(TABLES) == {"tensors", "hists", "steps", "scalars"}
    for name, table in TABLES.items():
        assert table.name == name
        assert table.doc
        assert len(set(table.names)) == len(table.names)
        assert table.names[0] == "step"
        for col in table.columns:
            assert col.doc, (name, col.name)
        for key in table.sort_key:
            assert key in table.names
        assert table.column("step").type == "int64"
    with pytest.raises(KeyError, match="no_such_column"):
        TABLES["steps"].column("no_such_column")


@pytest.mark.parametrize("name", sorted(TABLES))
def test_arrow_schema_matches_declaration(name: str) -> None:
    table = TABLES[name]
    s = arrow_schema(table)
    assert s.names == table.names
    assert s.metadata == {b"gradlog_schema_version": str(schema.SCHEMA_VERSION).encode()}
    expected = {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "dict": pa.dictionary(pa.int32(), pa.string()),
        "hist": pa.list_(pa.int64(), HIST_BINS),
    }
    for col, field in zip(table.columns, s, strict=True):
        assert field.type == expected[col.type], col.name
        assert field.nullable == col.nullable, col.name


@pytest.mark.parametrize("name", sorted(TABLES))
def test_polars_schema_matches_declaration(name: str) -> None:
    table = TABLES[name]
    ps = polars_schema(table)
    assert list(ps) == table.names
    for col in table.columns:
        if col.type == "dict":
            assert ps[col.name] == pl.String
        if col.type == "hist":
            assert ps[col.name] == pl.Array(pl.Int64, HIST_BINS)


def test_polars_reads_what_arrow_schema_describes() -> None:
    # An empty table of each Arrow schema, read by polars, has exactly the polars schema.
    for table in TABLES.values():
        empty = arrow_schema(table).empty_table()
        frame = pl.from_arrow(empty)
        assert isinstance(frame, pl.DataFrame)
        got = dict(frame.schema)
        want = polars_schema(table)
        for col in table.columns:
            if col.type == "dict":  # arrow dictionaries arrive as Categorical; cast on read
                continue
            assert got[col.name] == want[col.name], col.name


def test_part_names_sort_in_write_order() -> None:
    assert part_name(0) == "part-000000.parquet"
    assert part_name(17) == "part-000017.parquet"
    names = [part_name(i) for i in (2, 10, 100, 999_999)]
    assert sorted(names) == names
    assert part_name(3).startswith(schema.PART_PREFIX)
    assert part_name(3).endswith(schema.PART_SUFFIX)


def test_meta_and_catalogue_fields_are_documented() -> None:
    for key in ("schema_version", "status", "config", "optimizer", "tensors", "counters"):
        assert META_FIELDS[key]
    for key in ("name", "shape", "numel", "dtype", "in_optimizer", "backward_order"):
        assert CATALOGUE_FIELDS[key]


def test_schema_module_imports_neither_pyarrow_nor_polars_at_import() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gradlog.schema; "
        "print(sorted(m for m in ('pyarrow', 'polars', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_format_doc_lists_every_column_as_declared() -> None:
    """docs/FORMAT.md embeds the generated reference; regenerate it when the schema changes."""
    from pathlib import Path

    from gradlog.schema import markdown_tables

    doc = (Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    assert markdown_tables() in doc


def test_every_table_carries_the_run_id_as_a_dictionary_column() -> None:
    for table in TABLES.values():
        col = table.column("run_id")
        assert col.type == "dict"
        assert table.names[-1] == "run_id"  # appended: positional readers of the others hold
        assert arrow_schema(table).field("run_id").type.value_type == "string"


def test_format_doc_is_regenerated_in_place(tmp_path: Path) -> None:
    from gradlog.schema import regenerate_format_doc

    doc = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"
    copy = tmp_path / "FORMAT.md"
    copy.write_text(doc.read_text(encoding="utf-8").replace("| `run_id` |", "| `gone` |"))
    regenerate_format_doc(str(copy))
    assert copy.read_text(encoding="utf-8") == doc.read_text(encoding="utf-8")
    (tmp_path / "bad.md").write_text("# no tables\n")
    with pytest.raises(ValueError, match="no '## Tables' section"):
        regenerate_format_doc(str(tmp_path / "bad.md"))
