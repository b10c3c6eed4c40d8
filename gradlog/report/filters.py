"""Every formatting filter of the report templates, in one place.

Templates autoescape; these filters return plain text (escaped by Jinja) except :func:`json_script`,
which returns JSON made safe to sit inside a ``<script type="application/json">`` element.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

from markupsafe import Markup

SEVERITY_COLOURS = {"error": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
"""The one definition of the severity colours: charts, finding links and (via the template's
data attributes) the page script use it; the stylesheet's badges match it."""

MAX_TEXT = 300
"""User strings longer than this are cut for display (the length is said)."""

_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}

_PLOT_ESCAPES = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&#34;",
    ord("'"): "&#39;",
    ord("%"): "&#37;",
}


def json_script(value: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` element: no ``</script>``, no U+2028.

    Non-finite floats are an error here: figures carry ``null`` for missing points.
    """
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Markup(text.translate(_JSON_ESCAPES))


def clip_text(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as one line of text, cut to ``limit`` characters with the full length said."""
    text = value if isinstance(value, str) else str(value)
    text = "".join(ch if ch.isprintable() or ch == " " else "\ufffd" for ch in text)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text):,} characters)"


def short(value: Any, limit: int = 90) -> str:
    """``value`` as one line cut to ``limit`` characters (for table cells)."""
    text = clip_text(value, 10 * limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_text(value: Any, limit: int = 60) -> str:
    """A string from data for any text plotly draws (titles, axis titles and ticks, legend names,
    annotations, hover text and templates), cut to ``limit`` characters.

    Plotly reads a little HTML in all of these (``<a href>``, ``<b>``, ``<br>``, ``<span
    style>``) and interpolates ``%{...}`` in hover templates; it decodes entities only in the
    plain text between tags, and knows few named ones (``&lt;``, ``&gt;``, ``&amp;``, numeric
    ones; not ``&quot;``). So ``<``, ``>``, ``&``, quotes and ``%`` become entities it decodes:
    the string is drawn as written, never as a link, a tag or a template field."""
    return clip_text(value, limit).translate(_PLOT_ESCAPES)


def num(value: Any, digits: int = 4) -> str:
    """A number for people: 4 significant digits, NaN/inf spelled out, ints with separators."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return clip_text(value)


def value(v: Any, limit: int = 120) -> str:
    """A JSON-ish user value (config entry, evidence) as text: numbers via :func:`num`."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return num(v)
    if isinstance(v, str):
        if v in ("nan", "inf", "-inf"):
            return {"nan": "NaN"}.get(v, v)
        return clip_text(v, limit)
    try:
        text = json.dumps(v, ensure_ascii=False, default=str, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = "(nested too deeply to show)"
    return clip_text(text, limit)


def duration(seconds: Any) -> str:
    """Seconds as ``1h02m03s`` / ``4m05s`` / ``3.2s``; ``—`` when unknown."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def timestamp(seconds: Any) -> str:
    """Unix seconds as a UTC date and time."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    try:
        when = _dt.datetime.fromtimestamp(float(seconds), tz=_dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "—"
    return when.strftime("%Y-%m-%d %H:%M UTC")


def step_range(start: Any, end: Any) -> str:
    """``step 12`` / ``steps 12-40`` (en dash) / ``whole run``."""
    if start is None and end is None:
        return "whole run"
    if start is None or end is None or start == end:
        return f"step {num(start if start is not None else end)}"
    return f"steps {num(start)}\u2013{num(end)}"


def label(key: Any) -> str:
    """An evidence key like ``late_median_norm`` as ``late median norm``."""
    return clip_text(str(key).replace("_", " "), 80)


FILTERS = {
    "json_script": json_script,
    "clip": clip_text,
    "short": short,
    "num": num,
    "value": value,
    "duration": duration,
    "timestamp": timestamp,
    "step_range": step_range,
    "label": label,
}
