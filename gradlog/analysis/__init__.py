"""Offline analysis of gradlog runs: polars + scipy (never torch)."""

from gradlog.analysis.analyze import analyze, analyze_run
from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.current import current_results
from gradlog.analysis.findings import Finding, Kind, Severity
from gradlog.analysis.loading import RunData, load_run
from gradlog.analysis.registry import DETECTORS, detector
from gradlog.analysis.result import BatchResult, RunResult

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
