"""Jinja environment (templates and static files loaded from the package) and page rendering."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

from gradlog import __version__
from gradlog.report.filters import FILTERS, SEVERITY_COLOURS
from gradlog.report.model import BatchReport, RunReport

PLOTLY_FILE = "plotly.min.js"
"""The one copy of plotly.js a batch report writes beside its pages."""


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
    env.globals["severity_colours"] = SEVERITY_COLOURS
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


def _assets(plotly_src: str | None) -> dict[str, Any]:
    return {
        "css": Markup(_static("report.css")),
        "js": Markup(_static("report.js")),
        "plotly_js": Markup(plotly_js()) if plotly_src is None else None,
        "plotly_src": plotly_src,
        "gradlog_version": __version__,
    }


def render_run(
    report: RunReport, *, back_link: str | None = None, plotly_src: str | None = None
) -> str:
    """The HTML page of one run; plotly.js inlined unless ``plotly_src`` names a shared copy."""
    template = environment().get_template("run.html.j2")
    return template.render(r=report, back_link=back_link, **_assets(plotly_src))


def render_batch(report: BatchReport, *, plotly_src: str | None = None) -> str:
    """The HTML page of a batch of runs."""
    return environment().get_template("batch.html.j2").render(b=report, **_assets(plotly_src))
