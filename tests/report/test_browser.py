"""The reports as a person sees them: headless Chromium loads them, draws every chart with data,
logs no console error, and runs no script from a log. Needs the Debian packages chromium and
chromium-driver (``make test`` installs them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gradlog.report import build_report
from tests.report import browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(browser.missing_reason() is not None, reason=str(browser.missing_reason())),
]

CHARTS_JS = """
return Array.from(document.querySelectorAll('.js-plotly-plot')).map(function (gd) {
  var points = 0;
  gd.data.forEach(function (t) {
    var v = t.z || t.y || [];
    points += v.length;
  });
  return {id: gd.id, traces: gd.data.length, points: points,
          svg: gd.querySelectorAll('svg.main-svg').length};
});
"""


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with browser.chromium() as d:
        yield d


def _check_page(driver: Any, page: Path, shot: Path) -> list[dict[str, Any]]:
    browser.open_report(driver, page)
    assert browser.console_errors(driver) == []
    assert driver.execute_script("return window.gradlogReport.errors") == []
    charts = driver.execute_script(CHARTS_JS)
    assert charts, "no chart was drawn"
    for c in charts:
        assert c["traces"] > 0, c
        assert c["points"] > 0, c
        assert c["svg"] > 0, c
    browser.screenshot(driver, shot, max_height=2500)
    assert shot.stat().st_size > 10_000
    return list(charts)


def test_run_report_draws(driver: Any, runs_root: Path, tmp_path: Path) -> None:
    page = build_report([sorted(runs_root.iterdir())[0]], tmp_path / "run.html")
    charts = _check_page(driver, page, tmp_path / "run.png")
    ids = {c["id"] for c in charts}
    assert {"chart-curves", "chart-flow", "chart-ratio", "chart-hist"} <= ids


def test_batch_report_draws_and_sorts(driver: Any, runs_root: Path, tmp_path: Path) -> None:
    page = build_report([runs_root], tmp_path / "batch.html")
    charts = _check_page(driver, page, tmp_path / "batch.png")
    assert {"chart-loss", "chart-norm"} <= {c["id"] for c in charts}
    names = (
        "return Array.from(document.querySelectorAll('#runs-table tbody tr td:first-child a'))"
        ".map(a => a.textContent)"
    )
    before = driver.execute_script(names)
    driver.execute_script("document.querySelectorAll('#runs-table th')[0].click()")
    driver.execute_script("document.querySelectorAll('#runs-table th')[0].click()")
    after = driver.execute_script(names)
    assert after == sorted(before, reverse=True)
    link = driver.execute_script(
        "return document.querySelector('#runs-table tbody a').getAttribute('href')"
    )
    assert (tmp_path / link).is_file()


VIEW_JS = """
var gd = document.getElementById('chart-hist');
return {visible: gd._fullData.map(function (t) { return t.visible; }),
        steps: gd._fullLayout.xaxis.visible, tensors: gd._fullLayout.xaxis2.visible,
        title: gd._fullLayout.title.text};
"""


def test_exponent_chart_switches_to_per_tensor_view(
    driver: Any, runs_root: Path, tmp_path: Path
) -> None:
    page = build_report([sorted(runs_root.iterdir())[0]], tmp_path / "hist.html")
    browser.open_report(driver, page)
    assert driver.execute_script(VIEW_JS)["visible"] == [True, False]
    driver.execute_script(
        "document.querySelectorAll('#chart-hist .updatemenu-button')[1]"
        ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
    )
    view = driver.execute_script(VIEW_JS)
    assert view["visible"] == [False, True]
    assert view["tensors"]
    assert not view["steps"]
    assert "per tensor" in view["title"]
    # a finding's "show on chart" link puts the chart back on its steps view before zooming
    driver.execute_script(
        "var a = document.createElement('a'); a.className = 'show-finding'; a.href = '#';"
        "a.setAttribute('data-chart', 'hist'); a.setAttribute('data-start', '20');"
        "a.setAttribute('data-end', '30'); a.setAttribute('data-severity', 'info');"
        "document.body.appendChild(a); a.click();"
    )
    view = driver.execute_script(VIEW_JS)
    assert view["visible"] == [True, False]
    assert view["steps"]
    rng = driver.execute_script(
        "return document.getElementById('chart-hist')._fullLayout.xaxis.range"
    )
    assert rng[0] <= 20
    assert rng[1] >= 30
    assert browser.console_errors(driver) == []


def test_finding_link_zooms_its_chart(driver: Any, evil_run: Path, tmp_path: Path) -> None:
    page = build_report([evil_run], tmp_path / "evil.html")
    browser.open_report(driver, page)
    links = driver.execute_script(
        "return Array.from(document.querySelectorAll('a.show-finding'))"
        ".filter(a => a.getAttribute('data-start') !== '').map(a => a.getAttribute('data-chart'))"
    )
    assert links, "the NaN run must have findings with step ranges"
    driver.execute_script(
        "Array.from(document.querySelectorAll('a.show-finding'))"
        ".filter(a => a.getAttribute('data-start') !== '')[0].click()"
    )
    rng = driver.execute_script(
        f"return document.getElementById('chart-{links[0]}')._fullLayout.xaxis.range"
    )
    start = driver.execute_script(
        "return +Array.from(document.querySelectorAll('a.show-finding'))"
        ".filter(a => a.getAttribute('data-start') !== '')[0].getAttribute('data-start')"
    )
    assert rng[0] <= start <= rng[1]


def test_no_injected_script_runs(driver: Any, evil_run: Path, tmp_path: Path) -> None:
    page = build_report([evil_run], tmp_path / "evil2.html")
    browser.open_report(driver, page)
    driver.execute_script(
        "document.querySelectorAll('details').forEach(d => d.open = true);"
        "document.querySelectorAll('.js-plotly-plot').forEach(gd => "
        "Plotly.relayout(gd, {'xaxis.autorange': true}));"
    )
    import time

    time.sleep(0.5)
    assert driver.execute_script("return window.__pwned === undefined")
    assert driver.execute_script("return document.querySelectorAll('img, iframe').length") == 0
    assert driver.execute_script("return document.querySelectorAll('body svg[onload]').length") == 0
    title = driver.execute_script("return document.querySelector('h1').textContent")
    assert "</script><script>window.__pwned=1</script>" in title
    assert browser.console_errors(driver) == []
