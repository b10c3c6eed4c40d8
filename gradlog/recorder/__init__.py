"""Training-time recording: torch + pyarrow only (never polars or scipy)."""

from gradlog.recorder.recorder import Recorder
from gradlog.recorder.schedules import any_of, every, first, log_spaced, never

__all__ = ["Recorder", "any_of", "every", "first", "log_spaced", "never"]
