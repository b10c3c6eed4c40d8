"""The runtime dependencies' lowest supported versions, checked before analysing.

The floors are those of pyproject.toml (a test keeps the two equal); ``make test-min`` proves
them. An older polars once analysed nothing and reported "0 steps" instead of failing: now the
CLI stops with a message naming the package and the version it needs.
"""

from __future__ import annotations

import re
from importlib import metadata

from gradlog.errors import GradlogError

MINIMUM: dict[str, str] = {
    "pyarrow": "15",
    "polars": "1.32",
    "scipy": "1.11.1",
    "numpy": "1.24",
    "click": "8.1",
    "jinja2": "3.1",
    "plotly": "5.20",
}
"""Distribution name -> lowest supported version (pyproject.toml's floors)."""


class DependencyError(GradlogError, ImportError):
    """An installed dependency is missing or older than gradlog supports."""


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading numeric release of ``version`` without trailing zeros ('1.32.0rc1' ->
    (1, 32)), so that '15' and '15.0.0' compare equal."""
    out: list[int] = []
    for part in version.split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        out.append(int(m.group()))
        if m.end() != len(part):
            break
    while out and out[-1] == 0:
        out.pop()
    return tuple(out)


def too_old(names: tuple[str, ...] | None = None) -> list[str]:
    """'<name> <installed> (needs >= <floor>)' for each dependency below its floor or missing."""
    problems: list[str] = []
    for name in names or tuple(MINIMUM):
        floor = MINIMUM[name]
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed (needs >= {floor})")
            continue
        if version_tuple(have) < version_tuple(floor):
            problems.append(f"{name} {have} (needs >= {floor})")
    return problems


def check(names: tuple[str, ...] | None = None) -> None:
    """Raise DependencyError naming every dependency older than its floor."""
    problems = too_old(names)
    if problems:
        raise DependencyError(
            "installed packages are older than gradlog supports: "
            + "; ".join(problems)
            + ". Upgrade them, e.g. pip install -U torch-gradlog"
        )
