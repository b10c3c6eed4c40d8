"""The ``gradlog`` command as a CI job runs it (a subprocess): exit codes, run discovery and
output formats. Exit codes: 0 clean, 1 findings at or above --fail-on, 2 usage error, 3 broken
run (docs/CLI.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.analysis.synth import make_run
from tests.cli import gradlog

N = 40


def _good(root: Path, run_id: str) -> Path:
    return make_run(root, run_id, {"a": np.ones(N)}, loss=np.linspace(2, 1, N))


def _diverging(root: Path, run_id: str) -> Path:
    y = np.concatenate([np.linspace(2, 0.5, N // 2), np.linspace(0.5, 5, N // 2)])
    return make_run(root, run_id, {"a": np.ones(N)}, loss=y)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/sweep/lr1/good-1, root/sweep/lr2/bad-2 (nested two deep), root/other/good-3."""
    root = tmp_path_factory.mktemp("tree")
    _good(root / "sweep" / "lr1", "good-1")
    _diverging(root / "sweep" / "lr2", "bad-2")
    _good(root / "other", "good-3")
    (root / "empty").mkdir()
    return root


def _ls_ids(*args: str | Path) -> list[str]:
    r = gradlog("ls", "--format", "json", *args)
    assert r.returncode == 0, r.stderr
    return [run["run_id"] for run in json.loads(r.stdout)["runs"]]


# ------------------------------------------------------------------ discovery


def test_discovery_is_nested_and_skips_what_is_inside_a_run(tree: Path) -> None:
    assert _ls_ids(tree) == ["good-3", "good-1", "bad-2"]  # path order: other/ < sweep/
    # a directory inside a run that looks like a run is part of the run, not another run
    inner = tree / "other" / "good-3" / "notes"
    inner.mkdir(exist_ok=True)
    (inner / "meta.json").write_text("{}")
    try:
        assert _ls_ids(tree / "other") == ["good-3"]
    finally:
        (inner / "meta.json").unlink()
        inner.rmdir()


def test_discovery_of_several_roots_lists_each_run_once(tree: Path) -> None:
    ids = _ls_ids(tree / "other", tree / "sweep" / "lr2", tree / "sweep")
    assert ids == ["good-3", "bad-2", "good-1"]


def test_include_and_exclude_match_name_relative_path_or_run_id(tree: Path) -> None:
    assert _ls_ids(tree, "--include", "good-*") == ["good-3", "good-1"]
    assert _ls_ids(tree, "--exclude", "good-*") == ["bad-2"]
    assert _ls_ids(tree, "--include", "sweep/*") == ["good-1", "bad-2"]
    assert _ls_ids(tree, "--include", "sweep/*", "--exclude", "*lr2*") == ["good-1"]
    meta = tree / "other" / "good-3" / "meta.json"
    doc = json.loads(meta.read_text())
    saved = doc["run_id"]
    doc["run_id"] = "renamed-id"
    meta.write_text(json.dumps(doc))
    try:
        assert _ls_ids(tree, "--include", "renamed-*") == ["renamed-id"]
    finally:
        doc["run_id"] = saved
        meta.write_text(json.dumps(doc))


def test_ls_shows_the_directory_beside_the_run_id(tmp_path: Path) -> None:
    copy = tmp_path / "copies"
    _good(copy / "a", "same-id")
    _good(copy / "b", "same-id")
    r = gradlog("ls", "copies", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["directory", "run"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["copies/a/same-id", "same-id"],
        ["copies/b/same-id", "same-id"],
    ]
    docs = json.loads(gradlog("ls", "copies", "--json", cwd=tmp_path).stdout)["runs"]
    assert [Path(d["path"]).parent.name for d in docs] == ["a", "b"]


# ------------------------------------------------------------------ exit code 2


@pytest.mark.parametrize("command", ["ls", "analyze", "report", "show"])
def test_a_path_that_does_not_exist_is_a_usage_error(tree: Path, command: str) -> None:
    r = gradlog(command, tree / "nope")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["ls", "analyze", "report"])
def test_no_run_anywhere_under_a_path_is_a_usage_error(tree: Path, command: str) -> None:
    r = gradlog(command, tree / "empty", tree / "other")  # one good path does not save it
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"no runs under {tree / 'empty'}" in r.stderr


def test_a_quoted_glob_is_a_usage_error_naming_include(tree: Path) -> None:
    r = gradlog("analyze", f"{tree}/sweep/lr*", "--fail-on", "warning")
    assert r.returncode == 2
    assert "does not exist" in r.stderr
    assert "--include" in r.stderr


