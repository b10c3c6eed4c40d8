"""Open a run lazily: meta.json, the tensor catalogue, and polars scans over its committed parts.

Each part's footer is checked against ``gradlog/schema.py`` before it is scanned; a part that cannot
be read, or that was written with another schema version or other columns, is left out and named in
``RunData.problems``. Nothing is unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from gradlog.analysis.runinfo import derive_status, meta_world_size, part_files, read_meta
from gradlog.schema import SCHEMA_VERSION, TABLES, Table, polars_schema

_CATALOGUE_SCHEMA: dict[str, Any] = {
    "tensor": pl.Categorical,  # as in the frames, so that they join
    "numel": pl.Int64,
    "ndim": pl.Int64,
    "dtype": pl.String,
    "module_type": pl.String,
    "requires_grad": pl.Boolean,
    "in_optimizer": pl.Boolean,
    "depth": pl.Int64,
    "backward_order": pl.Int64,
}


@dataclass
class RunData:
    """One run as found on disk: its meta, catalogue, usable parts and what was wrong."""

    path: Path
    meta: dict[str, Any]
    status: str
    catalogue: pl.DataFrame
    parts: dict[str, list[Path]]
    problems: list[str] = field(default_factory=list)
    step_ranges: dict[Path, tuple[int, int]] = field(default_factory=dict)
    """(first, last) step of each part, from its footer statistics where it has them."""
    rows: dict[str, int] = field(default_factory=dict)
    """Rows of each table over its usable parts, from the footers."""

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id", self.path.name))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def world_size(self) -> int:
        return meta_world_size(self.meta)

    def scan(self, table: str, *, strings: bool = True) -> pl.LazyFrame | None:
        """A lazy scan of ``table`` over its usable parts with a ``rank`` column; None if none.

        Dictionary columns are read as String, or left Categorical with ``strings=False``
        (cheaper to group and compare; cast before joining with String columns).
        """
        files = self.parts.get(table, [])
        if not files:
            return None
        schema = TABLES[table]
        cats = [c.name for c in schema.columns if c.type == "dict"]
        lf = pl.scan_parquet(
            [str(f) for f in files],
            hive_partitioning=True,
            hive_schema={"rank": pl.Int64},
        )
        return lf.with_columns([pl.col(c).cast(pl.String) for c in cats]) if strings else lf

    def parts_in_step_order(self, table: str) -> bool:
        """Whether ``table``'s parts are all of one rank and follow each other in step order.

        Rows inside a part are sorted by the table's sort key (docs/FORMAT.md), so the parts'
        concatenation is then in step order within every (kind, tensor) series.
        """
        files = self.parts.get(table, [])
        if len({f.parent.name for f in files}) > 1:
            return False
        last = None
        for f in files:  # sorted by name, i.e. by part index
            rng = self.step_ranges.get(f)
            if rng is None or (last is not None and rng[0] <= last):
                return False
            last = rng[1]
        return True

    def drop_part(self, table: str, part: Path, reason: str) -> None:
        """Leave ``part`` out of further scans, naming ``reason``."""
        if part in self.parts.get(table, []):
            self.parts[table].remove(part)
            self.problems.append(f"unreadable part {_rel(part, self.path)}: {reason}")


def _rel(part: Path, run_dir: Path) -> str:
    try:
        return str(part.relative_to(run_dir))
    except ValueError:  # pragma: no cover - parts always live under the run
        return str(part)


def check_part(part: Path, table: Table) -> str | None:
    """Why ``part`` cannot be scanned as ``table`` (footer, version, columns), or None if it can."""
    return inspect_part(part, table)[0]


def inspect_part(part: Path, table: Table) -> tuple[str | None, tuple[int, int] | None, int]:
    """(:func:`check_part`'s reason, (first, last) step from the footer statistics or None,
    rows)."""
    try:
        footer = pq.read_metadata(part)
        schema = footer.schema.to_arrow_schema()
    except Exception as exc:  # any corruption: truncated, zero bytes, flipped footer
        return f"{type(exc).__name__}: {str(exc)[:200]}", None, 0
    reason = _schema_problem(schema, table)
    if reason is not None:
        return reason, None, 0
    return None, _step_range(footer), int(footer.num_rows)


def _step_range(footer: Any) -> tuple[int, int] | None:
    """The smallest and largest ``step`` over the row groups' statistics, if all have them."""
    try:
        col = footer.schema.names.index("step")
        lo: list[int] = []
        hi: list[int] = []
        for i in range(footer.num_row_groups):
            st = footer.row_group(i).column(col).statistics
            if st is None or not st.has_min_max:
                return None
            lo.append(int(st.min))
            hi.append(int(st.max))
    except Exception:  # odd statistics: fall back to checking the data
        return None
    return (min(lo), max(hi)) if lo else None


