"""The ground-floor run reader: validation of meta.json and parts, problems named, never fatal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gradlog.atomic import write_atomic
from gradlog.cli import main
from gradlog.errors import CorruptRunError, RunNotFoundError
from gradlog.rundir import discover, open_run, part_index
from gradlog.schema import META_FIELDS, META_TYPES, part_name
from tests.analysis.synth import make_run


def _run(root: Path, name: str = "r") -> Path:
    return make_run(root, name, {"a": np.ones(20), "b": np.ones(20)}, loss=np.linspace(2, 1, 20))


def _edit_meta(run: Path, **fields: object) -> None:
    meta = json.loads((run / "meta.json").read_text())
    meta.update(fields)
    (run / "meta.json").write_text(json.dumps(meta))


def test_every_meta_field_has_a_type_and_a_doc() -> None:
    assert set(META_TYPES) == set(META_FIELDS)


def test_a_healthy_run_has_no_problems(tmp_path: Path) -> None:
    run = open_run(_run(tmp_path))
    assert run.problems == []
    assert run.readable
    assert run.status == "finished"
    assert run.steps == 20
    assert run.layout == "single"
    assert run.world_size == 1
    assert [p.rank for p in run.parts["tensors"]] == [0]
    assert run.step_range("steps") == (0, 19)


def test_wrong_typed_meta_fields_are_left_out_and_named(tmp_path: Path) -> None:
    path = _run(tmp_path)
    _edit_meta(path, world_size="two", name=["x"], config=3, tensors={"a": 1}, start_time="now")
    run = open_run(path)
    text = "\n".join(run.problems)
    for field in ("world_size", "name", "config", "tensors", "start_time"):
        assert f"field {field!r}" in text
    assert run.world_size == 1
    assert run.name == ""
    assert run.duration_s is None
    assert run.catalogue == []


def test_meta_that_is_not_an_object_makes_the_run_unreadable(tmp_path: Path) -> None:
    path = _run(tmp_path)
    (path / "meta.json").write_text("[1, 2]")
    run = open_run(path)
    assert not run.readable
    assert run.status == "unreadable"
    assert "does not hold a JSON object" in run.problems[0]
    with pytest.raises(CorruptRunError, match="JSON object"):
        run.require()


def test_unreadable_and_foreign_parts_are_named(tmp_path: Path) -> None:
    path = _run(tmp_path)
    d = path / "tensors" / "rank=0"
    (d / "part-000001.parquet").write_bytes(b"garbage")
    (d / "notes.txt").write_text("hi")
    run = open_run(path)
    text = "\n".join(run.problems)
    assert "unreadable part tensors/rank=0/part-000001.parquet" in text
    assert "ignored stray entry tensors/rank=0/notes.txt" in text
    assert [p.path.name for p in run.parts["tensors"]] == ["part-000000.parquet"]


def test_fingerprint_follows_the_parts(tmp_path: Path) -> None:
    path = _run(tmp_path)
    before = open_run(path).fingerprint()
    assert open_run(path).fingerprint() == before
    part = next((path / "steps").rglob("part-*.parquet"))
    part.rename(part.with_name("part-000009.parquet"))
    assert open_run(path).fingerprint() != before


def test_a_bad_run_does_not_stop_ls(tmp_path: Path) -> None:
    _run(tmp_path, "good")
    bad = _run(tmp_path, "bad")
    (bad / "meta.json").write_text('"just a string"')
    result = CliRunner().invoke(main, ["ls", str(tmp_path)])
    assert result.exit_code == 3, result.output
    assert "unreadable" in result.output
    assert "finished" in result.output


def test_discover_names_paths_without_runs(tmp_path: Path) -> None:
    run = _run(tmp_path)
    runs, missing = discover([run, tmp_path, tmp_path / "nope"])
    assert runs == [run]
    assert [p for p, _ in missing] == [tmp_path / "nope"]
    with pytest.raises(RunNotFoundError, match="does not exist"):
        open_run(tmp_path / "nope")


def test_write_atomic_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_atomic(target, "{}")
    write_atomic(target, b"[]")
    assert target.read_text() == "[]"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_ls_imports_neither_scipy_nor_the_analysis(tmp_path: Path) -> None:
    _run(tmp_path)
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gradlog.cli", "ls", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "gradlog.rundir" in imported
    assert not {m for m in imported if m.split(".")[0] in ("scipy", "polars", "torch")}
    assert not {m for m in imported if m.startswith("gradlog.analysis")}


def test_stray_entries_are_named_one_by_one_and_the_table_is_kept(tmp_path: Path) -> None:
    path = _run(tmp_path)
    shutil.copytree(path / "tensors" / "rank=0", path / "tensors" / "rank=0.bak")
    (path / "tensors" / "rank=0" / "part-1.parquet.csv").write_text("x")
    (path / "tensors" / "rank=0" / "sub").mkdir()
    run = open_run(path)
    assert run.rows("tensors") == 40  # both tensors, 20 steps: nothing dropped
    assert [p for p in run.problems if "stray" in p] == [
        "ignored stray entry tensors/rank=0/part-1.parquet.csv",
        "ignored stray entry tensors/rank=0/sub/",
        "ignored stray entry tensors/rank=0.bak/",
    ]
    assert run.broken is None


def test_part_index_takes_only_committed_names() -> None:
    assert part_index("part-000012.parquet") == 12
    for name in (
        "part-.parquet",
        "part-12.parquet.tmp",
        "part-\udcff.parquet",
        "part-\uff11.parquet",
    ):
        assert part_index(name) is None, name


def test_a_rank_that_wrote_nothing_makes_a_finished_run_partial(tmp_path: Path) -> None:
    path = _run(tmp_path)
    _edit_meta(path, world_size=3)
    run = open_run(path)
    assert run.broken == (
        "missing rank: rank 1, 2 of world size 3 wrote no steps; the run is partial"
    )
    _edit_meta(path, status="running", pid=None, heartbeat=time.time())
    assert open_run(path).broken is None  # still being written: ranks may not have flushed


def test_repeated_steps_are_named_and_counted_once(tmp_path: Path) -> None:
    path = _run(tmp_path)
    part = path / "steps" / "rank=0" / part_name(0)
    shutil.copy(part, part.with_name(part_name(3)))
    run = open_run(path)
    assert run.steps == 20
    assert (
        "repeated steps 0-19 in table steps: steps/rank=0/part-000000.parquet and "
        "steps/rank=0/part-000003.parquet both hold them; the later part's rows are used"
    ) in run.problems


def test_a_run_directory_whose_name_is_not_utf8_is_read_through_an_alias(tmp_path: Path) -> None:
    src = _run(tmp_path)
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/run-\xff"))
    shutil.copytree(src, path)
    run = open_run(path)
    assert run.problems == []
    assert run.path == path
    assert run.steps == 20
    assert run.rel(run.parts["tensors"][0].path) == "tensors/rank=0/part-000000.parquet"


def test_meta_numbers_out_of_range_or_not_finite_are_left_out(tmp_path: Path) -> None:
    path = _run(tmp_path)
    text = (path / "meta.json").read_text()[:-1]
    (path / "meta.json").write_text(
        text + ', "pid": 1000000000000000000000000000000, "start_time": NaN, "rank": -1}'
    )
    run = open_run(path)
    assert not {"pid", "start_time", "rank"} & set(run.meta)
    assert len([p for p in run.problems if p.startswith("meta.json field")]) == 3
    assert run.duration_s is None
