"""No string from data becomes markup: hostile run ids, names, config values, tensor and scalar
names (meta.json and parquet) and a current but hostile saved analysis.json are drawn as literal
text in the report, in HTML and in plotly's SVG alike: no link, image, bold or script of theirs
reaches the page, and no ``%{x}`` of theirs is filled in by a hover template."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradlog.analysis.result import RESULT_FILE, load_result
from gradlog.report.model import batch_report, run_report
from tests.analysis.synth import make_run
from tests.report import browser

LINK = '<a href="https://evil.example/x">click</a>'
PAYLOADS = [
    LINK,
    "<img src=x onerror=alert(1)>",
    "<script>window.__pwned=1</script>",
    "</script><script>window.__pwned=2</script>",
    "%{x}",
    "<b>bold</b>",
    "javascript:alert(1)",
]
ALL = " ".join(PAYLOADS)
N = 100


def _hostile_run(root: Path, i: int, lr: float) -> Path:
    """A run whose tensors and scalars are named by the payloads and whose meta.json run id,
    name and config hold them too."""
    rng = np.random.default_rng(i)
    names = [f"{p} #{k}" for k, p in enumerate(PAYLOADS)] + ["ok.weight"]
    norms = {t: 1.0 + 0.05 * rng.standard_normal(N) for t in names}
    norms[names[0]][60] = 50.0  # a spike: a finding on a hostile tensor
    ratios = {t: np.full(N, 1e-3 * (k + 1)) for k, t in enumerate(names)}
    run = make_run(
        root,
        f"run-{i}",
        norms,
        loss=2.0 * np.exp(-np.arange(N) / (30 / lr)) + 0.1,
        param_norms={t: np.ones(N) for t in names},
        update_norms=ratios,
        hist_exp={t: -10 - k for k, t in enumerate(names)},
        scalars={PAYLOADS[4]: np.linspace(0, 1, N), LINK: np.linspace(1, 0, N)},
        config={"lr": lr, PAYLOADS[1]: PAYLOADS[2], "note": ALL},
    )
    meta = json.loads((run / "meta.json").read_text())
    meta["run_id"] = f"{PAYLOADS[i % len(PAYLOADS)]}-{i}"
    meta["name"] = f"{ALL} {i}"
    meta["host"] = PAYLOADS[3]
    meta["optimizer"] = {"class": LINK, "param_groups": [{"lr": lr, PAYLOADS[5]: PAYLOADS[0]}]}
    (run / "meta.json").write_text(json.dumps(meta))
    return run


def _poison_saved(run: Path) -> None:
    """The run's saved result with payloads in every string the analysis wrote (findings,
    chart labels, the fitted model's name), its provenance kept so that it is reused."""
    doc = json.loads((run / RESULT_FILE).read_text(encoding="utf-8"))
    assert doc["findings"]
    for f in doc["findings"]:
        f.update(message=ALL, hint=ALL, tensor=PAYLOADS[0], tensors=PAYLOADS)
    doc["problems"] = [ALL]
    meta = doc["meta"]  # shapes meta.json readers would refuse, but a saved result may hold
    meta["optimizer"]["param_groups"] = [1, PAYLOADS[0], {"lr": 0.1, PAYLOADS[5]: PAYLOADS[1]}]
    meta.update(versions=[PAYLOADS[0]], tensors=5, world_size=PAYLOADS[5], start_time="x")
    charts = doc["charts"]
    charts["loss_name"] = PAYLOADS[5]
    charts["hist"]["limits"] = [[ALL, -12.0, "fp16"], [PAYLOADS[0], -14.0, "bf16"]]
    assert charts["fit"]
    charts["fit"]["model"] = PAYLOADS[4] + PAYLOADS[0]
    (run / RESULT_FILE).write_text(json.dumps(doc))
    assert load_result(run) is not None


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three hostile runs (a learning-rate sweep) reported by ``gradlog report``; the first
    run's saved analysis.json is poisoned but current, so that the report reuses it."""
    root = tmp_path_factory.mktemp("hostile")
    batch = root / "batch"
    runs = [_hostile_run(batch, i, lr) for i, lr in enumerate((0.3, 1.0, 3.0))]
    out = root / "out" / "index.html"
    cmd = [sys.executable, "-m", "gradlog.cli", "report", str(batch), "-o", str(out), "-q"]
    subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    _poison_saved(runs[0])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), proc.stderr
    saved = load_result(runs[0])
    assert saved is not None
    assert saved.findings[0].message == ALL, "the poisoned result must have been reused"
    return out


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_figures_hold_no_markup_from_data(hostile_report: Path) -> None:
    """Every string of every figure: no tag, template field or link of the payloads is left."""
    run = hostile_report.parent.parent / "batch" / "run-0"
    result = load_result(run)
    assert result is not None
    from gradlog.analysis.result import BatchResult

    report = run_report(result)
    charts = [*report.charts, *batch_report(BatchResult([result]), ["x"], [report]).charts]
    figures = [c.figure for c in charts if c.figure is not None]
    text = "\n".join(s for fig in figures if fig for s in _strings(fig))
    for raw in ("<a", "<img", "<script", "</script", "<b>", 'href="', "%{x} #"):
        assert raw not in text, raw
    assert "&lt;a href=&#34;https://evil.example/x&#34;&gt;click&lt;/a&gt;" in text
    assert "&#37;{x}" in text
    assert "alert(1)" in text  # as text, escaped around it


