"""The ``gradlog`` command as a subprocess: every user mistake (click's usage errors included) is
one line ``gradlog: error: ...`` with exit 2, and run data that holds control characters,
forged newlines, bidi overrides or undecodable bytes never reaches the terminal raw."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.analysis.synth import make_run
from tests.cli import gradlog

EVIL = "evil\x1b[31m\nFORGED\r\u202eend"
"""A string from run data: an escape sequence, a forged line, a carriage return, an override."""


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    make_run(root, "good-1", {"a": np.ones(20)}, loss=np.linspace(2, 1, 20))
    return root


@pytest.mark.parametrize(
    ("args", "start"),
    [
        (["analyze", "{root}", "--fail-on", "fatal"], "Invalid value for '--fail-on': 'fatal'"),
        (["analyze", "{root}", "--no-such-option"], "No such option '--no-such-option'"),
        (["analyze"], "Missing argument 'PATHS...'"),
        (["show"], "Missing argument 'RUN'"),
        (["analyze", "{root}", "--jobs", "0"], "Invalid value for '--jobs': 0"),
        (["ls", "{root}", "--format", "xml"], "Invalid value for '--format': 'xml'"),
        (["--no-such-option"], "No such option '--no-such-option'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["analyze", "{root}", "--set", "spike_window=0"], "spike_window must be an integer >= 1"),
        (["report", "{root}", "--set", "spike_z=nan"], "spike_z must be a number > 0, got nan"),
        (["analyze", "{root}", "--set", "spike_windw=3"], "unknown analysis setting spike_windw"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(good: Path, args: list[str], start: str) -> None:
    r = gradlog(*(a.format(root=good) for a in args))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"gradlog: error: {start}"), r.stderr
    if "--set" not in args:  # click's errors point at the help of the command they concern
        command = args[0] if args[0] in ("ls", "show", "analyze", "report") else ""
        assert r.stderr.endswith(f"; see {' '.join(['gradlog', command]).strip()} -h\n")


def test_spike_window_from_set_names_key_value_and_range(good: Path) -> None:
    r = gradlog("analyze", good, "--set", "spike_window=0")
    assert r.stderr == (
        "gradlog: error: spike_window must be an integer >= 1, got 0 (from --set)\n"
    )


def test_deep_toml_is_one_line_naming_the_file(good: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "deep.toml"
    cfg.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    r = gradlog("analyze", good, "--config", cfg, "--no-save")
    assert r.returncode == 2
    assert r.stderr == f"gradlog: error: config file {cfg} is nested too deeply to read\n"


def test_help_and_version_still_work() -> None:
    r = gradlog("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("gradlog, version ")
    r = gradlog("analyze", "-h")
    assert r.returncode == 0
    assert r.stdout.startswith("Usage: gradlog analyze [OPTIONS] PATHS...")


# ------------------------------------------------------------------ hostile run data


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crashed run whose directory name holds the byte 0xff and whose meta.json strings hold
    escape sequences, forged lines and a bidi override; beside it a finished run whose exploding
    tensor has such a name (its findings name it)."""
    root = tmp_path_factory.mktemp("hostile")
    n = 40
    grads = {EVIL: np.logspace(0, 6, n), "b": np.ones(n)}  # an exploding tensor: findings name it
    make_run(root, "tensors", grads, loss=np.linspace(2, 1, n))
    run = make_run(root, "made", grads, loss=np.linspace(2, 1, n), status="crashed")
    meta = json.loads((run / "meta.json").read_text())
    meta.update(
        run_id=EVIL,
        name=EVIL,
        config={EVIL: EVIL},
        versions={EVIL: EVIL},
        schedules={EVIL: EVIL},
        host=EVIL,
        error=EVIL,
    )
    (run / "meta.json").write_text(json.dumps(meta))
    odd = Path(os.fsdecode(os.fsencode(root) + b"/run-\xff" + EVIL.encode()))
    run.rename(odd)
    return odd


def _strings(doc: object) -> set[str]:
    """Every string in a JSON document, keys included (a path also by its last part)."""
    if isinstance(doc, str):
        return {doc, doc.rsplit("/", 1)[-1]}
    if isinstance(doc, dict):
        return set().union(*(_strings(k) | _strings(v) for k, v in doc.items()))
    if isinstance(doc, list):
        return set().union(*map(_strings, doc))
    return set()


def _assert_safe(text: str) -> None:
    bad = [
        c
        for c in text
        if (ord(c) < 0x20 and c != "\n")
        or 0x7F <= ord(c) <= 0x9F
        or c in "\u202e\u2066"
        or 0xD800 <= ord(c) <= 0xDFFF
    ]
    assert not bad, (bad, text)
    assert "Traceback" not in text
    for line in text.splitlines():
        assert not line.startswith("FORGED"), text  # the forged newline starts no line


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "{root}"],
        ["ls", "{root}", "-v"],
        ["show", "{run}"],
        ["analyze", "{root}", "--no-save", "-v"],
        ["analyze", "{root}", "--no-save", "--format", "github"],
        ["analyze", "{root}", "--no-save", "--format", "json"],
        ["ls", "{root}", "--format", "json"],
        ["show", "{run}", "--json"],
        ["analyze", "{root}/missing\x1b[2J"],
    ],
)
def test_hostile_run_data_never_reaches_the_terminal_raw(hostile: Path, args: list[str]) -> None:
    argv = [a.format(root=hostile.parent, run=hostile) for a in args]
    r = gradlog(*argv)
    assert r.returncode in (2, 3), (r.stdout, r.stderr)  # crashed: broken (3); missing: 2
    _assert_safe(r.stdout)
    _assert_safe(r.stderr)
    if "json" in args or "--json" in args:
        assert r.stdout.isascii()
        doc = json.loads(r.stdout)  # valid JSON, the strings intact after decoding
        assert EVIL in _strings(doc)
        assert any(s.startswith("run-\udcffevil") for s in _strings(doc))
    elif r.returncode == 3:
        assert "evil\\x1b[31m\\nFORGED\\r\\u202eend" in r.stdout + r.stderr  # escaped, not dropped
    if args[0] == "analyze" and r.returncode == 3 and "json" not in args:
        assert "exploding" in r.stdout
    if "github" in args:
        for line in r.stdout.splitlines():
            assert line.startswith("::"), line
            assert "\\n" in line or "FORGED" not in line
