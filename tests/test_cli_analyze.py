import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from gradlog.cli import main
from tests.analysis.synth import make_run


def _runs(tmp_path: Path) -> None:
    n = 50
    make_run(tmp_path, "good", {"a": np.ones(n)}, loss=np.linspace(2, 1, n))
    y = np.concatenate([np.linspace(2, 0.5, 25), np.linspace(0.5, 5, 25)])
    make_run(tmp_path, "bad", {"a": np.ones(n)}, loss=y)


def test_json_and_fail_on(tmp_path: Path) -> None:
    _runs(tmp_path)
    r = CliRunner().invoke(main, ["analyze", str(tmp_path), "--json", "--fail-on", "error"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    kinds = {(f["run"], f["kind"]) for f in doc["findings"]}
    assert ("bad", "divergence") in kinds
    assert set(doc["findings"][0]) == {
        "run",
        "detector",
        "kind",
        "severity",
        "tensor",
        "tensors",
        "step_start",
        "step_end",
        "evidence",
        "message",
        "hint",
    }
    assert (tmp_path / "bad" / "analysis.json").is_file()
    ok = CliRunner().invoke(
        main, ["analyze", str(tmp_path / "good"), "--fail-on", "error", "--no-save"]
    )
    assert ok.exit_code == 0
    assert "good" in ok.output


def test_usage_errors(tmp_path: Path) -> None:
    _runs(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text("spike_z = 'high'\n")
    r = CliRunner().invoke(main, ["analyze", str(tmp_path), "--config", str(cfg)])
    assert r.exit_code == 2
    assert "spike_z must be a number" in r.output
    r = CliRunner().invoke(main, ["analyze", str(tmp_path), "--set", "nope"])
    assert r.exit_code == 2
    assert "--set takes NAME=VALUE" in r.output
    r = CliRunner().invoke(main, ["analyze", str(tmp_path), "--fail-on", "fatal"])
    assert r.exit_code == 2
