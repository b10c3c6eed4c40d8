"""Run names and run directories: any text may be a name; only a safe slug reaches the disk."""

from __future__ import annotations

import os
import re
import secrets
import time
import unicodedata
from pathlib import Path

from gradlog.errors import ConfigError

MAX_NAME_CHARS = 1024
MAX_SLUG_CHARS = 48
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def validate_name(name: object) -> str:
    """Return ``name`` if it is a usable run name, else raise :class:`ConfigError`."""
    if not isinstance(name, str):
        raise ConfigError(f"run name must be a str, got {type(name).__name__}")
    if "\x00" in name:
        raise ConfigError("run name contains a NUL character; remove it")
    if len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"run name is {len(name)} characters long; use at most {MAX_NAME_CHARS}")
    return name


def slugify(name: str) -> str:
    """A file-name-safe slug: ASCII letters, digits, '.', '_', '-'; never '.' or '..'."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"\.{2,}", ".", _UNSAFE.sub("-", ascii_name)).strip("-._")
    slug = slug[:MAX_SLUG_CHARS].strip("-._")
    return slug or "run"


def create_run_dir(root: Path, name: str, run_id: str | None = None) -> Path:
    """Create and return a new, empty run directory under ``root`` (never reuses an existing one).

    With ``run_id`` given (distributed runs share one; a resumed run reuses its own), the
    directory may already exist. An unusable ``root`` (a file, read-only, no permission) is a
    :class:`ConfigError` naming it.
    """
    if run_id is not None and slugify(run_id) != run_id:
        raise ConfigError(
            f"run_id {run_id!r} is not file-name safe; use letters, digits, '.', '_', '-'"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        if run_id is not None:
            path = root / run_id
            path.mkdir(exist_ok=True)
            _check_writable(path)
            return path
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for _ in range(100):
            path = root / f"{stamp}-{slugify(name)}-{secrets.token_hex(3)}"
            try:
                os.mkdir(path)  # exclusive: two recorders never share (and overwrite) a directory
            except FileExistsError:
                continue
            _check_writable(path)
            return path
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot record under {str(root)!r}: {reason}; pass root= a directory you can write "
            "to (it is created if missing)"
        ) from exc
    raise ConfigError(f"could not create a unique run directory under {str(root)!r}")


def _check_writable(path: Path) -> None:
    """Raise PermissionError when files cannot be created in ``path`` (root ignores modes)."""
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied", str(path))
