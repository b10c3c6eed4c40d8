"""A run for the analysis: the opened run directory (:mod:`gradlog.rundir`), its catalogue as a
polars frame, and lazy polars scans over its usable parts.

Parts' footers were checked against ``gradlog/schema.py`` when the run was opened. Before the
analysis uses a part, :func:`from_run` reads it once whole with pyarrow, verifying its page
checksums and its values (:func:`check_part`); a part that fails is left out and named in
``RunData.problems``. Steps recorded by more than one part of a table and rank (a resumed run)
are resolved here too: the later part's rows win (:func:`superseded_rows`), and every reader
drops the earlier rows through ``RunData.superseded``. Nothing is unpickled.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gradlog.rundir import REPEATED_STEPS, Layout, Run, open_run, part_schema_version
from gradlog.schema import (
    PART_PREFIX,
    PART_SUFFIX,
    SCHEMA_VERSION,
    TABLES,
    Table,
    arrow_schema,
    polars_schema,
    table_at,
)

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
    """One run as the analysis reads it: the opened :class:`Run`, its catalogue frame, and the
    usable parts of each table (shrinks when a part's data proves corrupt)."""

    run: Run
    catalogue: pl.DataFrame
    parts: dict[str, list[Path]]
    step_ranges: dict[Path, tuple[int, int]] = field(default_factory=dict)
    """(first, last) step of each part (its footer statistics, checked against its data)."""
    superseded: dict[Path, npt.NDArray[np.int64]] = field(default_factory=dict)
    """Rows (positions in the part, ascending) that a later part of the same table and rank
    recorded again: the later rows win, these are left out by every reader."""
    part_rows: dict[Path, int] = field(default_factory=dict)
    """Rows of each part, from its footer."""
    versions: dict[Path, int] = field(default_factory=dict)
    """Schema version of each part written with another than the current one (an older run)."""

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.run.meta

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def problems(self) -> list[str]:
        return self.run.problems

    @property
    def rows(self) -> dict[str, int]:
        """Rows of each table over its usable parts (from the footers), less superseded rows."""
        out = {}
        for t in TABLES:
            files = self.parts.get(t, [])
            total = sum(self.part_rows.get(f, 0) for f in files)
            out[t] = total - sum(len(self.superseded.get(f, ())) for f in files)
        return out

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def world_size(self) -> int:
        return self.run.world_size

    @property
    def layout(self) -> Layout:
        return self.run.layout

    def scan(
        self, table: str, *, strings: bool = True, only: Sequence[Path] | None = None
    ) -> pl.LazyFrame | None:
        """A lazy scan of ``table`` over its usable parts (those also in ``only``, if given)
        with a ``rank`` column; None if none.

        Dictionary columns are read as String, or left Categorical with ``strings=False``
        (cheaper to group and compare; cast before joining with String columns).
        """
        files = self.parts.get(table, [])
        if only is not None:
            wanted = set(only)
            files = [f for f in files if f in wanted]
        if not files:
            return None
        schema = TABLES[table]
        cats = [c.name for c in schema.columns if c.type == "dict"]
        if any(f in self.versions for f in files):  # an older run: each part in today's columns
            pieces = [_current_columns(self._scan_alone(f), schema) for f in files]
            lf = pl.concat(pieces, how="vertical")
        elif not any(f in self.superseded for f in files):
            lf = _scan(files)
        else:  # parts with superseded rows are scanned alone, without those rows
            pieces = []
            plain: list[Path] = []
            for f in files:
                drop = self.superseded.get(f)
                if drop is None:
                    plain.append(f)
                    continue
                if plain:
                    pieces.append(_scan(plain))
                    plain = []
                pieces.append(self._scan_alone(f))
            if plain:
                pieces.append(_scan(plain))
            lf = pl.concat(pieces, how="vertical")
        return lf.with_columns([pl.col(c).cast(pl.String) for c in cats]) if strings else lf

    def _scan_alone(self, part: Path) -> pl.LazyFrame:
        """``part`` scanned alone, without its superseded rows (if it has any)."""
        lf = _scan([part])
        drop = self.superseded.get(part)
        if drop is None:
            return lf
        rows = pl.Series(drop, dtype=pl.Int64).implode()
        keep = ~pl.col("_row").cast(pl.Int64).is_in(rows)
        return lf.with_row_index("_row").filter(keep).drop("_row")

    def parts_in_step_order(self, table: str) -> bool:
        """Whether ``table``'s parts are all of one rank and follow each other in step order.

        Rows inside a part are sorted by the table's sort key (docs/FORMAT.md), so the parts'
        concatenation is then in step order within every (kind, tensor) series. Parts whose
        steps overlap (a resumed run) are not: the caller checks or sorts the rows.
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
            self.problems.append(f"unreadable part {self.run.rel(part)}: {reason}")


def _current_columns(lf: pl.LazyFrame, table: Table) -> pl.LazyFrame:
    """A part of an older schema version in ``table``'s current columns (floats widened, columns
    the current version dropped left out), and ``rank``."""
    want = polars_schema(table)
    return lf.select(
        *[pl.col(c).cast(t) if t != pl.String else pl.col(c) for c, t in want.items()],
        pl.col("rank"),
    )


def _scan(files: Sequence[Path]) -> pl.LazyFrame:
    return pl.scan_parquet(
        [str(f) for f in files], hive_partitioning=True, hive_schema={"rank": pl.Int64}
    )


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column read as ``got`` holds the declared ``want`` (a dictionary-encoded string
    may come back plain from another writer)."""
    if got == want:
        return True

    def text(t: pa.DataType) -> bool:
        if pa.types.is_dictionary(t):
            t = t.value_type
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t))

    return text(got) and text(want)