def test_filters_that_leave_nothing_are_a_usage_error(tree: Path) -> None:
    r = gradlog("analyze", tree, "--include", "no-such-run")
    assert r.returncode == 2
    assert "match --include/--exclude" in r.stderr


def test_bad_option_values_are_usage_errors(tree: Path) -> None:
    cases: list[list[str | Path]] = [
        ["analyze", tree, "--fail-on", "fatal"],
        ["analyze", tree, "--format", "xml"],
        ["analyze", tree, "--set", "nope"],
        ["analyze", tree, "--set", "spike_z=high"],
        ["report", tree, "-o", tree / "report.pdf"],
        ["ls", tree, "--no-such-option"],
    ]
    for args in cases:
        r = gradlog(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr


def test_show_of_a_directory_of_runs_is_a_usage_error(tree: Path) -> None:
    r = gradlog("show", tree / "sweep")
    assert r.returncode == 2
    assert "show takes one run" in r.stderr


# ------------------------------------------------------------------ exit codes 0 and 1


def test_fail_on_exits_1_only_for_findings_at_or_above_it(tree: Path) -> None:
    bad = tree / "sweep" / "lr2"
    r = gradlog("analyze", bad, "--fail-on", "error", "--no-save")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].endswith("exit 1: 1 at or above --fail-on error")
    good = gradlog("analyze", tree / "other", "--fail-on", "error", "--no-save")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "exit 0: none at or above --fail-on error" in good.stdout
    plain = gradlog("analyze", bad, "--no-save")
    assert plain.returncode == 0
    assert plain.stdout.splitlines()[-1] == (
        "gradlog: 1 run (0 broken); 1 error, 0 warnings, 1 info; exit 0: no --fail-on given"
    )


# ------------------------------------------------------------------ exit code 3


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    _good(tmp_path, "fine")
    unreadable = _good(tmp_path, "unreadable")
    (unreadable / "meta.json").write_text("{not json")
    crashed = _good(tmp_path, "crashed")
    meta = json.loads((crashed / "meta.json").read_text())
    meta.update(status="crashed", error="RuntimeError: CUDA out of memory")
    (crashed / "meta.json").write_text(json.dumps(meta))
    partial = _good(tmp_path, "partial")
    part = next((partial / "tensors").rglob("part-*.parquet"))
    part.write_bytes(b"not parquet")
    return tmp_path


@pytest.mark.parametrize(
    ("run", "why"),
    [
        ("unreadable", "cannot be read as JSON"),
        ("crashed", "CUDA out of memory"),
        ("partial", "unreadable part"),
    ],
)
def test_a_broken_run_exits_3_in_every_command(broken_tree: Path, run: str, why: str) -> None:
    for command in ("analyze", "ls", "show"):
        extra = ["--no-save"] if command == "analyze" else []
        r = gradlog(command, broken_tree / run, *extra)
        assert r.returncode == 3, (command, r.stdout, r.stderr)
        assert why in r.stdout + r.stderr, (command, r.stdout, r.stderr)
    r = gradlog("analyze", broken_tree / run, "--no-save", "--allow-incomplete")
    assert r.returncode == 0, r.stdout + r.stderr


def test_broken_beats_findings_and_report_still_writes(broken_tree: Path) -> None:
    _diverging(broken_tree, "diverging")
    r = gradlog("analyze", broken_tree, "--fail-on", "warning", "--format", "json", "--no-save")
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["summary"]["broken"] == 3
    assert doc["summary"]["exit_code"] == 3
    assert {x["run_id"] for x in doc["runs"] if x["broken"]} == {
        "unreadable",
        "crashed",
        "partial",
    }
    r = gradlog(
        "analyze", broken_tree, "--fail-on", "error", "--allow-incomplete", "-q", "--no-save"
    )
    assert r.returncode == 1
    assert r.stdout.startswith("gradlog: 5 runs (3 broken)")
    out = broken_tree / "out" / "index.html"
    r = gradlog("report", broken_tree, "--exclude", "out", "-o", out)
    assert r.returncode == 3
    assert out.is_file()
    assert "broken run" in r.stderr


# ------------------------------------------------------------------ conventions and formats


def test_help_quiet_and_no_tty_progress(tree: Path) -> None:
    for args in (["-h"], ["analyze", "-h"], ["ls", "-h"], ["show", "-h"], ["report", "-h"]):
        r = gradlog(*args)
        assert r.returncode == 0
        assert "Usage:" in r.stdout
    r = gradlog("analyze", tree / "other", "-qq", "--no-save")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    r = gradlog("analyze", tree / "other", "-q", "--no-save")
    assert r.stdout.startswith("gradlog: 1 run")
    assert len(r.stdout.splitlines()) == 1
    r = gradlog("analyze", tree, "--no-save", "-v")  # stderr is a pipe: no progress bar
    assert "analysing" not in r.stderr
    assert "evidence:" in r.stdout


