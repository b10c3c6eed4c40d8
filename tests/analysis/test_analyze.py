import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig, BatchResult, analyze
from gradlog.analysis.pipeline import _RowBudget
from gradlog.errors import ConfigError
from tests.analysis.synth import make_run


def _batch(root: Path) -> None:
    n = 60
    for i, lr in enumerate([1e-3, 1e-2, 1e-1]):
        y = 1 + 1 / (1 + np.arange(n) * lr * 10) + 0.2 * (i == 2)
        make_run(root, f"r{i}", {"a": np.ones(n)}, loss=y, config={"lr": lr})
    make_run(root, "one", {"a": np.ones(1)}, loss=np.ones(1))
    nan = make_run(root, "nan", {"a": np.full(20, np.nan)}, loss=np.full(20, np.nan))
    (nan / "steps" / "rank=0" / "part-000000.parquet").write_bytes(b"PAR1")
    (root / "notarun").mkdir()


def test_batch_with_bad_runs_is_partial_not_fatal(tmp_path: Path) -> None:
    _batch(tmp_path)
    res = analyze([tmp_path, tmp_path / "missing"], save=True)
    by = {r.run_id: r for r in res.runs}
    assert set(by) == {"r0", "r1", "r2", "one", "nan", "missing"}
    assert by["one"].partial
    assert "1 recorded step" in by["one"].problems[0]
    assert by["nan"].partial
    assert any("part-000000" in p for p in by["nan"].problems)
    assert by["missing"].partial
    assert by["missing"].status == "missing"
    assert not by["r0"].partial
    assert (tmp_path / "r0" / "analysis.json").is_file()
    assert res.ranking[0].run_id == "r2" or res.ranking[0].outcome <= res.ranking[-1].outcome
    doc = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert BatchResult.from_json(doc).to_json() == doc
    assert {"runs", "findings"} <= set(doc)


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown detectors in disabled"):
        analyze([tmp_path], AnalysisConfig(disabled=("nope",)))
    with pytest.raises(ConfigError, match="must be a list of paths"):
        analyze(str(tmp_path))


def test_analysis_never_imports_torch(tmp_path: Path) -> None:
    make_run(tmp_path, "r", {"a": np.ones(30)}, loss=np.linspace(2, 1, 30))
    code = (
        "import sys; from gradlog.analysis import analyze; "
        f"analyze([{str(tmp_path)!r}]); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_recorded_run(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from gradlog import Recorder

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    unused = torch.nn.Linear(2, 2)
    model.add_module("unused", unused)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    with Recorder(model, opt, root=tmp_path, name="tiny", config={"lr": 0.05}) as rec:
        for _ in range(40):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model[2](model[1](model[0](x))), y)
            loss.backward()
            opt.step()
            rec.log(loss=loss.item())
    res = analyze([tmp_path])
    (run,) = res.runs
    assert run.steps == 40, run.problems
    assert not run.partial, run.problems
    (dead,) = [f for f in run.findings if f.kind.value == "dead"]  # one finding, grouped
    assert set(dead.tensors) == {"unused.weight", "unused.bias"}
    assert dead.tensor in dead.tensors
    assert not [f for f in run.findings if f.severity.value == "error"]


def test_runs_in_parallel_give_the_same_results_in_order(tmp_path: Path) -> None:
    _batch(tmp_path)
    one = analyze([tmp_path], jobs=1).to_json()
    two = analyze([tmp_path], jobs=2).to_json()
    assert [r["run_id"] for r in two["runs"]] == [r["run_id"] for r in one["runs"]]
    assert two == one
    with pytest.raises(ConfigError, match="jobs must be at least 1, got 0"):
        analyze([tmp_path], jobs=0)


def test_row_budget_admits_a_large_run_alone() -> None:
    budget = _RowBudget(10)
    with budget.hold(6), budget.hold(4):  # fits together
        assert budget.used == 10
    with budget.hold(25):  # larger than the whole budget: admitted when nothing else runs
        assert budget.used == 25
    assert budget.used == 0


def _lr_sweep(root: Path, extra: dict[str, object] | None = None) -> None:
    """The CNN at three Adam learning rates: two learn, the largest blows up and stalls."""
    rng = np.random.default_rng(0)
    n = 87
    t = np.arange(n)
    for lr in (3e-4, 3e-3, 3e-2):
        if lr < 1e-2:
            y = (0.008 + 2.3 * np.exp(-t * lr * 2000)) * rng.lognormal(0, 0.3, n)
            ratio = np.full(n, lr * 3)
        else:
            y = 1.95 + rng.normal(0, 0.08, n)
            y[:8] = [2.28, 35.5, 33.4, 19.0, 12.0, 6.7, 3.9, 2.75]
            ratio = np.where(t < 10, 1.0, 3e-3)
        make_run(
            root,
            f"cnn-lr-{lr:g}",
            {"w": np.ones(n)},
            loss=y,
            param_norms={"w": np.ones(n)},
            update_norms={"w": ratio},
            config={"lr": lr, "batch_size": 64, "optimizer": "Adam", "seed": 0, **(extra or {})},
            optimizer={"class": "Adam", "param_groups": [{"lr": lr}]},
        )


def test_a_stalled_run_is_flagged_in_the_run_and_against_its_siblings(tmp_path: Path) -> None:
    _lr_sweep(tmp_path)
    res = analyze([tmp_path])
    by = {r.run_id: r for r in res.runs}
    stuck = by["cnn-lr-0.03"]
    assert stuck.summary.lr == 0.03
    assert stuck.summary.update_ratio_peak == pytest.approx(1.0)
    assert [f.kind.value for f in stuck.findings if f.severity.value == "warning"] == ["plateau"]
    assert not [f for f in by["cnn-lr-0.003"].findings if f.severity.value != "info"]
    kinds = {(f.detector, f.kind.value, f.run) for f in res.batch_findings}
    assert ("outliers", "lr_too_high", "cnn-lr-0.03") in kinds
    (sweep,) = [f for f in res.batch_findings if f.kind.value == "sweep"]
    assert sweep.evidence["fitted"] == 0  # three values: best observed, no fitted optimum
    doc = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert BatchResult.from_json(doc).to_json() == doc
    quiet = analyze([tmp_path], AnalysisConfig(disabled=("outliers", "sweep")))
    assert quiet.batch_findings == []


def test_unrelated_runs_give_no_batch_findings(tmp_path: Path) -> None:
    _lr_sweep(tmp_path / "a")
    for run in (tmp_path / "a").iterdir():  # make every run a different model
        meta = json.loads((run / "meta.json").read_text())
        meta["config"]["model"] = run.name
        (run / "meta.json").write_text(json.dumps(meta))
    assert analyze([tmp_path / "a"]).batch_findings == []


def test_the_sample_scenarios_are_no_sweep() -> None:
    # unrelated scenarios (other models, optimizers, step counts) with various lrs
    from sample_runs.scenarios import SCENARIOS

    logs = Path(__file__).resolve().parents[2] / "sample_runs" / "logs"
    res = analyze(sorted(logs.glob("*/*/")))
    assert len(res.runs) == len(SCENARIOS)
    assert res.batch_findings == []
    for r in res.runs:
        c = r.convergence
        if c is not None and c.projected_loss is not None:
            assert c.t0 == 0.0
            assert c.nonnegative is True
            assert 0 <= (c.projected_low or 0) <= c.projected_loss <= (c.projected_high or 0)
