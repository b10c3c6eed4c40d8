"""The gradlog ls/show commands on real recorded runs and on broken input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from gradlog import Recorder
from gradlog.cli import main


def _record(root: Path, name: str, steps: int) -> Path:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=root, name=name, config={"lr": 0.1}) as rec:
        for _ in range(steps):
            loss = model(torch.randn(16, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            rec.log(loss=loss)
            opt.zero_grad()
    return rec.run_dir


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _record(tmp_path, "first", 5)
    _record(tmp_path, "second\x1b[31m", 7)
    return tmp_path


def test_ls_lists_runs_with_steps_and_tensors(root: Path) -> None:
    result = CliRunner().invoke(main, ["ls", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["directory", "run", "name", "status", "steps", "tensors", "size"]
    assert len(lines) == 3
    by_steps = sorted(int(line.split()[4]) for line in lines[1:])
    assert by_steps == [5, 7]
    assert "\x1b" not in result.output  # control characters of names never reach the terminal


def test_ls_json_matches_meta(root: Path) -> None:
    result = CliRunner().invoke(main, ["ls", str(root), "--json"])
    assert result.exit_code == 0
    runs = json.loads(result.output)["runs"]
    assert {r["name"] for r in runs} == {"first", "second\x1b[31m"}
    for r in runs:
        meta = json.loads((Path(r["path"]) / "meta.json").read_text())
        assert r["tensors"] == len(meta["tensors"]) == 4
        assert r["status"] == "finished"
        files = [f for f in Path(r["path"]).rglob("*") if f.is_file()]
        assert r["size_bytes"] == sum(f.stat().st_size for f in files)


def test_show_summarises_one_run(root: Path) -> None:
    run = next(p for p in root.iterdir() if "first" in p.name)
    result = CliRunner().invoke(main, ["show", str(run)])
    assert result.exit_code == 0
    assert "status     finished" in result.output
    assert "steps      5" in result.output
    assert "lr = 0.1" in result.output
    detail = json.loads(CliRunner().invoke(main, ["show", str(run), "--json"]).output)
    assert detail["rows"]["steps"] == 5
    assert detail["rows"]["tensors"] == 5 * 4 + 4 + 4  # grads every step; params, updates at 0


def test_missing_run_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["show", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_directory_without_meta_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["show", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a gradlog run" in result.output


def test_corrupt_meta_is_a_clean_error(root: Path) -> None:
    run = next(p for p in root.iterdir() if "first" in p.name)
    (run / "meta.json").write_text("{not json")
    result = CliRunner().invoke(main, ["show", str(run)])
    assert result.exit_code == 3  # a broken run, not a usage error
    assert "cannot be read as JSON" in result.output


def test_unreadable_part_is_reported_not_fatal(root: Path) -> None:
    run = next(p for p in root.iterdir() if "second" in p.name)
    part = next((run / "tensors").rglob("part-*.parquet"))
    part.write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["ls", str(root)])
    assert result.exit_code == 3  # listed, and the lost data is not silent
    assert "unreadable part" in result.output
    allowed = CliRunner().invoke(main, ["ls", str(root), "--allow-incomplete"])
    assert allowed.exit_code == 0
