"""Thin adapters that forward a training framework's hooks to the :class:`~gradlog.Recorder`.

Each module imports its framework lazily (only when its callback is created), so importing
gradlog never imports Lightning, transformers or accelerate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gradlog.errors import ConfigError
from gradlog.recorder.naming import validate_name


def run_options(
    root: object, name: object, config: object
) -> tuple[Path, str | None, dict[str, Any]]:
    """The callbacks' common arguments checked: (root, name or None, config as a dict)."""
    if not isinstance(root, (str, os.PathLike)):
        raise ConfigError(f"root must be a path (str or os.PathLike), got {type(root).__name__}")
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(
            f"config must be a mapping of hyperparameters or None, got {type(config).__name__}"
        )
    return Path(root), None if name is None else validate_name(name), dict(config or {})