@dataclass(frozen=True)
class PartCheck:
    """What reading a whole part found: why it cannot be used (None: it can), and its
    (first, last) step when it holds rows."""

    problem: str | None
    steps: tuple[int, int] | None = None


CHECK_ROWS = 1 << 14
"""Rows :func:`check_part` decodes at a time (a ``hists`` row holds 279 counts: 37 MB)."""


def check_part(part: Path, table: Table) -> PartCheck:
    """Read ``part`` whole with pyarrow (a batch at a time), verifying every page's CRC32 (the
    writer stores them), then its values: every column of the declared type, no nulls in a
    non-nullable column, steps non-negative, each row group's rows and step min/max equal to its
    footer's (the readers trust those to order and window parts); and the footer's schema as
    polars parses it (:func:`_polars_footer`). Not covered: docs/FORMAT.md, "Integrity"."""
    try:
        pf = pq.ParquetFile(part, page_checksum_verification=True)
        footer = pf.metadata
        table = table_at(table, part_schema_version(pf.schema_arrow, table))
        step_col = footer.schema.names.index("step")
        lo: int | None = None
        hi: int | None = None
        for i in range(footer.num_row_groups):
            rows, first, last = 0, None, None
            for batch in pf.iter_batches(CHECK_ROWS, row_groups=[i], use_threads=False):
                problem = _check_values(batch, table)
                if problem is not None:
                    return PartCheck(problem)
                rows += batch.num_rows
                if batch.num_rows:
                    mm = pc.min_max(batch.column("step"))
                    a, b = int(mm["min"].as_py()), int(mm["max"].as_py())
                    first = a if first is None else min(first, a)
                    last = b if last is None else max(last, b)
            if rows != footer.row_group(i).num_rows:
                return PartCheck(
                    f"row group {i} holds {rows} rows, its footer says "
                    f"{footer.row_group(i).num_rows}"
                )
            if first is None or last is None:
                continue
            if first < 0:
                return PartCheck("column step holds negative steps")
            stats = footer.row_group(i).column(step_col).statistics
            if stats is not None and stats.has_min_max and (stats.min, stats.max) != (first, last):
                return PartCheck(
                    f"row group {i} holds steps {first}..{last}, its footer statistics say "
                    f"{stats.min}..{stats.max}"
                )
            lo = first if lo is None else min(lo, first)
            hi = last if hi is None else max(hi, last)
        problem = _polars_footer(part, table)  # polars parses the footer itself: it must agree
        if problem is not None:
            return PartCheck(problem)
    except Exception as exc:  # checksum mismatch, undecodable page, bad thrift: all the same
        return PartCheck(f"{type(exc).__name__}: {str(exc)[:200]}")
    return PartCheck(None, None if lo is None or hi is None else (lo, hi))


def _polars_type(t: pl.DataType) -> str:
    return "text" if isinstance(t, (pl.String, pl.Categorical, pl.Enum)) else str(t)


@functools.cache
def _polars_schema(table: Table) -> pl.Schema:
    return pl.DataFrame(_arrow_schema(table).empty_table()).schema


def _polars_footer(part: Path, table: Table) -> str | None:
    """Why polars, which parses the footer's own schema (pyarrow prefers the ``ARROW:schema``
    copy), would read ``part`` other than declared; None when it agrees."""
    want = _polars_schema(table)
    got = pl.read_parquet_schema(part)
    for name, dtype in want.items():
        have = got.get(name)
        if have is None:
            return f"polars reads no column {name}"
        if _polars_type(have) != _polars_type(dtype):
            return f"polars reads column {name} as {have}, not {dtype}"
    return None


