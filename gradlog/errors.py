"""One exception hierarchy for gradlog; the CLI turns these into clean messages in one place."""

from __future__ import annotations


class GradlogError(Exception):
    """Base class of every error gradlog raises on purpose."""


class ConfigError(GradlogError, ValueError):
    """A user-supplied argument or setting is invalid; the message names the allowed values."""


class RunNotFoundError(GradlogError, FileNotFoundError):
    """A path that should hold a run (a directory with meta.json) does not."""


class CorruptRunError(GradlogError):
    """A run's files exist but cannot be read (bad meta.json, unreadable parts, wrong schema)."""


class WriterError(GradlogError):
    """The background writer failed; raised in strict mode, otherwise reported as a warning."""


class GradlogWarning(UserWarning):
    """Warnings about lost or degraded logging (dropped data, disk errors)."""