def test_a_chart_that_is_not_strict_json_is_left_out(hostile_report: Path) -> None:
    """Values the saved result may hold but a chart cannot (a non-finite projection) cost that
    chart at most, never the page."""
    from dataclasses import replace

    from gradlog.report.model import Chart, _checked

    result = load_result(hostile_report.parent.parent / "batch" / "run-0")
    assert result is not None
    assert result.convergence is not None
    conv = replace(result.convergence, projected_loss=math.inf, projected_high=math.nan)
    charts = run_report(replace(result, convergence=conv)).charts
    drawn = next(c for c in charts if c.id == "convergence")
    assert drawn.figure is not None
    assert "projected loss (95% band)" not in json.dumps(drawn.figure)
    bad = _checked(Chart("x", "X", "", {"data": [{"y": [math.nan]}], "layout": {}}))
    assert bad.figure is None
    assert bad.missing.startswith("This chart cannot be drawn")


PAGE_JS = r"""
var out = {links: [], imgs: 0, bold: [], text: document.body.innerText, svg: ''};
var all = document.getElementsByTagNameNS('*', 'a');
for (var i = 0; i < all.length; i++) {
  var a = all[i];
  out.links.push(a.getAttribute('href') || a.getAttributeNS('http://www.w3.org/1999/xlink', 'href')
                 || '');
}
document.querySelectorAll('[*|href]').forEach(function (el) {
  var h = el.getAttributeNS('http://www.w3.org/1999/xlink', 'href');
  // plotly draws a heatmap as an <image> of a PNG it made
  var drawn = el.localName === 'image' && /^data:image\/png;base64,/.test(h || '');
  if (h && !drawn) out.links.push(h);
});
out.imgs = document.getElementsByTagNameNS('*', 'img').length
  + document.getElementsByTagNameNS('*', 'iframe').length;
var bs = document.getElementsByTagNameNS('*', 'b');
for (var j = 0; j < bs.length; j++) out.bold.push(bs[j].textContent);
document.querySelectorAll('tspan').forEach(function (t) {
  if (/bold/.test(t.getAttribute('style') || '')) out.bold.push(t.textContent);
});
document.querySelectorAll('svg text').forEach(function (t) { out.svg += t.textContent + '\n'; });
out.pwned = window.__pwned;
out.errors = window.gradlogReport.errors;
return out;
"""

HOVER_JS = """
var gd = document.getElementById('chart-ratio');
var k = gd.data.findIndex(function (t) { return t.name.indexOf('&#37;{x}') === 0; });
Plotly.Fx.hover(gd, [{curveNumber: k, pointNumber: 5}]);
return k;
"""


def _local(href: str) -> bool:
    """A link the report makes itself: to a section of the page, a run page or the batch page."""
    head = href.split("/", maxsplit=1)[0]
    return href.startswith("#") or (
        ":" not in head and not href.startswith("//") and href.endswith(".html")
    )


@pytest.mark.browser
@pytest.mark.skipif(browser.missing_reason() is not None, reason=str(browser.missing_reason()))
def test_hostile_strings_stay_text_in_the_browser(hostile_report: Path, tmp_path: Path) -> None:
    pages = [hostile_report, *sorted((hostile_report.parent / "runs").glob("*.html"))]
    assert len(pages) == 4
    with browser.chromium() as driver:
        for page in pages:
            browser.open_report(driver, page)
            driver.execute_script(
                "document.querySelectorAll('details').forEach(d => d.open = true);"
            )
            time.sleep(0.2)
            got = driver.execute_script(PAGE_JS)
            assert [h for h in got["links"] if not _local(h)] == [], page.name
            assert got["imgs"] == 0
            assert "bold" not in " ".join(got["bold"])
            assert got["pwned"] is None
            assert got["errors"] == []
            assert browser.console_errors(driver) == []
            assert LINK in got["text"], page.name  # the tables show it as written
            assert "<b>bold</b>" in got["svg"] or page == hostile_report, page.name
            assert LINK[:-3] in got["svg"], page.name  # legends and ticks: as written (cut)
        browser.open_report(driver, pages[1])
        assert driver.execute_script(HOVER_JS) >= 0
        time.sleep(0.3)
        hover = driver.execute_script(
            "return document.querySelector('#chart-ratio .hoverlayer').textContent"
        )
        assert "%{x} #4" in hover  # the name, not the step it would have been filled with
        assert "step 50" in hover
        shot = tmp_path / "hostile.png"
        browser.screenshot(driver, shot, max_height=3000)
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
