"""The structure of a report page (sections, headings, charts and their traces, table columns),
for golden-structure tests that do not depend on bytes, numbers or plotly.js."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[dict[str, Any]] = []
        self.figures: list[str] = []
        self.headers: list[str] = []
        self.scripts = 0
        self.findings = 0
        self._text: list[str] | None = None
        self._in_th = False
        self._in_fig = False
        self._fig: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append({"id": a.get("id"), "headings": []})
        elif tag in ("h2", "h3") and self.sections:
            self._text = []
        elif tag == "th" and "data-type" in a:
            self._in_th = True
            self._text = []
        elif tag == "script":
            self.scripts += 1
            if a.get("type") == "application/json":
                self._in_fig = True
                self._fig = []
        elif tag == "article" and "finding" in (a.get("class") or ""):
            self.findings += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3") and self._text is not None and self.sections:
            self.sections[-1]["headings"].append(f"{tag}:{''.join(self._text).strip()}")
            self._text = None
        elif tag == "th" and self._in_th and self._text is not None:
            self.headers.append("".join(self._text).strip())
            self._in_th = False
            self._text = None
        elif tag == "script" and self._in_fig:
            self.figures.append("".join(self._fig))
            self._in_fig = False

    def handle_data(self, data: str) -> None:
        if self._in_fig:
            self._fig.append(data)
        elif self._text is not None:
            self._text.append(data)


def _figure(text: str) -> dict[str, Any]:
    fig = json.loads(text)
    layout = fig["layout"]
    axes = {
        k: (v.get("title") or {}).get("text", "")
        for k, v in sorted(layout.items())
        if k.startswith(("xaxis", "yaxis"))
    }
    return {
        "title": layout.get("title", {}).get("text", ""),
        "traces": [f"{t['type']}:{t.get('name', '')}" for t in fig["data"]],
        "axes": axes,
    }


def structure(html: str) -> dict[str, Any]:
    """Sections (id, headings), figures (title, traces, axis titles), table headers, counts."""
    p = _Parser()
    p.feed(html)
    return {
        "sections": p.sections,
        "figures": [_figure(f) for f in p.figures],
        "table_headers": p.headers,
        "scripts": p.scripts,
    }
