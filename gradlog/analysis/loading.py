"""A run for the analysis: the opened run directory (:mod:`gradlog.rundir`), its catalogue as a
polars frame, and lazy polars scans over its usable parts.

Parts were checked against ``gradlog/schema.py`` when the run was opened; a part whose data turns
out corrupt while it is scanned is left out here and named in ``RunData.problems``. Nothing is
unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from gradlog.rundir import Layout, Run, open_run
from gradlog.schema import TABLES

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
    """(first, last) step of each part, from its footer statistics where it has them."""

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
        """Rows of each table over its usable parts, from the footers."""
        return {t: self.run.rows(t) for t in TABLES}

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


def verify_part(part: Path) -> str | None:
    """Read the whole part (only after a scan failed) to find out whether its data is intact."""
    try:
        pq.read_table(part)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


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


def from_run(run: Run) -> RunData:
    """The analysis's view of an opened run."""
    parts = {t: run.files(t) for t in TABLES}
    ranges = {p.path: p.steps for ps in run.parts.values() for p in ps if p.steps is not None}
    if run.status == "running":
        run.problems.append("run is still being written; analysed as far as it got")
    return RunData(run, _catalogue(run), parts, ranges)


def load_run(path: str | Path) -> RunData:
    """Open the run at ``path`` for the analysis.

    Raises RunNotFoundError for a path that is not a run, CorruptRunError for a meta.json that
    cannot be read as a JSON object; every other defect is named in ``problems``.
    """
    return from_run(open_run(path).require())
