"""Formatting filters, and the escaping of JSON placed inside <script> elements."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from gradlog.report import filters


def test_json_script_cannot_close_the_script_element() -> None:
    payload = {"name": "</script><script>alert(1)</script>", "sep": "a\u2028b\u2029c", "amp": "&"}
    out = str(filters.json_script(payload))
    assert "</" not in out
    assert "<" not in out
    assert ">" not in out
    assert "&" not in out
    assert "\u2028" not in out
    assert "\u2029" not in out
    assert json.loads(out) == payload


def test_json_script_refuses_nan() -> None:
    with pytest.raises(ValueError, match="not JSON compliant"):
        filters.json_script({"x": math.nan})


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (math.nan, "NaN"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (12345678, "12,345,678"),
        (0.0003, "0.0003"),
        (1.23456789, "1.235"),
        (True, "true"),
    ],
)
def test_num(value: Any, text: str) -> None:
    assert filters.num(value) == text


def test_long_and_control_strings_are_cut_and_made_visible() -> None:
    out = filters.clip_text("a" * 1_000_000, 50)
    assert len(out) < 80
    assert "1,000,000 characters" in out
    assert "\n" not in filters.clip_text("a\nb")
    assert "\u2028" not in filters.clip_text("a\u2028b")


def test_value_renders_nested_and_non_finite() -> None:
    assert filters.value({"a": [1, {"b": 2}]}) == '{"a": [1, {"b": 2}]}'
    assert filters.value("nan") == "NaN"
    assert filters.value(math.inf) == "inf"


def test_plot_text_escapes_plotly_pseudo_html() -> None:
    assert filters.plot_text("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert filters.plot_text('<a href="u">\'%{x}&') == (
        "&lt;a href=&#34;u&#34;&gt;&#39;&#37;{x}&amp;"
    )


def test_duration_and_step_range() -> None:
    assert filters.duration(3725) == "1h02m05s"
    assert filters.duration(None) == "—"
    assert filters.step_range(None, None) == "whole run"
    assert filters.step_range(5, 5) == "step 5"
    assert filters.step_range(5, 9) == "steps 5\u20139"
