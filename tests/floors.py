"""The runtime dependencies' floors as declared in pyproject.toml.

``python -m tests.floors`` prints ``name==floor`` for each (what ``make test-min`` installs);
``--check`` exits 1 unless the installed versions are exactly those floors.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

from gradlog.requirements import version_tuple

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def project() -> dict[str, Any]:
    """pyproject.toml's ``[project]`` table."""
    data: dict[str, Any] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return data


def floors() -> dict[str, str]:
    """Distribution -> floor of each runtime dependency that applies to this Python."""
    deps = project()["dependencies"]
    out: dict[str, str] = {}
    for dep in deps:
        spec, _, marker = dep.partition(";")
        if "python_version<'3.11'" in marker.replace(" ", "") and sys.version_info >= (3, 11):
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)\s*", spec)
        if m is None:
            raise ValueError(f"dependency {dep!r} has no plain '>=' floor")
        out[m.group(1)] = m.group(2)
    return out


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        wrong = {
            name: metadata.version(name)
            for name, floor in floors().items()
            if version_tuple(metadata.version(name)) != version_tuple(floor)
        }
        print(f"installed above the floor: {wrong}" if wrong else "floors installed")
        return 1 if wrong else 0
    print(" ".join(f"{name}=={floor}" for name, floor in floors().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
