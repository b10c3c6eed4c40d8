"""The executor options of ``gradlog analyze`` and ``gradlog report`` (--jobs, --ray, --out), run
as a user runs them: as a subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.report.synthetic import write_run


def _gradlog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gradlog.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _runs(root: Path, n: int = 3) -> Path:
    for i in range(n):
        write_run(root, name=f"run-{i}", seed=i, steps=150, config={"lr": 10.0 ** (-3 - i)})
    return root


def _runs_doc(stdout: str) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = json.loads(stdout)["runs"]
    return runs


def test_analyze_with_jobs_saves_under_out_and_equals_one_process(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs")
    out = tmp_path / "results"
    one = _gradlog("analyze", str(root), "--format", "json", "--no-save", "--jobs", "1")
    two = _gradlog("analyze", str(root), "--format", "json", "--jobs", "2", "--out", str(out))
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    assert _runs_doc(two.stdout) == _runs_doc(one.stdout)
    assert len(list(out.glob("*/analysis.json"))) == 3
    assert not list(root.glob("*/analysis.json"))


def test_report_with_jobs_and_out_leaves_the_runs_untouched(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs", 2)
    out = tmp_path / "results"
    html = tmp_path / "report.html"
    proc = _gradlog("report", str(root), "-o", str(html), "--jobs", "2", "--out", str(out), "-v")
    assert proc.returncode == 0, proc.stderr
    assert "analysed 2 of 2 runs" in proc.stdout
    assert html.is_file()
    assert len(list(out.glob("*/analysis.json"))) == 2
    assert not list(root.glob("*/analysis.json"))
    again = _gradlog("report", str(root), "-o", str(html), "--out", str(out), "-v")
    assert "analysed 0 of 2 runs" in again.stdout  # the results under --out are reused


def test_unreachable_cluster_and_conflicting_options_are_clean_errors(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs", 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _gradlog("analyze", str(root), "--ray", f"127.0.0.1:{port}")
    assert proc.returncode == 2
    assert f"gradlog: error: cannot reach the Ray cluster at 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr
    both = _gradlog("analyze", str(root), "--ray", "--jobs", "2")
    assert both.returncode == 2
    assert "give either --jobs or --ray, not both" in both.stderr
    zero = _gradlog("analyze", str(root), "--jobs", "0")
    assert zero.returncode == 2
    assert "--jobs" in zero.stderr
