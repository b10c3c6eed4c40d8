"""A saved analysis.json is used only when it is exactly a valid result: every corruption (not
JSON, not UTF-8, nested too deep, wrong types, missing or unknown keys, NaN, inconsistent chart
shapes) makes load_result return None, and ``gradlog report`` analyses the run again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.current import stale_reason
from gradlog.analysis.pipeline import analyze
from gradlog.analysis.result import MAX_DEPTH, RESULT_FILE, RunResult, load_result, read_result
from gradlog.errors import CorruptRunError
from tests.analysis.synth import make_run

N = 120


def _norms() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    spiky = 1.0 + 0.05 * rng.standard_normal(N)
    spiky[70] = 40.0
    return {
        "encoder.weight": 1.0 + 0.05 * rng.standard_normal(N),
        "decoder.weight": spiky,
        "decoder.bias": np.full(N, 1e-9),
    }


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A run analysed once (with findings, a convergence fit and chart data) and its saved JSON."""
    root = tmp_path_factory.mktemp("good")
    loss = 2.0 * np.exp(-np.arange(N) / 40) + 0.1
    ones = {t: np.ones(N) for t in _norms()}
    run = make_run(
        root,
        "good",
        _norms(),
        loss=loss,
        hist_exp={"encoder.weight": -10},
        param_norms=ones,
        update_norms={t: v * 1e-3 for t, v in ones.items()},
    )
    analyze([run], save=True)
    doc = json.loads((run / RESULT_FILE).read_text(encoding="utf-8"))
    assert doc["findings"], "the fixture run must have findings to damage"
    assert doc["convergence"]
    assert doc["charts"]["ratios"]
    return run, doc


def _edit(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], bytes]:
    def damage(doc: dict[str, Any]) -> bytes:
        d = json.loads(json.dumps(doc))
        change(d)
        return json.dumps(d).encode()

    return damage


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], bytes]:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return _edit(change)


def _text(text: str) -> Callable[[dict[str, Any]], bytes]:
    return lambda _doc: text.encode()


CORRUPTIONS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "zero-bytes": _text(""),
    "truncated": lambda doc: json.dumps(doc).encode()[:500],
    "not-utf8": lambda doc: b"\xff\xfe" + json.dumps(doc).encode(),
    "latin1-name": lambda doc: json.dumps({**doc, "name": "caf\xe9"}, ensure_ascii=False).encode(
        "latin-1"
    ),
    "nested-100k": _text("[" * 100_000 + "]" * 100_000),
    "nested-in-config": _set("config.deep", json.loads("[" * 500 + "]" * 500)),
    "json-array": _text("[1, 2, 3]"),
    "json-string": _text('"analysis"'),
    "json-null": _text("null"),
    "steps-is-string": _set("steps", "120"),
    "steps-is-float": _set("steps", 120.5),
    "steps-is-bool": _set("steps", True),
    "steps-nan": lambda doc: json.dumps(doc).replace('"steps": 120', '"steps": NaN').encode(),
    "steps-infinity": lambda doc: (
        json.dumps(doc).replace('"steps": 120', '"steps": Infinity').encode()
    ),
    "steps-huge": lambda doc: json.dumps(doc).replace('"steps": 120', '"steps": 1e999').encode(),
    "partial-is-int": _set("partial", 0),
    "run-id-is-number": _set("run_id", 7),
    "problems-is-number": _set("problems", 3),
    "problems-holds-list": _set("problems", [["nested"]]),
    "findings-is-number": _set("findings", 5),
    "findings-is-object": _set("findings", {"0": {}}),
    "finding-is-list": _set("findings.0", [1, 2]),
    "finding-severity-unknown": _set("findings.0.severity", "catastrophic"),
    "finding-kind-unknown": _set("findings.0.kind", "gremlins"),
    "finding-step-is-string": _set("findings.0.step_start", "12"),
    "finding-step-inf": _set("findings.0.step_start", 1e308 * 10),
    "finding-message-is-list": _set("findings.0.message", ["x"]),
    "finding-extra-key": _set("findings.0.html", "<b>x</b>"),
    "finding-missing-key": _edit(lambda d: d["findings"][0].pop("severity")),
    "finding-evidence-nested": _set("findings.0.evidence", {"a": {"b": 1}}),
    "missing-key": _edit(lambda d: d.pop("steps")),
    "missing-charts": _edit(lambda d: d.pop("charts")),
    "extra-key": _set("surprise", 1),
    "config-is-list": _set("config", [1, 2]),
    "meta-is-string": _set("meta", "meta"),
    "summary-lr-is-string": _set("summary.lr", "fast"),
    "convergence-is-list": _set("convergence", [1]),
    "convergence-step-is-float": _set("convergence.projected_step", 1.5),
    "convergence-healthy-end-is-string": _set("convergence.healthy_end", "30"),
    "convergence-health-reason-is-number": _set("convergence.health_reason", 3),
    "convergence-last-healthy-loss-nan": _set("convergence.last_healthy_loss", "nan"),
    "convergence-projection-dropped-missing": _edit(
        lambda d: d["convergence"].pop("projection_dropped")
    ),
    "provenance-is-string": _set("provenance", "current"),
    "charts-is-number": _set("charts", 1),
    "chart-line-y-is-string": _set("charts.loss.y", "1,2,3"),
    "chart-line-lengths-differ": _edit(lambda d: d["charts"]["loss"]["y"].pop()),
    "chart-flow-rows-short": _edit(lambda d: d["charts"]["flow"]["norms"].pop()),
    "chart-flow-nonfinite-outside": _set("charts.flow.nonfinite", [[99, 99]]),
    "chart-hist-counts-ragged": _edit(lambda d: d["charts"]["hist"]["counts"][0].pop()),
    "chart-hist-exponents-gap": _edit(
        lambda d: d["charts"]["hist"]["exponents"].__setitem__(0, -500)
    ),
    "chart-line-inf": _set("charts.loss.y.0", "inf"),
    "chart-hist-end-nan": _set("charts.hist.end", "nan"),
    "chart-ratio-target-zero": _set("charts.ratios.target", 0.0),
    "chart-ratio-band-reversed": _set("charts.ratios.band", [1.0, 1e-6]),
    "finding-step-huge-int": _set("findings.0.step_start", 10**400),
    "many-findings": lambda doc: json.dumps(
        {**doc, "findings": [doc["findings"][0]] * 10**6}
    ).encode(),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_damaged_result_is_not_loaded(
    good: tuple[Path, dict[str, Any]], tmp_path: Path, case: str
) -> None:
    _, doc = good
    (tmp_path / RESULT_FILE).write_bytes(CORRUPTIONS[case](doc))
    result, why = read_result(tmp_path)
    assert result is None
    assert why.startswith("saved analysis"), why
    assert load_result(tmp_path) is None


