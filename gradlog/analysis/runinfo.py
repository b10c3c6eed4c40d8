"""Run discovery and summaries from meta.json and Parquet footers (cheap: no data is scanned)."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from gradlog.errors import CorruptRunError, RunNotFoundError
from gradlog.schema import META_FILE, PART_PREFIX, PART_SUFFIX, TABLES

STALE_HEARTBEAT_SECS = 600.0
"""A 'running' run on another host whose meta.json is older than this is reported as crashed."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def derive_status(meta: dict[str, Any], now: float | None = None) -> str:
    """'finished', 'crashed' or 'running'; a 'running' run whose writer is gone is 'crashed'."""
    status = str(meta.get("status", "running"))
    if status != "running":
        return status if status in ("finished", "crashed") else "crashed"
    now = time.time() if now is None else now
    pid, host = meta.get("pid"), meta.get("host")
    if isinstance(pid, int) and host == socket.gethostname():
        return "running" if _pid_alive(pid) else "crashed"
    heartbeat = meta.get("heartbeat")
    if isinstance(heartbeat, (int, float)) and now - heartbeat > STALE_HEARTBEAT_SECS:
        return "crashed"
    return "running"


def meta_world_size(meta: dict[str, Any]) -> int:
    """The run's world size from meta.json (1 when absent or invalid)."""
    ws = meta.get("world_size", 1)
    return ws if isinstance(ws, int) and ws > 0 else 1


def meta_duration_s(meta: dict[str, Any]) -> float | None:
    """Seconds from start to end (or to the last heartbeat when unfinished); None if unknown."""
    start = meta.get("start_time")
    end = meta.get("end_time") or meta.get("heartbeat")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return max(0.0, float(end) - float(start))
    return None


def part_files(run_dir: Path, table: str) -> list[Path]:
    """Committed part files of ``table`` over all ranks (hidden temporary files excluded)."""
    base = run_dir / table
    if not base.is_dir():
        return []
    return sorted(base.glob(f"rank=*/{PART_PREFIX}*{PART_SUFFIX}"))


def read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json of ``run_dir``; clear errors for a missing or corrupt file."""
    path = run_dir / META_FILE
    if not run_dir.exists():
        raise RunNotFoundError(f"{run_dir} does not exist")
    if not path.is_file():
        raise RunNotFoundError(
            f"{run_dir} is not a gradlog run (no {META_FILE}); pass a run directory or a directory "
            "of runs"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptRunError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CorruptRunError(f"{path} does not hold a JSON object")
    return meta


@dataclass
class RunInfo:
    """What ``gradlog ls`` and ``gradlog show`` print about a run."""

    path: Path
    meta: dict[str, Any]
    status: str
    steps: int
    parts: int
    size_bytes: int
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id", self.path.name))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def tensors(self) -> int:
        cat = self.meta.get("tensors")
        return len(cat) if isinstance(cat, list) else 0

    @property
    def duration_s(self) -> float | None:
        return meta_duration_s(self.meta)

    @property
    def duration_text(self) -> str:
        d = self.duration_s
        if d is None:
            return "?"
        minutes, seconds = divmod(round(d), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"

    def to_json(self, *, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.path),
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "steps": self.steps,
            "tensors": self.tensors,
            "parts": self.parts,
            "size_bytes": self.size_bytes,
            "duration_s": self.duration_s,
            "problems": self.problems,
        }
        if detail:
            out["rows"] = self.rows
            out["meta"] = self.meta
        return out


def read_run_info(run_dir: Path) -> RunInfo:
    """Summarise one run from meta.json and its part footers; unreadable parts become problems."""
    meta = read_meta(run_dir)
    problems: list[str] = []
    rows: dict[str, int] = {}
    parts = 0
    steps = 0
    for table in TABLES:
        total = 0
        for part in part_files(run_dir, table):
            parts += 1
            try:
                total += pq.ParquetFile(part).metadata.num_rows
            except Exception as exc:  # any corruption: name it, keep going
                problems.append(f"unreadable part {part.relative_to(run_dir)}: {exc}")
        rows[table] = total
    steps = rows.get("steps", 0)
    steps //= meta_world_size(meta)  # every rank writes a steps row per step
    size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file())
    return RunInfo(run_dir, meta, derive_status(meta), steps, parts, size, rows, problems)


def find_runs(root: Path) -> list[Path]:
    """``root`` itself if it is a run, else the runs directly below it (sorted by name)."""
    if not root.exists():
        raise RunNotFoundError(f"{root} does not exist")
    if (root / META_FILE).is_file():
        return [root]
    if not root.is_dir():
        raise RunNotFoundError(f"{root} is not a directory of runs")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / META_FILE).is_file())
