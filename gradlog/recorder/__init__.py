"""Training-time recording: torch + pyarrow only (never polars or scipy).

torch is an optional dependency of the package (the ``torch`` extra): without it this module
raises an ImportError that names the extra, while analysis and reports work as before.
"""

try:
    import torch as _torch  # noqa: F401  (checked here so that the message names the extra)
except ModuleNotFoundError as _exc:  # pragma: no cover - exercised in a venv without torch
    raise ImportError(
        "gradlog's Recorder needs PyTorch, which is not installed: pip install "
        "'torch-gradlog[torch]' (or install the torch build you need first, then "
        "torch-gradlog); analysis and reports work without it"
    ) from _exc

from gradlog.recorder.recorder import Recorder
from gradlog.recorder.schedules import any_of, every, first, log_spaced, never

__all__ = ["Recorder", "any_of", "every", "first", "log_spaced", "never"]