def test_valid_result_loads_exactly(good: tuple[Path, dict[str, Any]]) -> None:
    run, doc = good
    result, why = read_result(run)
    assert why == ""
    assert result is not None
    assert json.loads(json.dumps(result.to_json())) == doc
    assert load_result(run.parent / "nowhere") is None
    assert read_result(run.parent / "nowhere")[1] == "no saved analysis"


def test_from_json_names_the_bad_field(good: tuple[Path, dict[str, Any]]) -> None:
    _, doc = good
    with pytest.raises(CorruptRunError, match="steps has the wrong type"):
        RunResult.from_json({**doc, "steps": "120"})
    with pytest.raises(CorruptRunError, match=r"unknown \['surprise'\]"):
        RunResult.from_json({**doc, "surprise": 1})
    with pytest.raises(CorruptRunError, match="not a JSON object"):
        RunResult.from_json([doc])


def test_report_recomputes_every_damaged_result(
    good: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """One batch holds a copy of the run per corruption: the report exits 0 without a traceback
    and leaves a valid analysis.json in every run."""
    run, doc = good
    batch = tmp_path / "batch"
    for case, damage in CORRUPTIONS.items():
        copy = batch / case
        shutil.copytree(run, copy)  # times kept: the copy's saved result is current
        assert stale_reason(copy, load_result(copy), AnalysisConfig()) is None
        (copy / RESULT_FILE).write_bytes(damage(doc))
    out = tmp_path / "out" / "index.html"
    proc = subprocess.run(
        [sys.executable, "-m", "gradlog.cli", "report", str(batch), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()
    for case in CORRUPTIONS:
        again = load_result(batch / case)
        assert again is not None, case
        assert again.steps == doc["steps"], case
        assert len(again.findings) == len(doc["findings"]), case


def test_deep_config_is_cut_and_saved(good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """A config nested deeper than any walk of it can go is kept to MAX_DEPTH levels, so that
    the result saves, loads and renders."""
    _, doc = good
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    result = replace(RunResult.from_json(doc), config={"deep": deep})
    result.save(tmp_path)
    again = load_result(tmp_path)
    assert again is not None
    text = json.dumps(again.config)
    assert text.count("[") == MAX_DEPTH - 1
    assert f"(nested deeper than {MAX_DEPTH} levels; not kept)" in text
