"""A run directory opened for reading: the one reader of the run format every stage goes through.

``gradlog ls``/``show``, the analysis and (through the analysis) the report open runs here. This
module sits beside :mod:`gradlog.schema` on the ground floor: it imports pyarrow (to read part
footers) but neither polars, scipy nor torch, so the CLI's listing commands stay fast.

Nothing here raises for a bad run. meta.json that is unreadable or not a JSON object, meta fields
of the wrong type, parts that cannot be read or were written with another schema, and stray files
are each named in :attr:`Run.problems` with the reason, and left out; a batch goes on with its
other runs. Only a path that is not a run at all raises (:class:`RunNotFoundError`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import math
import os
import socket
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gradlog.errors import CorruptRunError, RunNotFoundError
from gradlog.footer import footer_problem
from gradlog.schema import (
    META_FILE,
    META_TYPES,
    PART_PREFIX,
    PART_SUFFIX,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    TABLES,
    Table,
    table_at,
)

STALE_HEARTBEAT_SECS = 600.0
"""A 'running' run on another host whose meta.json is older than this is reported as crashed."""

REPEATED_STEPS = "repeated steps "
"""How the footer-level problem about parts that repeat steps begins (the analysis replaces it
with its row-exact one)."""

LOST_PREFIXES = ("unreadable part", "unreadable table", "missing rank")
"""Problems that mean recorded data cannot be used: the run is partial (exit 3)."""

Layout = Literal["single", "replicated", "sharded"]
"""How a run's ranks relate: one rank; every rank holds whole tensors (DDP: replicas of the same
all-reduced gradient, whose additive statistics are averaged over ranks); or ranks hold shards
(FSDP: additive statistics add)."""


def _mode(path: Path, *, follow: bool = True) -> int | None:
    """``path``'s st_mode, or None when it cannot be looked at (missing, no permission, a loop,
    a name the file system rejects): never raises, unlike ``Path.is_dir()`` on EACCES."""
    try:
        return os.stat(path, follow_symlinks=follow).st_mode
    except (OSError, ValueError):
        return None


def is_dir(path: Path) -> bool:
    """Whether ``path`` is a directory one may look at (symbolic links followed)."""
    mode = _mode(path)
    return mode is not None and stat.S_ISDIR(mode)


def is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file one may look at (symbolic links followed)."""
    mode = _mode(path)
    return mode is not None and stat.S_ISREG(mode)


def _pid_alive(pid: int) -> bool:
    if not 0 < pid < 1 << 31:  # no process has it (kill(0) or a negative pid means a group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError, ValueError):
        return False
    return True


def derive_status(meta: dict[str, Any], now: float | None = None) -> str:
    """'finished', 'crashed', 'interrupted' (KeyboardInterrupt) or 'running'; a 'running' run
    whose writer is gone is 'crashed'."""
    status = meta.get("status", "running")
    if status != "running":
        return status if status in ("finished", "crashed", "interrupted") else "crashed"
    now = time.time() if now is None else now
    pid, host = meta.get("pid"), meta.get("host")
    if isinstance(pid, int) and host == socket.gethostname():
        return "running" if _pid_alive(pid) else "crashed"
    heartbeat = meta.get("heartbeat")
    if isinstance(heartbeat, (int, float)) and now - heartbeat > STALE_HEARTBEAT_SECS:
        return "crashed"
    return "running"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


_INT_RANGES: dict[str, tuple[int, int]] = {
    "schema_version": (0, 1 << 31),
    "pid": (1, 1 << 31),
    "world_size": (1, 1 << 24),
    "rank": (0, 1 << 24),
    "first_step": (0, 1 << 62),
    "last_step": (-1, 1 << 62),
}
"""Inclusive ranges of meta.json's integer fields; a value outside is left out and named."""


