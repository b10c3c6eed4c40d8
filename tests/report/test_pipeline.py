"""record -> analyze -> render computes each number once: what the report draws is the analysis
result, the result follows the config it was made with, and the report reads nothing else."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gradlog.analysis import AnalysisConfig, analyze
from gradlog.analysis import current as current_mod
from gradlog.analysis.frames import build_frames
from gradlog.analysis.loading import load_run
from gradlog.analysis.result import RESULT_FILE, load_result
from gradlog.cli import main
from gradlog.report import build_report
from tests.analysis.synth import make_run

STEPS = 30


def _figures(html: str) -> dict[str, dict[str, Any]]:
    """The figure JSON of each chart of a page, by chart id."""
    out = {}
    for block in html.split('<script type="application/json" class="figure" data-target="chart-')[
        1:
    ]:
        chart_id, rest = block.split('">', 1)
        out[chart_id] = json.loads(rest.split("</script>", 1)[0])
    return out


def _two_rank_run(root: Path, layout: str) -> tuple[Path, np.ndarray]:
    """A 2-rank run (DDP replicas or FSDP shards) and the numpy reference of its global norm."""
    rng = np.random.default_rng(1)
    shard = 50
    per_rank = [
        {"a": rng.uniform(0.5, 2, STEPS), "b": rng.uniform(0.1, 1, STEPS)} for _ in range(2)
    ]
    if layout == "replicated":
        per_rank[1] = per_rank[0]  # every rank holds the same all-reduced gradient
        numel = shard
        ref = np.sqrt(per_rank[0]["a"] ** 2 + per_rank[0]["b"] ** 2)
    else:  # each rank holds half of every tensor: squares add over ranks and tensors
        numel = 2 * shard
        ref = np.sqrt(sum(r[t] ** 2 for r in per_rank for t in ("a", "b")))
    catalogue = [
        {"name": t, "shape": [numel], "numel": numel, "depth": i, "backward_order": 1 - i}
        for i, t in enumerate(("a", "b"))
    ]
    loss = np.linspace(2.0, 1.0, STEPS)
    for rank in (0, 1):
        make_run(
            root,
            layout,
            per_rank[rank],
            numel=shard,
            catalogue=catalogue,
            loss=loss,
            rank=rank,
            world_size=2,
        )
    return root / layout, ref


@pytest.mark.parametrize("layout", ["replicated", "sharded"])
def test_global_norm_drawn_equals_analysis_equals_numpy(layout: str, tmp_path: Path) -> None:
    run, ref = _two_rank_run(tmp_path, layout)
    data = load_run(run)
    assert data.layout == layout
    frames = build_frames(data)
    analysed = frames.steps.sort("step")["grad_norm"].to_numpy()
    np.testing.assert_allclose(analysed, ref, rtol=1e-6)
    html = build_report([run], tmp_path / "r.html").read_text(encoding="utf-8")
    (result,) = analyze([run]).runs
    assert result.charts is not None
    line = result.charts.grad_norm
    assert line is not None
    np.testing.assert_allclose(np.asarray(line.y, dtype=float), ref, rtol=1e-4)
    curves = _figures(html)["curves"]
    (trace,) = [t for t in curves["data"] if t["name"] == "global grad norm"]
    assert trace["x"] == list(range(STEPS))
    np.testing.assert_allclose(np.asarray(trace["y"], dtype=float), ref, rtol=1e-4)
    assert trace["y"] == line.y  # drawn exactly as the analysis computed it


def _spiky_run(root: Path) -> Path:
    n = 200
    norms = np.full(n, 1.0) * np.exp(np.random.default_rng(0).normal(0, 0.05, n))
    norms[[80, 150]] = 40.0
    return make_run(
        root,
        "spiky",
        {"w": norms, "v": norms * 0.5},
        loss=np.linspace(3, 1, n),
        param_norms={"w": np.full(n, 10.0), "v": np.full(n, 5.0)},
        update_norms={"w": np.full(n, 0.01), "v": np.full(n, 0.01)},
    )


def _spike_findings(html: str) -> int:
    return html.count('<span class="kind">spike</span>')


def test_report_set_changes_the_report_and_stale_results_are_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _spiky_run(tmp_path)
    out = tmp_path / "r.html"

    def report(*extra: str) -> str:
        args = ["report", str(run), "-o", str(out), "--no-progress", *extra]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        return out.read_text(encoding="utf-8")

    assert _spike_findings(report()) >= 1
    # an analysis saved with other settings is not reused by a report with the defaults
    res = CliRunner().invoke(main, ["analyze", str(run), "--set", "disabled=spikes"])
    assert res.exit_code == 0, res.output
    assert _spike_findings(report("--set", "disabled=spikes")) == 0
    assert _spike_findings(report()) >= 1
    # the band of the update-ratio chart and the saved config follow --set
    html = report("--set", "update_ratio_high=0.05")
    assert "0.0001 to 0.05" in html
    saved = load_result(run)
    assert saved is not None
    assert saved.provenance.config["update_ratio_high"] == 0.05

    calls: list[str] = []
    real = current_mod.analyze  # type: ignore[attr-defined]

    def spy(paths: Any, **kw: Any) -> Any:
        calls.append("analysed")
        return real(paths, **kw)

    monkeypatch.setattr(current_mod, "analyze", spy)
    cfg = AnalysisConfig().replace(update_ratio_high=0.05)
    build_report([run], out, config=cfg)
    assert calls == []  # current: reused
    doc = json.loads((run / RESULT_FILE).read_text())
    doc["provenance"]["version"] = "0.0.1"
    (run / RESULT_FILE).write_text(json.dumps(doc))
    build_report([run], out, config=cfg)
    assert calls == ["analysed"]  # another gradlog version made it
    build_report([run], out, config=cfg)
    assert calls == ["analysed"]
    extra = run / "scalars" / "rank=0" / "part-000001.parquet"
    extra.write_bytes(next((run / "scalars" / "rank=0").glob("part-*.parquet")).read_bytes())
    build_report([run], out, config=cfg)
    assert calls == ["analysed", "analysed"]  # the parts changed


REPORT = Path(__file__).resolve().parents[2] / "gradlog" / "report"
ALLOWED = {
    "gradlog",
    "gradlog._version",
    "gradlog.atomic",
    "gradlog.errors",
    "gradlog.analysis.result",
    "gradlog.analysis.charts",
    "gradlog.analysis.trend",
    "gradlog.analysis.findings",
    "gradlog.analysis.config",  # the settings build_report passes on
    "gradlog.analysis.current",  # the analysis's entry that hands over current results
}


def test_report_imports_only_result_types() -> None:
    """No module of gradlog/report reads the run format (rundir, schema, the analysis's readers
    and algebra, pyarrow, polars): everything reaches it as analysis results."""
    for path in sorted(REPORT.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                top = name.split(".")[0]
                assert top not in ("pyarrow", "polars", "scipy", "torch"), (path.name, name)
                if top == "gradlog" and not name.startswith("gradlog.report"):
                    assert name in ALLOWED, (path.name, name)
    code = (
        "import sys, json; from pathlib import Path; "
        "from gradlog.analysis.result import BatchResult, RunResult; "
        "from gradlog.report.build import write_report; "
        "r = RunResult.from_json(json.loads(Path(sys.argv[1]).read_text())); "
        "write_report(BatchResult([r]), Path(sys.argv[2])); "
        "bad = ('polars', 'pyarrow', 'scipy', 'torch', 'gradlog.rundir', 'gradlog.schema', "
        "'gradlog.analysis.frames', 'gradlog.analysis.loading', 'gradlog.analysis.chartdata'); "
        "print(sorted(m for m in bad if m in sys.modules))"
    )
    runs = Path(__file__).resolve().parents[2] / "sample_runs" / "logs"
    run = sorted(p.parent for p in runs.glob("*/*/meta.json"))[0]
    (result,) = analyze([run]).runs
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "analysis.json"
        saved.write_text(json.dumps(result.to_json()))
        out = subprocess.run(
            [sys.executable, "-c", code, str(saved), str(Path(tmp) / "r.html")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert (Path(tmp) / "r.html").stat().st_size > 100_000
    assert out.stdout.strip() == "[]"


def test_result_round_trips_through_json(tmp_path: Path) -> None:
    run = _spiky_run(tmp_path)
    (result,) = analyze([run], save=True).runs
    again = load_result(run)
    assert again is not None
    assert again.to_json() == result.to_json()
    assert again.charts == result.charts
    assert again.convergence == result.convergence
