"""Figure data as written into the page: compact numbers, gaps as null."""

from __future__ import annotations

import math

import numpy as np

from gradlog.report.figures import nums


def test_nums_writes_steps_as_integers_and_gaps_as_null() -> None:
    assert nums([0.0, 50.0, 1e6]) == [0, 50, 1_000_000]
    assert nums([1.0, math.nan, 3.0]) == [1.0, None, 3.0]
    assert nums([1.5, math.inf]) == [1.5, None]
    assert nums([]) == []


def test_nums_rounds_to_significant_digits() -> None:
    y = [0.0012345678, 123456.789, -2.0 / 3.0, math.nan]
    assert nums(y, digits=4) == [0.001235, 123500.0, -0.6667, None]
    assert nums([0.123456], decimals=2) == [0.12]


def test_nums_keeps_the_shape_of_a_matrix() -> None:
    z = np.array([[1.25, np.nan], [3.0, 4.5]])
    assert nums(z, 1) == [[1.2, None], [3.0, 4.5]]


def test_batch_overlay_clips_to_the_healthy_runs() -> None:
    from gradlog.analysis.charts import Line
    from gradlog.report.figures import overlay

    ok = Line([0.0, 1.0, 2.0], [2.0, 1.5, 1.0])
    boom = Line([0.0, 1.0, 2.0], [2.0, 1e6, 1e12])
    fig = overlay([("ok", ok, True), ("boom", boom, False)], "Loss", "loss")
    assert fig is not None
    lo, hi = fig["layout"]["yaxis"]["range"]
    assert lo < 1.0
    assert 2.0 < hi < 10
    assert fig["data"][1]["line"]["dash"] == "dash"
    assert fig["data"][1]["name"].endswith("(off scale)")
