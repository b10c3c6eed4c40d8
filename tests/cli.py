"""The ``gradlog`` command run as a user runs it: a subprocess of this interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _unprivileged() -> list[str]:
    """A prefix that runs a command without root's power to read any file (permission faults
    then bite as they would for a normal user), where the tests run as root."""
    setpriv = shutil.which("setpriv")
    if not (hasattr(os, "geteuid") and os.geteuid() == 0) or setpriv is None:
        return []
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]


def gradlog(
    *args: str | Path,
    cwd: Path | None = None,
    unprivileged: bool = False,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m gradlog.cli ARGS``: its exit code and output (undecodable bytes kept as
    surrogates, so that a test can see them), 200 columns wide."""
    return subprocess.run(
        [*(_unprivileged() if unprivileged else []), sys.executable, "-m", "gradlog.cli"]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"},
        timeout=timeout,
        check=False,
    )
