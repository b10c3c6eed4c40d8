"""HTML reports of one run or a batch of runs (jinja2 templates + plotly, self-contained)."""

from gradlog.report.build import build_report

__all__ = ["build_report"]