def _check_values(data: pa.RecordBatch, table: Table) -> str | None:
    for f in _arrow_schema(table):
        got = data.schema.field(f.name).type
        if not _same_type(got, f.type):
            return f"column {f.name} is {got}, not {f.type}"
        if not f.nullable and data.column(f.name).null_count:
            return f"column {f.name} holds nulls"
    return None


@functools.cache
def _arrow_schema(table: Table) -> pa.Schema:
    return arrow_schema(table)


def verify_part(part: Path, table: str) -> str | None:
    """Why ``part`` of ``table`` cannot be used, or None: :func:`check_part`'s verdict, else
    whether polars can read it whole (it parses the page headers, which no CRC covers, itself,
    and stricter than pyarrow). Called for each part after a scan failed."""
    problem = check_part(part, TABLES[table]).problem
    if problem is not None:
        return problem
    try:
        _scan([part]).collect()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # polars errors and Rust panics alike
        return f"polars cannot read it: {type(exc).__name__}: {str(exc)[:200]}"
    return None


def check_parts(run: RunData) -> None:
    """Verify every usable part of ``run`` once (:func:`check_part`, a few parts at a time on
    reader threads: pyarrow releases the GIL), leaving out and naming those that fail and
    recording the step range of those whose footer has none."""
    todo = [(t, p) for t in TABLES for p in run.parts.get(t, [])]
    if not todo:
        return
    workers = max(1, min(4, os.cpu_count() or 1, len(todo)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gradlog-check") as pool:
        checks = list(pool.map(lambda tp: check_part(tp[1], TABLES[tp[0]]), todo))
    for (table, part), check in zip(todo, checks, strict=True):
        if check.problem is not None:
            run.drop_part(table, part, check.problem)
            run.step_ranges.pop(part, None)
        elif check.steps is not None:
            run.step_ranges[part] = check.steps


_KEYS: dict[str, tuple[str, ...]] = {
    "tensors": ("step", "tensor", "kind"),
    "hists": ("step", "tensor", "kind"),
    "steps": ("step",),
    "scalars": ("step", "name"),
}
"""What one row of each table stands for: a later part's row replaces an earlier one's."""


def _part_index(part: Path) -> int:
    text = part.name.removeprefix(PART_PREFIX).removesuffix(PART_SUFFIX)
    return int(text) if text.isdigit() else -1


def _overlapping(parts: list[Path], ranges: dict[Path, tuple[int, int]]) -> list[Path]:
    """The parts whose step range overlaps another's (in ``parts``' order)."""
    spans = sorted((ranges[p][0], ranges[p][1], i) for i, p in enumerate(parts) if p in ranges)
    hit: set[int] = set()
    reach, owner = -1, -1
    for a, b, i in spans:
        if owner >= 0 and a <= reach:
            hit.update((i, owner))
        if b > reach:
            reach, owner = b, i
    return [p for i, p in enumerate(parts) if i in hit]


@dataclass(frozen=True)
class Repeats:
    """Rows of one table recorded again by a later part: per earlier part, the positions of
    its replaced rows; the steps concerned; every part involved; the most copies of a row."""

    rows: dict[Path, npt.NDArray[np.int64]]
    steps: list[int]
    parts: list[Path]
    copies: int


def superseded_rows(
    table: str, parts: Sequence[Path], ranges: dict[Path, tuple[int, int]]
) -> Repeats | None:
    """The rows of ``table`` that a later part of the same rank recorded again (same step and
    key, :data:`_KEYS`): the last writer wins. Parts are numbered in write order (a resumed
    process continues the numbers), so the later part is the one with the higher index. Only
    parts whose step ranges overlap are read (their key columns); None when nothing repeats."""
    keys = list(_KEYS[table])
    by_rank: dict[str, list[Path]] = {}
    for p in parts:
        by_rank.setdefault(p.parent.name, []).append(p)
    rows: dict[Path, npt.NDArray[np.int64]] = {}
    steps: set[int] = set()
    involved: set[Path] = set()
    copies = 1
    for group in by_rank.values():
        cands = sorted(_overlapping(group, ranges), key=_part_index)
        if len(cands) < 2:
            continue
        frames = [
            pl.read_parquet(p, columns=keys)
            .with_columns(pl.col(c).cast(pl.String) for c in keys if c != "step")
            .with_row_index("_row")
            .with_columns(pl.lit(i, pl.Int64).alias("_part"))
            for i, p in enumerate(cands)
        ]
        rows_all = pl.concat(frames).with_columns(
            pl.col("_part").max().over(keys).alias("_last"),
            pl.len().over(keys).alias("_n"),
        )
        lost = rows_all.filter(pl.col("_part") < pl.col("_last"))
        if lost.is_empty():
            continue
        copies = max(copies, int(lost.select(pl.col("_n").max()).item()))
        steps.update(lost["step"].unique().to_list())
        for (i,), sub in lost.group_by("_part"):
            rows[cands[int(i)]] = np.sort(sub["_row"].to_numpy().astype(np.int64))
        for i in set(lost["_part"].to_list()) | set(lost["_last"].to_list()):
            involved.add(cands[int(i)])
    if not rows:
        return None
    order = {p: i for i, p in enumerate(parts)}
    return Repeats(rows, sorted(steps), sorted(involved, key=order.__getitem__), copies)


def _spans(steps: list[int], most: int = 5) -> str:
    """Sorted steps as ranges: '10-19, 25, 30-31' (the first ``most`` ranges)."""
    spans: list[tuple[int, int]] = []
    for s in steps:
        if spans and s == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], s)
        else:
            spans.append((s, s))
    text = ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in spans[:most])
    return text + (f" and {len(spans) - most} more ranges" if len(spans) > most else "")