def test_json_is_versioned_sorted_and_strict(tree: Path) -> None:
    r = gradlog("analyze", tree, "--format", "json", "--no-save")
    assert r.returncode == 0
    doc = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON number {c}"))
    from gradlog import __version__

    assert doc["gradlog_version"] == __version__
    assert doc["schema_version"] == 1
    order = {"error": 0, "warning": 1, "info": 2}
    for run in doc["runs"]:
        ranks = [order[f["severity"]] for f in run["findings"]]
        assert ranks == sorted(ranks)
    for entry in doc["ranking"]:
        assert entry["outcome"] is None or isinstance(entry["outcome"], (int, float))
    assert "gradlog: 3 runs" in r.stderr  # the summary line goes to stderr beside JSON
    text = gradlog("analyze", tree, "--no-save").stdout
    text_kinds = [
        line.split()[1].rstrip(":")
        for line in text.splitlines()
        if line.startswith("  ") and line.split()[0] in order
    ]
    assert text_kinds == [f["kind"] for run in doc["runs"] for f in run["findings"]]


def test_github_format_annotates_each_finding(tree: Path) -> None:
    r = gradlog("analyze", tree / "sweep", "--format", "github", "--no-save")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)
    divergence = [line for line in lines if "divergence" in line]
    assert divergence[0].startswith(
        f"::error file={tree / 'sweep' / 'lr2' / 'bad-2' / 'meta.json'},title=gradlog divergence"
    )
    doc = json.loads(gradlog("analyze", tree / "sweep", "--json", "--no-save").stdout)
    assert len(lines) == len(doc["findings"])


# ------------------------------------------------------------------ JSON shapes against docs/CLI.md

CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"
OPEN = {"evidence", "config", "meta"}  # documented as open: any keys
PARTLY_OPEN = {"convergence"}  # documented keys are present, more may be


def _doc_json(command: str) -> Any:
    text = CLI_DOC.read_text(encoding="utf-8")
    section = text.split(f"### `gradlog {command} --format json`")[1]
    block = section.split("```json\n")[1].split("```")[0]
    return json.loads(block)


def _same_shape(doc: Any, real: Any, where: str = "$") -> None:
    """``real`` has the documented shape: the same keys (open objects: any), the same JSON
    types (a documented null admits anything; numbers are numbers), element by element."""
    key = where.rsplit(".", 1)[-1]
    if doc is None or real is None:
        return
    if isinstance(doc, dict):
        assert isinstance(real, dict), where
        if key in OPEN:
            return
        if key in PARTLY_OPEN:
            assert set(doc) <= set(real), (where, set(doc) - set(real))
        else:
            assert set(doc) == set(real), (where, set(doc) ^ set(real))
        for k in doc:
            _same_shape(doc[k], real[k], f"{where}.{k}")
    elif isinstance(doc, list):
        assert isinstance(real, list), where
        for i, item in enumerate(real):
            if doc:
                _same_shape(doc[0], item, f"{where}[{i}]")
    elif isinstance(doc, bool):
        assert isinstance(real, bool), where
    elif isinstance(doc, (int, float)):
        assert isinstance(real, (int, float)), (where, real)
        assert not isinstance(real, bool), (where, real)
    else:
        assert isinstance(real, type(doc)), (where, real)


def test_json_shapes_are_the_documented_ones(tree: Path) -> None:
    analysed = gradlog("analyze", tree, "--format", "json", "--no-save")
    doc = json.loads(analysed.stdout)
    assert doc["runs"]
    assert doc["findings"]
    assert doc["ranking"]
    _same_shape(_doc_json("analyze"), doc)
    assert doc["schema_version"] == _doc_json("analyze")["schema_version"]
    _same_shape(_doc_json("ls"), json.loads(gradlog("ls", tree, "--format", "json").stdout))
    shown = gradlog("show", tree / "other" / "good-3", "--format", "json")
    _same_shape(_doc_json("show"), json.loads(shown.stdout))


def test_exit_codes_are_the_documented_ones() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d) \|", text, re.M)
    assert rows == ["0", "1", "2", "3"]
    from gradlog import cli

    assert (cli.EXIT_OK, cli.EXIT_FINDINGS, cli.EXIT_USAGE, cli.EXIT_BROKEN) == (0, 1, 2, 3)
