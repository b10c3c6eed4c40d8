"""The report is never less robust than the analysis: every run problem the analysis names and
skips (unreadable or foreign parts, missing tables, no usable step, unreadable meta.json, only
non-finite values, nothing but meta.json) still gives the run a page listing its problems, beside
the good runs' pages, and ``gradlog report`` exits 3 (broken runs) without a traceback."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.analysis.synth import make_run
from tests.report import browser

N = 80
Done = subprocess.CompletedProcess[str]


def _good(root: Path, run_id: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    norms = {t: 1.0 + 0.05 * rng.standard_normal(N) for t in ("a.weight", "b.weight")}
    loss = 2.0 * np.exp(-np.arange(N) / 30) + 0.1
    return make_run(root, run_id, norms, loss=loss, hist_exp={"a.weight": -10})


def _part(run: Path, table: str) -> Path:
    return next((run / table).glob("rank=0/part-*.parquet"))


def _truncate(run: Path) -> None:
    part = _part(run, "tensors")
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])


def _zero_bytes(run: Path) -> None:
    _part(run, "steps").write_bytes(b"")


def _foreign_schema(run: Path) -> None:
    pq.write_table(pa.table({"colour": ["red", "blue"], "n": [1, 2]}), _part(run, "tensors"))


def _no_tensors_table(run: Path) -> None:
    shutil.rmtree(run / "tensors")


def _only_meta(run: Path) -> None:
    for table in ("tensors", "steps", "scalars", "hists"):
        shutil.rmtree(run / table)


def _bad_meta(run: Path) -> None:
    (run / "meta.json").write_bytes(b'{"run_id": "bad-meta", "status": \xff')


def _meta_array(run: Path) -> None:
    (run / "meta.json").write_text("[1, 2]")


def _meta_empty(run: Path) -> None:
    (run / "meta.json").write_text("{}")


def _odd_meta(run: Path) -> None:
    """Fields of their declared type whose insides are not what the report reads."""
    meta = json.loads((run / "meta.json").read_text())
    meta["optimizer"] = {"class": ["SGD"], "param_groups": "abc"}
    meta["tensors"] = [1, "x", None, {"name": 5}]
    meta["config"] = {"deep": json.loads("[" * 300 + "]" * 300), "n": 1}
    meta["versions"] = {"torch": {"a": [1]}}
    (run / "meta.json").write_text(json.dumps(meta))


def _deep_config(run: Path) -> None:
    """A config nested 900 levels deep: meta.json reads, the analysis keeps 32 levels."""
    text = (run / "meta.json").read_text()
    deep = '"config": {"deep": ' + "[" * 900 + "]" * 900 + "}"
    (run / "meta.json").write_text(text.replace('"config": {}', deep))


def _surrogates(run: Path) -> None:
    """Lone surrogates (valid JSON escapes, not UTF-8) in the name and config."""
    text = (
        (run / "meta.json").read_text().replace('"name": "surrogates"', '"name": "bad\\ud800name"')
    )
    config = '"config": {"k\\udfff": "v\\ud800", "lr": 0.1}'
    (run / "meta.json").write_text(text.replace('"config": {}', config))


def _dir_as_part(run: Path) -> None:
    part = _part(run, "scalars")
    part.unlink()
    part.mkdir()


def _one_step(root: Path) -> None:
    make_run(root, "one-step", {"a.weight": np.array([1.0])}, loss=np.array([1.0]))


def _nonfinite(root: Path) -> None:
    norms = {"a.weight": np.full(N, np.inf), "b.weight": np.full(N, np.nan)}
    bad = {t: np.full(N, 100) for t in norms}  # every element of every gradient
    make_run(root, "all-nonfinite", norms, loss=np.full(N, np.nan), nonfinite=bad)


def _zero_steps(root: Path) -> None:
    """Parts of every table, all without a row."""
    run = _good(root, "zero-steps")
    for part in run.glob("*/rank=0/part-*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.slice(0, 0), part)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated-part": _truncate,
    "zero-byte-part": _zero_bytes,
    "foreign-schema": _foreign_schema,
    "no-tensors-table": _no_tensors_table,
    "only-meta": _only_meta,
    "bad-meta": _bad_meta,
    "meta-array": _meta_array,
    "meta-empty": _meta_empty,
    "odd-meta": _odd_meta,
    "dir-as-part": _dir_as_part,
    "deep-config": _deep_config,
    "surrogates": _surrogates,
}
BUILT: dict[str, Callable[[Path], None]] = {
    "all-nonfinite": _nonfinite,
    "zero-steps": _zero_steps,
    "one-step": _one_step,
}
SAYS = {
    "truncated-part": "unreadable part tensors/rank=0/part-000000.parquet",
    "zero-byte-part": "unreadable part steps/rank=0/part-000000.parquet",
    "foreign-schema": "columns differ from schema",
    "no-tensors-table": "No per-tensor gradient statistics were recorded",
    "only-meta": "0 recorded steps",
    "bad-meta": "meta.json cannot be read as JSON",
    "meta-array": "meta.json does not hold a JSON object",
    "all-nonfinite": "became non-finite at step 0",
    "zero-steps": "0 recorded steps",
    "meta-empty": "meta.json schema version None",
    "odd-meta": "catalogue entry 0 is malformed",
    "dir-as-part": "ignored stray entry scalars/rank=0/part-000000.parquet/",
    "one-step": "1 recorded step",
    "deep-config": "nested deeper than 32 levels",
    "surrogates": "bad\ufffdname",
}
"""What each broken run's page says about it (the problem the analysis named, else the finding
or the missing chart that shows it)."""
GOOD = {"good-1", "good-2"}
NOT_BROKEN = {"no-tensors-table", "all-nonfinite", "deep-config", "surrogates"}
"""Runs the CLI does not call broken: a run may record no per-tensor statistics; a run whose
every value is non-finite is analysed (a non-finite error finding), not partial; a config
nested too deeply is cut, not an error."""


def _page(out: Path, run_id: str) -> str:
    return (out.parent / "runs" / f"{run_id}.html").read_text(encoding="utf-8")


def _text(page: str) -> str:
    body = re.sub(r"<script.*?</script>", " ", page[page.find("<body") :], flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


@pytest.fixture(scope="module")
def reported(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Done]:
    root = tmp_path_factory.mktemp("broken")
    batch = root / "batch"
    _good(batch, "good-1", 1)
    _good(batch, "good-2", 2)
    for name, damage in DAMAGE.items():
        damage(_good(batch, name))
    for build in BUILT.values():
        build(batch)
    out = root / "out" / "index.html"
    proc = subprocess.run(
        [sys.executable, "-m", "gradlog.cli", "report", str(batch), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return out, proc


def test_report_of_broken_runs_exits_3_without_traceback(
    reported: tuple[Path, Done],
) -> None:
    out, proc = reported
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 3, proc.stderr
    assert out.is_file()
    pages = {p.stem for p in (out.parent / "runs").glob("*.html")}
    assert pages == {"good-1", "good-2", *DAMAGE, *BUILT}, proc.stderr
    for name in [*DAMAGE, *BUILT]:
        assert (f"broken run {name}:" in proc.stderr) == (name not in NOT_BROKEN), name
    batch = out.read_text(encoding="utf-8")
    for name in ["good-1", "good-2", *DAMAGE, *BUILT]:
        row = batch[batch.index(f'<a href="runs/{name}.html">') :].split("</tr>", 1)[0]
        assert ('class="badge status-partial"' in row) == (name not in NOT_BROKEN | GOOD), name


def test_good_runs_show_every_step(
    reported: tuple[Path, Done],
) -> None:
    out, _ = reported
    for name in ("good-1", "good-2"):
        page = _page(out, name)
        assert f"<dt>steps</dt><dd>{N}</dd>" in page
        assert "Read with care" not in page


def test_second_report_reuses_every_saved_result(reported: tuple[Path, Done]) -> None:
    """Every result the first report saved, odd runs' included, is valid when read back."""
    out, _ = reported
    batch = out.parent.parent / "batch"
    again = out.parent / "again.html"
    cmd = [sys.executable, "-m", "gradlog.cli", "report", str(batch), "-o", str(again), "-v"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 3, proc.stderr
    runs = len(DAMAGE) + len(BUILT) + 2
    assert f"analysed 0 of {runs} runs" in proc.stdout, proc.stdout


@pytest.mark.parametrize("name", sorted([*DAMAGE, *BUILT]))
def test_broken_run_page_says_what_is_wrong(reported: tuple[Path, Done], name: str) -> None:
    out, proc = reported
    text = " ".join(_text(_page(out, name)).split())
    assert SAYS[name] in text, text[:3000]
    if name not in NOT_BROKEN:
        assert "Read with care" in text
    for line in proc.stderr.splitlines():  # what the CLI says is wrong is on the page too
        if line.startswith(f"gradlog: broken run {name}: "):
            why = line.split(": ", 2)[-1].removeprefix("partial: ").removeprefix("unreadable: ")
            assert why[:60] in text, (why, text[:3000])


@pytest.mark.browser
@pytest.mark.skipif(browser.missing_reason() is not None, reason=str(browser.missing_reason()))
def test_broken_run_pages_draw(reported: tuple[Path, Done]) -> None:
    out, _ = reported
    with browser.chromium() as driver:
        for page in [out, *sorted((out.parent / "runs").glob("*.html"))]:
            browser.open_report(driver, page)
            assert browser.console_errors(driver) == [], page.name
            assert driver.execute_script("return window.gradlogReport.errors") == [], page.name
