"""gradlog: record the gradients of PyTorch training runs, then explain them.

``from gradlog import Recorder`` imports torch lazily, so the analysis and report stages can be
used on machines without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradlog._version import __version__
from gradlog.errors import (
    ConfigError,
    CorruptRunError,
    GradlogError,
    GradlogWarning,
    RunNotFoundError,
    WriterError,
)

if TYPE_CHECKING:
    from gradlog.recorder import Recorder

__all__ = [
    "ConfigError",
    "CorruptRunError",
    "GradlogError",
    "GradlogWarning",
    "Recorder",
    "RunNotFoundError",
    "WriterError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "Recorder":
        from gradlog.recorder import Recorder

        return Recorder
    raise AttributeError(f"module 'gradlog' has no attribute {name!r}")
