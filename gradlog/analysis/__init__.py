"""Offline analysis of gradlog runs: polars + scipy (never torch).

The names below load on first use, so that reading a saved result (``gradlog.analysis.result``,
``charts``, ``trend``, ``findings``) imports neither polars nor scipy: the report renders results
without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradlog.analysis.config import AnalysisConfig as AnalysisConfig
    from gradlog.analysis.current import current_results as current_results
    from gradlog.analysis.findings import Finding as Finding
    from gradlog.analysis.findings import Kind as Kind
    from gradlog.analysis.findings import Severity as Severity
    from gradlog.analysis.loading import RunData as RunData
    from gradlog.analysis.loading import load_run as load_run
    from gradlog.analysis.pipeline import analyze as analyze
    from gradlog.analysis.pipeline import analyze_run as analyze_run
    from gradlog.analysis.registry import DETECTORS as DETECTORS
    from gradlog.analysis.registry import detector as detector
    from gradlog.analysis.result import BatchResult as BatchResult
    from gradlog.analysis.result import RunResult as RunResult

_WHERE = {
    "DETECTORS": "registry",
    "detector": "registry",
    "AnalysisConfig": "config",
    "BatchResult": "result",
    "RunResult": "result",
    "Finding": "findings",
    "Kind": "findings",
    "Severity": "findings",
    "RunData": "loading",
    "load_run": "loading",
    "analyze": "pipeline",
    "analyze_run": "pipeline",
    "current_results": "current",
}

__all__ = [
    "DETECTORS",
    "AnalysisConfig",
    "BatchResult",
    "Finding",
    "Kind",
    "RunData",
    "RunResult",
    "Severity",
    "analyze",
    "analyze_run",
    "current_results",
    "detector",
    "load_run",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gradlog.analysis' has no attribute {name!r}")
    if module == "registry":
        import_module("gradlog.analysis.pipeline")  # registers every detector
    return getattr(import_module(f"gradlog.analysis.{module}"), name)
