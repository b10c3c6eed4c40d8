"""Jinja environment (templates and static files loaded from the package) and page rendering."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from gradlog import __version__
from gradlog.report.filters import FILTERS
from gradlog.report.model import BatchReport, RunReport


@cache
def environment() -> jinja2.Environment:
    """The report's Jinja environment: autoescape on, undefined names are errors."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradlog.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


@cache
def _static(name: str) -> str:
    return (resources.files("gradlog.report") / "static" / name).read_text(encoding="utf-8")


@cache
def plotly_js() -> str:
    """plotly.js from plotly's offline bundle, safe to inline in a <script> element."""
    from plotly.offline import get_plotlyjs

    js: str = get_plotlyjs()
    return js.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _assets() -> dict[str, Any]:
    return {
        "css": Markup(_static("report.css")),
        "js": Markup(_static("report.js")),
        "plotly_js": Markup(plotly_js()),
        "gradlog_version": __version__,
    }


def render_run(report: RunReport, *, back_link: str | None = None) -> str:
    """The HTML page of one run."""
    return (
        environment().get_template("run.html.j2").render(r=report, back_link=back_link, **_assets())
    )


def render_batch(report: BatchReport) -> str:
    """The HTML page of a batch of runs."""
    return environment().get_template("batch.html.j2").render(b=report, **_assets())