def _schema_problem(schema: Any, table: Table) -> str | None:
    """Why a part with Arrow ``schema`` is not ``table`` of this schema version, or None."""
    meta = schema.metadata or {}
    version = meta.get(b"gradlog_schema_version")
    if version is not None and version.decode(errors="replace") != str(SCHEMA_VERSION):
        return (
            f"written with schema version {version.decode(errors='replace')}, this gradlog reads "
            f"version {SCHEMA_VERSION}"
        )
    expected = polars_schema(table)
    names = list(schema.names)
    if sorted(names) != sorted(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        return f"columns differ from schema (missing {missing}, unexpected {extra})"
    return None


def verify_part(part: Path) -> str | None:
    """Read the whole part (only after a scan failed) to find out whether its data is intact."""
    try:
        pq.read_table(part)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def _catalogue(meta: dict[str, Any], problems: list[str]) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    entries = meta.get("tensors")
    if not isinstance(entries, list):
        problems.append("meta.json has no tensor catalogue; depth and backward order unknown")
        entries = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            problems.append(f"catalogue entry {i} is malformed; skipped")
            continue
        raw_shape = e.get("shape")
        shape: list[Any] = raw_shape if isinstance(raw_shape, list) else []
        bo = e.get("backward_order")
        rows.append(
            {
                "tensor": e["name"],
                "numel": int(e["numel"]) if isinstance(e.get("numel"), int) else None,
                "ndim": len(shape),
                "dtype": str(e.get("dtype", "")),
                "module_type": str(e.get("module_type", "")),
                "requires_grad": bool(e.get("requires_grad", True)),
                "in_optimizer": bool(e.get("in_optimizer", True)),
                "depth": int(e["depth"]) if isinstance(e.get("depth"), int) else i,
                "backward_order": bo if isinstance(bo, int) else None,
            }
        )
    return pl.DataFrame(rows, schema=_CATALOGUE_SCHEMA)


def load_run(path: str | Path) -> RunData:
    """Open the run at ``path``: meta, catalogue and the parts that pass the schema check.

    Raises RunNotFoundError / CorruptRunError only for a missing or unreadable meta.json.
    """
    run_dir = Path(path)
    meta = read_meta(run_dir)
    problems: list[str] = []
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        problems.append(
            f"meta.json schema version {version!r}, this gradlog reads {SCHEMA_VERSION}; parts of "
            "another version are skipped"
        )
    parts: dict[str, list[Path]] = {}
    ranges: dict[Path, tuple[int, int]] = {}
    rows: dict[str, int] = {}
    for name, table in TABLES.items():
        good: list[Path] = []
        rows[name] = 0
        for part in part_files(run_dir, name):
            reason, rng, n = inspect_part(part, table)
            if reason is None:
                good.append(part)
                rows[name] += n
                if rng is not None:
                    ranges[part] = rng
            else:
                problems.append(f"unreadable part {_rel(part, run_dir)}: {reason}")
        parts[name] = good
    for stray in _stray_files(run_dir):
        problems.append(f"ignored stray file {stray}")
    status = derive_status(meta)
    if status == "running":
        problems.append("run is still being written; analysed as far as it got")
    catalogue = _catalogue(meta, problems)
    return RunData(run_dir, meta, status, catalogue, parts, problems, ranges, rows)


def _stray_files(run_dir: Path) -> list[str]:
    """Files inside table directories that are not committed parts or in-progress temporaries."""
    stray: list[str] = []
    for name in TABLES:
        base = run_dir / name
        if not base.is_dir():
            continue
        for f in base.rglob("*"):
            if not f.is_file() or f.name.startswith("."):
                continue
            if (
                f.parent.name.startswith("rank=")
                and f.name.startswith("part-")
                and (f.name.endswith(".parquet"))
            ):
                continue
            stray.append(_rel(f, run_dir))
    return sorted(stray)[:20]
