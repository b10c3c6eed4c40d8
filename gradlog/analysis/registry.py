"""The detector registry: one decorator, refusing duplicate names."""

from __future__ import annotations

from collections.abc import Callable

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding
from gradlog.analysis.frames import RunFrames
from gradlog.errors import ConfigError

Detector = Callable[[RunFrames, AnalysisConfig], list[Finding]]

DETECTORS: dict[str, Detector] = {}


def detector(name: str) -> Callable[[Detector], Detector]:
    """Register ``fn`` under ``name``; a second registration of the same name is refused."""

    def register(fn: Detector) -> Detector:
        if name in DETECTORS:
            raise ConfigError(f"a detector named {name!r} is already registered")
        DETECTORS[name] = fn
        return fn

    return register