def repeat_problem(table: str, repeats: Repeats, base: Path, most: int = 6) -> str:
    """The problem naming ``table``'s repeated steps and the parts that hold them."""
    names = [p.relative_to(base).as_posix() for p in repeats.parts]
    listed = ", ".join(names[:most]) + (
        f" and {len(names) - most} more" if len(names) > most else ""
    )
    times = "twice" if repeats.copies <= 2 else f"up to {repeats.copies} times"
    word = "step" if len(repeats.steps) == 1 else "steps"
    return (
        f"{word} {_spans(repeats.steps)} of table {table} recorded {times} ({listed}); "
        "the later part's rows are used"
    )


def resolve_repeats(run: RunData) -> None:
    """Find the rows of every table that a later part recorded again, leave them out of every
    reader (``run.superseded``) and name them in ``run.problems`` once per table.

    Opening the run may have named overlapping footer step ranges already ('repeated steps ...',
    one line per pair of parts); the rows read here say exactly which steps repeat (parts that
    only share a step split between them repeat nothing), so those lines give way to these."""
    run.problems[:] = [p for p in run.problems if not p.startswith(REPEATED_STEPS)]
    for table in TABLES:
        try:
            found = superseded_rows(table, run.parts.get(table, []), run.step_ranges)
        except Exception as exc:  # parts were verified; still, never abort the run for this
            run.problems.append(
                f"table {table}: repeated steps could not be resolved: {type(exc).__name__}: "
                f"{exc!s:.200}"
            )
            continue
        if found is None:
            continue
        run.superseded.update(found.rows)
        # parts lie below the run's read root (a UTF-8 alias of an undecodable path)
        run.problems.append(repeat_problem(table, found, (run.run.root or run.path) / table))


def _catalogue(run: Run) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    for i, e in enumerate(run.catalogue):
        raw_shape = e.get("shape")
        shape: list[Any] = raw_shape if isinstance(raw_shape, list) else []
        bo, depth, numel = e.get("backward_order"), e.get("depth"), e.get("numel")
        rows.append(
            {
                "tensor": e["name"],
                "numel": numel if isinstance(numel, int) and not isinstance(numel, bool) else None,
                "ndim": len(shape),
                "dtype": str(e.get("dtype", "")),
                "module_type": str(e.get("module_type", "")),
                "requires_grad": bool(e.get("requires_grad", True)),
                "in_optimizer": bool(e.get("in_optimizer", True)),
                "depth": depth if isinstance(depth, int) and not isinstance(depth, bool) else i,
                "backward_order": bo if isinstance(bo, int) and not isinstance(bo, bool) else None,
            }
        )
    return pl.DataFrame(rows, schema=_CATALOGUE_SCHEMA)


def from_run(run: Run, *, verify: bool = True) -> RunData:
    """The analysis's view of an opened run: every part verified once (:func:`check_parts`,
    unless ``verify`` is False) and repeated steps resolved (:func:`resolve_repeats`)."""
    parts = {t: run.files(t) for t in TABLES}
    ranges = {p.path: p.steps for ps in run.parts.values() for p in ps if p.steps is not None}
    sizes = {p.path: p.rows for ps in run.parts.values() for p in ps}
    older = {
        p.path: p.version for ps in run.parts.values() for p in ps if p.version != SCHEMA_VERSION
    }
    if run.status == "running":
        run.problems.append("run is still being written; analysed as far as it got")
    data = RunData(run, _catalogue(run), parts, ranges, part_rows=sizes, versions=older)
    if verify:
        check_parts(data)
    resolve_repeats(data)
    return data


def load_run(path: str | Path) -> RunData:
    """Open the run at ``path`` for the analysis.

    Raises RunNotFoundError for a path that is not a run, CorruptRunError for a meta.json that
    cannot be read as a JSON object; every other defect is named in ``problems``.
    """
    return from_run(open_run(path).require())
