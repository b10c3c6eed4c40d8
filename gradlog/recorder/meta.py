"""meta.json: building it from the live objects, sanitising user values, writing it atomically."""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any

from gradlog._version import __version__
from gradlog.schema import META_FILE, SCHEMA_VERSION

MAX_JSON_DEPTH = 8


def jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of a user value: non-finite floats become strings, unknowns their repr."""
    if depth > MAX_JSON_DEPTH:
        return repr(value)[:200]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth + 1) for v in value]
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        try:
            return jsonable(item(), depth + 1)
        except (TypeError, ValueError, RuntimeError):
            pass
    return repr(value)[:1000]


def versions() -> dict[str, str]:
    """Versions of gradlog, torch and Python."""
    import torch

    return {
        "gradlog": __version__,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }


def base_meta(run_id: str, name: str, start_time: float) -> dict[str, Any]:
    """The fields every meta.json starts with."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "name": name,
        "status": "running",
        "start_time": start_time,
        "end_time": None,
        "heartbeat": start_time,
        "versions": versions(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "argv": [str(a) for a in sys.argv][:64],
    }


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = json.dumps(data, indent=1, allow_nan=False).encode("utf-8")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def meta_path(run_dir: Path, rank: int) -> Path:
    """meta.json for rank 0; meta-rank<r>.json for the other ranks of a distributed run."""
    return run_dir / (META_FILE if rank == 0 else f"meta-rank{rank}.json")


def previous_meta(path: Path) -> dict[str, Any] | None:
    """The meta.json a earlier process left for this run and rank (a resumed run), if usable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resume_record(meta: dict[str, Any]) -> dict[str, Any]:
    """What to keep of an earlier process's meta.json when this one resumes the run."""
    keep = ("pid", "host", "start_time", "end_time", "status", "error", "last_step", "counters")
    record = {k: meta.get(k) for k in keep if k in meta}
    if "first_step" in meta:
        record["first_step"] = meta["first_step"]
    return jsonable(record)  # type: ignore[no-any-return]