def _field_problem(key: str, value: Any, allowed: tuple[str, ...] | None) -> str | None:
    """Why ``value`` cannot stand for meta.json field ``key`` (None: it can)."""
    kind = _json_type(value)
    if allowed is not None and not (kind in allowed or (kind == "int" and "float" in allowed)):
        return f"is {kind}, not {' or '.join(allowed)}"
    if kind == "float" and not math.isfinite(value):
        return f"is {value}, not a finite number"
    if kind == "int" and allowed is not None and "float" in allowed:
        try:
            float(value)
        except OverflowError:
            return "is an integer too large for a time"
    lo, hi = _INT_RANGES.get(key, (None, None))
    if kind == "int" and lo is not None and hi is not None and not lo <= value <= hi:
        return f"is {value if abs(value) < 10**20 else 'a huge integer'}, not in [{lo}, {hi}]"
    return None


def validate_meta(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``raw`` without the known fields whose JSON type is not the declared one
    (:data:`gradlog.schema.META_TYPES`), whose number is not finite or whose integer is out of
    range, and a problem naming each field left out."""
    meta: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        why = _field_problem(key, value, META_TYPES.get(key))
        if why is None:
            meta[key] = value
        else:
            problems.append(f"meta.json field {key!r} {why}; ignored")
    return meta, problems


def read_meta(run_dir: Path) -> tuple[dict[str, Any], list[str], bool]:
    """meta.json of ``run_dir`` (validated), what was wrong with it, and whether it could be read
    at all: an unreadable file or one without a JSON object gives an empty meta and False."""
    path = run_dir / META_FILE
    if _mode(run_dir, follow=False) is None:
        raise RunNotFoundError(f"{run_dir} does not exist")
    try:
        os.stat(path)
    except PermissionError as exc:
        return {}, [f"{path} cannot be read: {exc.strerror}"], False
    except OSError:
        pass
    if not is_file(path):
        if _has_tables(run_dir):
            return {}, [f"{path} is missing: the run's parts cannot be analysed without it"], False
        raise RunNotFoundError(
            f"{run_dir} is not a gradlog run (no {META_FILE}); pass a run directory or a directory "
            "of runs"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return {}, [f"{path} cannot be read as JSON: {str(exc)[:200]}"], False
    if not isinstance(raw, dict):
        return {}, [f"{path} does not hold a JSON object"], False
    meta, problems = validate_meta(raw)
    return meta, problems, True


@dataclass(frozen=True)
class Part:
    """One committed part file that passed its footer check."""

    path: Path
    table: str
    rank: int
    rows: int
    steps: tuple[int, int] | None
    """(first, last) step from the footer statistics, when every row group has them."""
    size: int
    mtime_ns: int
    version: int = SCHEMA_VERSION
    """The schema version it was written with (:data:`gradlog.schema.READABLE_VERSIONS`)."""


def inspect_part(path: Path, table: Table) -> tuple[str | None, tuple[int, int] | None, int, int]:
    """(why ``path`` cannot be read as ``table`` or None, (first, last) step or None, rows,
    the schema version it was written with).

    Reads the footer and the ``step`` column (delta-coded: a few bytes per thousand rows). The
    footer's column-chunk types are checked first (:mod:`gradlog.footer`: pyarrow aborts the
    process on a corrupt one), and the step range comes from the data, not from the footer's
    column-chunk statistics (pyarrow 26 aborts building a corrupt chunk's metadata).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:  # by path, Arrow's own files (Python file objects read from Arrow's I/O threads can
        # abort the interpreter at exit); open_run hands a UTF-8 alias of undecodable paths
        source = str(path)
        if (corrupt := footer_problem(source)) is not None:
            return corrupt, None, 0, SCHEMA_VERSION
        footer = pq.read_metadata(source)
        schema = footer.schema.to_arrow_schema()
        reason, version = _schema_problem(schema, table)
        if reason is not None:
            return reason, None, 0, version
        step = pq.read_table(source, columns=["step"], use_threads=False, pre_buffer=False).column(
            "step"
        )
    except Exception as exc:  # any corruption: truncated, zero bytes, flipped footer or pages
        return f"{type(exc).__name__}: {str(exc)[:200]}", None, 0, SCHEMA_VERSION
    rows = int(footer.num_rows)
    if len(step) != rows:
        return f"the step column holds {len(step)} rows, the footer says {rows}", None, 0, version
    if not rows:
        return None, None, 0, version
    if step.null_count:
        return "column step holds nulls", None, 0, version
    bounds = pc.min_max(step)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo < 0:
        return "column step holds negative steps", None, 0, version
    return None, (int(lo), int(hi)), rows, version


_VERSION_LABELS = {str(v): v for v in READABLE_VERSIONS}
"""A part's ``gradlog_schema_version`` label -> the readable version it names."""
_READS = " and ".join(_VERSION_LABELS)
"""The readable versions, as problems name them."""


def _schema_problem(schema: Any, table: Table) -> tuple[str | None, int]:
    """(why a part of ``schema`` is not ``table`` or None, the schema version it matches).

    A part that names its version is checked against that version's columns; one that does
    not (another writer, e.g. Spark, rewrote it) against each readable version's."""
    meta = schema.metadata or {}
    raw = meta.get(b"gradlog_schema_version")
    versions: tuple[int, ...] = tuple(reversed(READABLE_VERSIONS))
    if raw is not None:
        text = raw.decode(errors="replace")
        if text not in _VERSION_LABELS:
            return f"written with schema version {text[:40]}, this gradlog reads {_READS}", 0
        versions = (_VERSION_LABELS[text],)
    first: str | None = None
    for version in versions:
        problem = _columns_problem(schema, table_at(table, version))
        if problem is None:
            return None, version
        first = first or problem
    return first, versions[0]


def part_schema_version(schema: Any, table: Table) -> int:
    """The schema version a part of ``table`` with Arrow ``schema`` was written with: the one it
    names, else the readable version whose columns it has (the current one if none)."""
    return _schema_problem(schema, table)[1] or SCHEMA_VERSION


def _columns_problem(schema: Any, table: Table) -> str | None:
    names = list(schema.names)
    expected = table.names
    if sorted(names) != sorted(expected):
        missing = sorted(set(expected) - set(names))
        extra = sorted(set(names) - set(expected))
        return f"columns differ from schema (missing {missing}, unexpected {extra})"
    for column in table.columns:
        got = schema.field(column.name).type
        if _type_class(got) != _COLUMN_CLASS[column.type]:
            return f"column {column.name!r} is {got}, not {column.type}"
    return None


_COLUMN_CLASS = {
    "int64": "int",
    "int32": "int",
    "float64": "float",
    "float32": "float",
    "bool": "bool",
    "string": "string",
    "dict": "string",
    "hist": "list",
}
"""What kind of Arrow type each schema column type may be read from (any width, any string
encoding: other writers, e.g. Spark, may widen or drop the dictionary)."""


def _type_class(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        return "list" if _type_class(t.value_type) == "int" else "other"
    return "other"


def _rank_of(directory: str) -> int | None:
    if not directory.startswith("rank="):
        return None
    text = directory.removeprefix("rank=")
    return int(text) if text.isdigit() else None


def _catalogue(meta: dict[str, Any], problems: list[str]) -> list[dict[str, Any]]:
    entries = meta.get("tensors")
    if entries is None:
        if meta:
            problems.append("meta.json has no tensor catalogue; depth and backward order unknown")
        return []
    out: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        if isinstance(e, dict) and isinstance(e.get("name"), str):
            out.append(e)
        else:
            problems.append(f"catalogue entry {i} is malformed; skipped")
    return out


@dataclass
class Run:
    """A run directory opened for reading: meta.json (validated), its usable parts per table and
    rank, its status, and everything that was wrong (``problems``)."""

    path: Path
    meta: dict[str, Any]
    status: str
    parts: dict[str, list[Part]]
    """Usable parts of each table, ordered by rank, then part index (write order)."""
    catalogue: list[dict[str, Any]] = field(default_factory=list)
    """The tensor catalogue's well-formed entries (each a dict with a str ``name``)."""
    problems: list[str] = field(default_factory=list)
    readable: bool = True
    """False when meta.json could not be read as a JSON object (nothing else is trusted)."""
    root: Path | None = None
    """Where the parts are read from: ``path``, or a UTF-8 alias of it when ``path`` holds bytes
    that are not UTF-8 (Arrow and polars take only UTF-8 paths); part paths lie below it."""
    _layout: Layout | None = field(default=None, repr=False)

    def rel(self, part: Path) -> str:
        """``part`` relative to the run directory, ``/``-separated."""
        try:
            return part.relative_to(self.root or self.path).as_posix()
        except ValueError:
            return str(part)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id", self.path.name))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def world_size(self) -> int:
        """torch.distributed world size from meta.json, at least the number of ranks on disk."""
        ws = self.meta.get("world_size", 1)
        return max(int(ws), len(self.ranks()))

    def files(self, table: str) -> list[Path]:
        return [p.path for p in self.parts.get(table, [])]

    def ranks(self, table: str | None = None) -> list[int]:
        """Ranks with usable parts (of ``table``, or of any table)."""
        tables = [table] if table else list(self.parts)
        return sorted({p.rank for t in tables for p in self.parts.get(t, [])})

    @property
    def multi_rank(self) -> bool:
        return self.world_size > 1 or len(self.ranks()) > 1

    def rows(self, table: str) -> int:
        return sum(p.rows for p in self.parts.get(table, []))

    def step_range(self, table: str) -> tuple[int, int] | None:
        """(first, last) step of ``table`` from its footers; None if unknown or empty."""
        ranges = [p.steps for p in self.parts.get(table, []) if p.rows]
        if not ranges or any(r is None for r in ranges):
            return None
        return min(r[0] for r in ranges if r), max(r[1] for r in ranges if r)

    @property
    def steps(self) -> int:
        """Recorded optimizer steps (every rank writes a steps row per step), each counted once
        when parts repeat steps (then the step columns of the lowest rank's parts are read)."""
        parts = self.parts.get("steps", [])
        if not repeated_steps(parts):
            return self.rows("steps") // max(1, len(self.ranks("steps")))
        import pyarrow.parquet as pq

        lowest = min(p.rank for p in parts)
        seen: set[int] = set()
        for p in parts:
            if p.rank == lowest:
                with contextlib.suppress(Exception):
                    t = pq.read_table(str(p.path), columns=["step"], use_threads=False)
                    seen.update(t.column("step").to_pylist())
        return len(seen)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (or to the last heartbeat when unfinished); None if
        unknown."""
        start = self.meta.get("start_time")
        end = self.meta.get("end_time") or self.meta.get("heartbeat")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            return max(0.0, float(end) - float(start))
        return None

    @property
    def size_bytes(self) -> int:
        total = 0
        for f in self.path.rglob("*"):
            with contextlib.suppress(OSError):
                if is_file(f):
                    total += f.stat().st_size
        return total

    def tensor_order(self, present: Iterable[str]) -> list[str]:
        """``present`` in depth order (input side first); unknown tensors last, by name."""
        depth: dict[str, int] = {}
        for i, t in enumerate(self.catalogue):
            d = t.get("depth")
            depth[str(t["name"])] = d if isinstance(d, int) and not isinstance(d, bool) else i
        names = list(dict.fromkeys(present))
        known = sorted((n for n in names if n in depth), key=lambda n: depth[n])
        return known + sorted(n for n in names if n not in depth)

    def numel(self) -> dict[str, int]:
        """Elements of each catalogued tensor (where the catalogue says)."""
        return {
            str(t["name"]): int(t["numel"])
            for t in self.catalogue
            if isinstance(t.get("numel"), int) and not isinstance(t.get("numel"), bool)
        }

    @property
    def layout(self) -> Layout:
        """'single', 'replicated' or 'sharded' (see :data:`Layout`).

        Ranks hold replicas when a rank's gradient ``count`` of a tensor equals its catalogued
        ``numel`` (every element on every rank); otherwise shards. Decided from the ``count``
        column of the first gradient part of the lowest rank (one column of one part).
        """
        if self._layout is None:
            self._layout = self._find_layout()
        return self._layout

    def _find_layout(self) -> Layout:
        if not self.multi_rank:
            return "single"
        parts = self.parts.get("tensors") or []
        numel = self.numel()
        if not parts or not numel:
            return "replicated"  # the steps' global norm: replicas agree, so the mean is safe
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(
                str(parts[0].path), columns=["tensor", "kind", "count"], use_threads=False
            )
            t = t.filter(pc.equal(t.column("kind").cast("string"), "grad"))
            names = t.column("tensor").cast("string").to_pylist()
            counts = t.column("count").to_pylist()
        except Exception:  # the readers report the part; assume replicas
            return "replicated"
        pairs = [(n, c) for n, c in zip(names, counts, strict=True) if numel.get(n)]
        if not pairs:
            return "replicated"
        return "replicated" if all(c == numel[n] for n, c in pairs) else "sharded"

    def fingerprint(self) -> str:
        """A digest of what the analysis reads: meta.json and every usable part (path, size,
        modification time). Any part added, removed or rewritten changes it."""
        h = hashlib.sha256()
        meta = self.path / META_FILE
        with contextlib.suppress(OSError):
            st = meta.stat()
            h.update(f"{META_FILE}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        for table in sorted(self.parts):
            for p in self.parts[table]:
                rel = self.rel(p.path)
                h.update(f"{rel}\0{p.size}\0{p.mtime_ns}\n".encode())
        return h.hexdigest()[:32]

    def require(self) -> Run:
        """This run if its meta.json could be read, else CorruptRunError naming why."""
        if not self.readable:
            raise CorruptRunError(self.problems[0] if self.problems else f"{self.path}: unreadable")
        return self

    @property
    def broken(self) -> str | None:
        """Why this run cannot be trusted whole (meta.json unreadable, crashed, parts that cannot
        be read); None when it can. The CLI exits 3 on such a run."""
        if not self.readable:
            return self.problems[0] if self.problems else "meta.json cannot be read"
        if self.status == "crashed":
            error = self.meta.get("error")
            return f"crashed: {error}" if isinstance(error, str) else "crashed"
        lost = [p for p in self.problems if p.startswith(LOST_PREFIXES)]
        return lost[0] if lost else None

    def summary(self, *, detail: bool = False) -> dict[str, Any]:
        """What ``gradlog ls --json`` (and with ``detail``, ``show --json``) prints."""
        out: dict[str, Any] = {
            "path": str(self.path),
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "steps": self.steps,
            "tensors": len(self.catalogue),
            "parts": sum(len(v) for v in self.parts.values()),
            "size_bytes": self.size_bytes,
            "duration_s": self.duration_s,
            "problems": list(self.problems),
            "broken": self.broken,
        }
        if detail:
            out["rows"] = {t: self.rows(t) for t in TABLES}
            out["meta"] = self.meta
        return out


def _has_tables(directory: Path) -> bool:
    """Whether ``directory`` holds a table directory with rank directories (a run's data)."""
    for name in TABLES:
        with contextlib.suppress(OSError):
            base = directory / name
            if is_dir(base):
                with os.scandir(base) as it:
                    if any(_rank_of(e.name) is not None for e in it):
                        return True
    return False


def _entries(directory: Path, rel: str, problems: list[str]) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` in name order; [] and a problem when it cannot be listed."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        problems.append(f"unreadable table {rel}: {exc.strerror or type(exc).__name__}")
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _parts(
    run_dir: Path, name: str, table: Table, problems: list[str], stray: list[str]
) -> list[Part]:
    """The usable parts of table ``name``; each unusable part is named in ``problems`` and
    every entry that is not a part (nor a hidden temporary) in ``stray``."""
    base = run_dir / name
    if not is_dir(base):
        if _mode(base, follow=False) is not None:
            stray.append(name)
        return []
    found: list[tuple[int, Path]] = []
    for rank_entry in _entries(base, name, problems):
        rank = _rank_of(rank_entry.name)
        if rank_entry.name.startswith("."):
            continue
        if rank is None or not _is_dir(rank_entry):
            stray.append(f"{name}/{rank_entry.name}" + ("/" if _is_dir(rank_entry) else ""))
            continue
        rel = f"{name}/{rank_entry.name}"
        for entry in _entries(Path(rank_entry.path), rel, problems):
            if entry.name.startswith("."):
                continue
            if part_index(entry.name) is not None and not _is_dir(entry):
                found.append((rank, Path(entry.path)))
            else:
                stray.append(f"{rel}/{entry.name}" + ("/" if _is_dir(entry) else ""))
    out: list[Part] = []
    for rank, path in sorted(found, key=lambda f: (f[0], part_index(f[1].name))):
        rel = path.relative_to(run_dir).as_posix()
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode):
                raise OSError(0, "not a regular file")
        except OSError as exc:
            problems.append(f"unreadable part {rel}: {exc.strerror or type(exc).__name__}")
            continue
        reason, steps, rows, version = inspect_part(path, table)
        if reason is not None:
            problems.append(f"unreadable part {rel}: {reason}")
            continue
        out.append(Part(path, name, rank, rows, steps, st.st_size, st.st_mtime_ns, version))
    return out


def part_index(name: str) -> int | None:
    """The index of a committed part's file name (``part-000012.parquet``: 12), else None."""
    digits = name.removeprefix(PART_PREFIX).removesuffix(PART_SUFFIX)
    if len(digits) + len(PART_PREFIX) + len(PART_SUFFIX) != len(name):
        return None
    return int(digits) if digits.isascii() and digits.isdigit() else None


def repeated_steps(parts: list[Part]) -> list[tuple[Part, Part, tuple[int, int]]]:
    """(earlier, later, (first, last) step both hold) for each pair of parts of one table and
    rank whose footer step ranges overlap (a resumed run, a copied part). Parts are in write
    order within a rank, so the later part is the later writer."""
    out: list[tuple[Part, Part, tuple[int, int]]] = []
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            if a.rank != b.rank or a.steps is None or b.steps is None or not a.rows or not b.rows:
                continue
            lo, hi = max(a.steps[0], b.steps[0]), min(a.steps[1], b.steps[1])
            if lo <= hi:
                out.append((a, b, (lo, hi)))
    return out


def _missing_ranks(meta: dict[str, Any], parts: dict[str, list[Part]]) -> list[int]:
    """Ranks below meta.json's world size that wrote no usable ``steps`` part (every rank writes
    one row per step there); none for a run still being written."""
    ws = meta.get("world_size", 1)
    if not isinstance(ws, int) or ws <= 1 or meta.get("status", "running") == "running":
        return []
    have = {p.rank for p in parts.get("steps", [])}
    return [r for r in range(ws) if r not in have]


_ALIASES: dict[Path, Path] = {}


def _utf8_path(path: Path) -> Path:
    """``path``, or when it is not valid UTF-8 (undecodable bytes in a name) a symbolic link to
    it in a private temporary directory (removed at exit) under a UTF-8 name."""
    try:
        str(path).encode("utf-8")
        return path
    except UnicodeEncodeError:
        pass
    if path in _ALIASES:
        return _ALIASES[path]
    import atexit
    import shutil
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="gradlog-utf8-"))
    atexit.register(shutil.rmtree, home, True)
    alias = home / "run"  # its own directory: one fixed ASCII name
    try:
        alias.symlink_to(path.absolute(), target_is_directory=True)
    except OSError:
        return path
    _ALIASES[path] = alias
    return alias


def open_run(path: str | Path) -> Run:
    """Open the run at ``path``: meta.json (validated) and the parts that pass their footer check.

    Raises :class:`RunNotFoundError` only when ``path`` is not a run directory; everything else
    that is wrong is named in ``Run.problems``.
    """
    shown_dir = Path(path)
    meta, problems, readable = read_meta(shown_dir)
    run_dir = _utf8_path(shown_dir)
    if readable:
        version = meta.get("schema_version")
        if version not in READABLE_VERSIONS:
            problems.append(
                f"meta.json schema version {version!r}, this gradlog reads {_READS}; "
                "parts of another version are skipped"
            )
    stray: list[str] = []
    parts = {name: _parts(run_dir, name, table, problems, stray) for name, table in TABLES.items()}
    for entry in stray[:20]:
        problems.append(f"ignored stray entry {entry}")
    if len(stray) > 20:
        problems.append(f"ignored {len(stray) - 20} more stray entries")
    for name, table_parts in parts.items():
        for a, b, (lo, hi) in repeated_steps(table_parts)[:5]:
            problems.append(
                f"{REPEATED_STEPS}{lo}-{hi} in table {name}: "
                f"{a.path.relative_to(run_dir).as_posix()} and "
                f"{b.path.relative_to(run_dir).as_posix()} both hold them; the later part's "
                "rows are used"
            )
    if readable and not any(parts.values()):
        problems.append("no parts in any table: nothing was recorded")
    if readable and (lost := _missing_ranks(meta, parts)):
        shown = ", ".join(map(str, lost[:10])) + (", ..." if len(lost) > 10 else "")
        problems.append(
            f"missing rank: rank {shown} of world size {meta['world_size']} wrote no steps; the "
            "run is partial"
        )
    status = derive_status(meta) if readable else "unreadable"
    catalogue = _catalogue(meta, problems)
    return Run(shown_dir, meta, status, parts, catalogue, problems, readable, run_dir)


def _is_run(directory: Path) -> bool:
    """Whether ``directory`` is a run: it holds meta.json, or it cannot be looked into (named as
    an unreadable run rather than skipped), or it holds a run's tables without meta.json."""
    try:
        os.stat(directory / META_FILE)
    except PermissionError:
        return True
    except OSError:
        return _has_tables(directory)
    return is_file(directory / META_FILE) or _has_tables(directory)


def find_runs(root: str | Path) -> list[Path]:
    """``root`` itself if it is a run, else every run at any depth below it, in path order.

    A directory holding ``meta.json`` (or table directories of parts, or that cannot be read) is
    a run; nothing inside a run is searched, nor hidden directories (``.git``) or symbolic links
    to directories (no cycles).
    """
    root = Path(root)
    if _mode(root, follow=False) is None:
        raise RunNotFoundError(f"{root} does not exist")
    if _is_run(root):
        return [root]
    if not is_dir(root):
        raise RunNotFoundError(f"{root} is not a run directory nor a directory of runs")
    runs: list[Path] = []
    for current, dirs, _files in os.walk(root):
        here = Path(current)
        below = [d for d in dirs if not d.startswith(".") and not (here / d).is_symlink()]
        runs += [here / d for d in below if _is_run(here / d)]
        dirs[:] = sorted(d for d in below if not _is_run(here / d))
    return sorted(runs, key=lambda p: p.parts)


def _meta_run_id(run_dir: Path) -> str | None:
    """The ``run_id`` in ``run_dir``'s meta.json, or None when it cannot be read."""
    with contextlib.suppress(OSError, UnicodeDecodeError, ValueError, RecursionError):
        raw = json.loads((run_dir / META_FILE).read_text(encoding="utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("run_id"), str):
            return str(raw["run_id"])
    return None


def run_matches(run_dir: Path, root: Path, patterns: Iterable[str]) -> bool:
    """Whether a glob in ``patterns`` matches the run's directory name, its path relative to
    ``root`` (``/``-separated) or its meta.json ``run_id``."""
    names = [run_dir.name]
    with contextlib.suppress(ValueError):
        names.append(run_dir.relative_to(root).as_posix())
    pats = list(patterns)
    if not pats:
        return False
    if any(fnmatch.fnmatchcase(n, p) for n in names for p in pats):
        return True
    run_id = _meta_run_id(run_dir)
    return run_id is not None and any(fnmatch.fnmatchcase(run_id, p) for p in pats)


def discover(
    paths: Iterable[str | Path],
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every run under ``paths`` once (in order), and (path, why) for each path without runs.

    With ``include`` a run must match one of its globs, and it must match none of ``exclude``
    (see :func:`run_matches`); a path whose runs are all filtered out counts as without runs.
    """
    inc, exc = list(include), list(exclude)
    runs: list[Path] = []
    seen: set[Path] = set()
    missing: list[tuple[Path, str]] = []
    for p in paths:
        path = Path(p)
        try:
            found = find_runs(path)
        except RunNotFoundError as err:
            missing.append((path, str(err)))
            continue
        base = path if found != [path] else path.parent
        kept = [
            r
            for r in found
            if (not inc or run_matches(r, base, inc)) and not run_matches(r, base, exc)
        ]
        if not found:
            missing.append((path, f"no runs under {path} (a run is a directory with {META_FILE})"))
        elif not kept:
            missing.append((path, f"no runs under {path} match --include/--exclude"))
        for run in kept:
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(run)
    return runs, missing
