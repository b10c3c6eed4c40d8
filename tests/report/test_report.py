"""build_report and ``gradlog report``: self-contained pages, batches, saved analyses, escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gradlog.analysis import current as results_mod
from gradlog.cli import main
from gradlog.errors import ConfigError, RunNotFoundError
from gradlog.report import build_report
from tests.report.conftest import BIG, EVIL


@pytest.fixture(scope="module")
def run_html(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    run = sorted(runs_root.iterdir())[0]
    out = build_report([run], tmp_path_factory.mktemp("out") / "run.html")
    return out.read_text(encoding="utf-8")


def test_run_report_is_self_contained(run_html: str) -> None:
    assert run_html.count("plotly.js v") >= 1
    assert len(re.findall(r"<script>\s*/\*\*\s*\n?\s*\* plotly\.js", run_html)) <= 1
    assert "<script src" not in run_html
    assert "<link" not in run_html
    body = run_html.split("</head>", 1)[1]  # plotly.js itself mentions URLs in strings
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", body)
    for section in ("sec-findings", "sec-curves", "sec-flow", "sec-ratio", "sec-hist"):
        assert f'id="{section}"' in run_html
    assert 'id="sec-convergence"' in run_html
    assert 'id="sec-config"' in run_html


def test_plotly_js_is_embedded_once(run_html: str) -> None:
    from plotly.offline import get_plotlyjs

    marker = get_plotlyjs()[200:400]
    assert run_html.count(marker) == 1


def test_batch_report_writes_and_links_per_run_pages(runs_root: Path, tmp_path: Path) -> None:
    out = build_report([runs_root], tmp_path / "batch.html")
    html = out.read_text(encoding="utf-8")
    pages = sorted((tmp_path / "runs").glob("*.html"))
    assert len(pages) == 3
    for page in pages:
        assert f'href="runs/{page.name}"' in html
        assert 'href="batch.html"' in page.read_text(encoding="utf-8")
    assert 'id="runs-table"' in html
    assert "sec-sweep-0" in html
    assert html.count("sgd-lr-") >= 6


def test_saved_analysis_is_reused(
    runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = sorted(runs_root.iterdir())[1]
    build_report([run], tmp_path / "a.html")
    saved = json.loads((run / "analysis.json").read_text())
    assert saved["run_id"] == run.name

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("re-analysed although analysis.json is current")

    monkeypatch.setattr(results_mod, "analyze", boom)
    build_report([run], tmp_path / "b.html")


def test_stale_analysis_is_redone(
    runs_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = sorted(runs_root.iterdir())[2]
    build_report([run], tmp_path / "a.html")
    import os
    import time

    meta = run / "meta.json"
    later = time.time() + 5
    os.utime(meta, (later, later))
    calls: list[Any] = []
    real = results_mod.analyze  # type: ignore[attr-defined]

    def spy(paths: Any, **kw: Any) -> Any:
        calls.append(paths)
        return real(paths, **kw)

    monkeypatch.setattr(results_mod, "analyze", spy)
    build_report([run], tmp_path / "b.html")
    assert calls == [[run]]


def test_user_strings_are_text(evil_run: Path, tmp_path: Path) -> None:
    html = build_report([evil_run], tmp_path / "evil.html").read_text(encoding="utf-8")
    body = html.split("</head>", 1)[1]
    for s in EVIL[:3]:
        assert s not in body
    assert "window.__pwned" not in body.replace("window.__pwned=", "")  # only escaped copies
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
    assert "\u2028" not in body
    assert "\u2029" not in body
    assert BIG not in body
    assert "1,000,000 characters" in body
    assert "{{ 7*7 }}" in body  # template syntax in data is not evaluated
    # script elements: the report's own and one JSON block per figure, nothing injected
    assert body.count("<script") == body.count("</script>")
    assert len(html) < 8_000_000


def test_bad_arguments_are_clean_errors(tmp_path: Path, runs_root: Path) -> None:
    with pytest.raises(ConfigError, match="list of paths"):
        build_report(str(runs_root), tmp_path / "x.html")
    with pytest.raises(ConfigError, match=r"ending in \.html"):
        build_report([runs_root], tmp_path / "x.txt")
    with pytest.raises(RunNotFoundError, match="no runs under"):
        build_report([tmp_path], tmp_path / "x.html")


def test_cli_report(runs_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(runs_root), "-o", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    assert str(out) in res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path / "nope"), "-o", str(out)])
    assert res.exit_code == 2
    assert "gradlog: error:" in res.output
    assert "Traceback" not in res.output


def test_a_failed_run_says_where_it_diverged_and_shows_no_final_loss(tmp_path: Path) -> None:
    """The header of a run whose gradients or loss went non-finite, and its batch row, state
    where it failed and its last healthy loss (the analysis' numbers), never a final loss read
    over the failed steps; the ranking puts the failed runs after the healthy one."""
    import numpy as np

    from gradlog.analysis import analyze
    from tests.analysis.synth import make_run

    n = 60
    t = np.arange(n)
    falling = 2.0 * np.exp(-t / 20.0) + 0.3
    root = tmp_path / "runs"
    make_run(root, "healthy", {"w": np.ones(n)}, loss=falling + 0.5)  # the worst loss
    make_run(
        root,
        "nan_grads",  # loss finite to the end, gradients NaN from step 30
        {"w": np.ones(n)},
        loss=falling,
        nonfinite={"w": np.where(t >= 30, 100, 0)},
    )
    nan_loss = falling.copy()
    nan_loss[40:] = np.nan
    make_run(root, "nan_loss", {"w": np.ones(n)}, loss=nan_loss)
    res = analyze([root])
    # failed runs after the healthy one, among them by the last healthy loss (39 < 29)
    assert [e.run_id for e in res.ranking] == ["healthy", "nan_loss", "nan_grads"]
    grads_line = (
        f"diverged at step 30 (gradients non-finite); last healthy loss {falling[29]:.4g} "
        "at step 29"
    )
    loss_line = (
        f"diverged at step 40 (loss non-finite); last finite loss {falling[39]:.4g} at step 39"
    )
    out = build_report([root], tmp_path / "batch.html")
    batch = out.read_text(encoding="utf-8")
    assert grads_line in batch
    assert loss_line in batch
    pages = {p.stem: p.read_text(encoding="utf-8") for p in (tmp_path / "runs").glob("*.html")}
    page = next(html for name, html in pages.items() if "nan_grads" in name)
    header = page.split("</header>", 1)[0]
    assert grads_line in header
    assert "final loss" not in header
    assert "projected loss" not in header
    assert "none: its gradients went non-finite at step 30" in page
    page = next(html for name, html in pages.items() if "nan_loss" in name)
    assert loss_line in page.split("</header>", 1)[0]
    healthy = next(html for name, html in pages.items() if "healthy" in name)
    assert "diverged" not in healthy.split("</header>", 1)[0]
    assert "final loss" in healthy.split("</header>", 1)[0]
