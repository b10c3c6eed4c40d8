"""The executor seam: every engine gives the batch the in-process path gives; failures and lost
runs are named, never dropped or duplicated; results saved under --out; Ray stays optional."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gradlog.analysis.current import current_results
from gradlog.analysis.executors import (
    ClusterError,
    Outcome,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    ThreadExecutor,
    make_executor,
)
from gradlog.analysis.pipeline import analyze, result_dir
from gradlog.analysis.result import BatchResult, RunResult, load_result
from gradlog.errors import ConfigError
from tests.report.synthetic import write_run

T = TypeVar("T")
R = TypeVar("R")


def _runs(root: Path, n: int) -> Path:
    for i in range(n):
        write_run(root, name=f"run-{i}", seed=i, steps=150, config={"lr": 10.0 ** (-4 + i % 3)})
    return root


def _canon(d: Any) -> str:
    return json.dumps(d, sort_keys=True)


def fails_on_three(x: int) -> int:
    """A task for the engines: squares, raises for 3 (importable by spawned workers)."""
    if x == 3:
        raise ValueError("bad item 3")
    return x * x


def dies_on_two(x: int) -> int:
    """A task whose worker process dies on item 2 (as when killed or out of memory)."""
    if x == 2:
        os._exit(9)
    return x * x


@pytest.mark.parametrize(
    "make",
    [SequentialExecutor, lambda: ThreadExecutor(2), lambda: ProcessExecutor(2)],
    ids=["sequential", "threads", "processes"],
)
def test_each_engine_reports_every_item_once_with_its_own_error(make: Callable[[], Any]) -> None:
    ex = make()
    try:
        got = list(ex.map(fails_on_three, list(range(8))))
    finally:
        ex.close()
    assert sorted(i for i, _ in got) == list(range(8))
    out = dict(got)
    assert isinstance(out[3], ValueError)
    assert "bad item 3" in str(out[3])
    assert {i: v for i, v in out.items() if i != 3} == {i: i * i for i in range(8) if i != 3}


def test_process_pool_names_the_run_whose_worker_died_and_finishes_the_rest() -> None:
    ex = ProcessExecutor(2)
    try:
        got = list(ex.map(dies_on_two, list(range(6))))
    finally:
        ex.close()
    assert sorted(i for i, _ in got) == list(range(6))  # each exactly once
    out = dict(got)
    assert isinstance(out[2], RuntimeError)
    assert "worker process died" in str(out[2])
    assert {i: v for i, v in out.items() if i != 2} == {i: i * i for i in range(6) if i != 2}


def test_jobs_and_sequential_give_the_default_result(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs", 4)
    ref = _canon(analyze([root]).to_json())
    for ex in (SequentialExecutor(), ProcessExecutor(2)):
        try:
            assert _canon(analyze([root], executor=ex).to_json()) == ref
        finally:
            ex.close()


class _Flaky:
    """An engine that fails one run, reports another twice and loses a third."""

    name, workers = "flaky", 1

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Outcome]]:
        for i, item in enumerate(items):
            if i == 0:
                yield i, OSError("node lost")
            elif i == 1:
                r = task(item)
                yield i, r
                yield i, r
            elif i != 2:
                yield i, task(item)

    def close(self) -> None:
        pass


def test_failed_and_lost_runs_are_named_in_problems_and_the_rest_complete(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs", 4)
    batch = analyze([root], executor=_Flaky())
    assert [r.path for r in batch.runs] == [str(p) for p in sorted(root.iterdir())]
    failed, twice, lost, fine = batch.runs
    assert failed.partial
    assert failed.status == "failed"
    assert failed.problems == ["analysis task failed: OSError: node lost"]
    assert lost.problems == ["analysis task failed: RuntimeError: no result came back"]
    assert twice.status == fine.status == "finished"
    assert twice.steps == 150


def test_results_are_saved_under_out_when_the_runs_are_read_only(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs", 2)
    out = tmp_path / "results"
    batch = analyze([root], save=True, out=out, executor=SequentialExecutor())
    for run, res in zip(sorted(root.iterdir()), batch.runs, strict=True):
        assert not (run / "analysis.json").exists()
        assert result_dir(run, out).parent == out
        assert result_dir(run, out).name.startswith(run.name + "-")
        saved = load_result(result_dir(run, out))
        assert saved is not None
        assert _canon(saved.to_json()) == _canon(RunResult.from_json(res.to_json()).to_json())


def test_report_reuses_results_saved_under_out(tmp_path: Path) -> None:
    root = _runs(tmp_path / "runs", 2)
    out = tmp_path / "results"
    first, analysed = current_results([root], out=out, executor=SequentialExecutor())
    assert len(analysed) == 2
    again, analysed = current_results([root], out=out)
    assert analysed == []
    assert _canon(again.to_json()) == _canon(BatchResult.from_json(first.to_json()).to_json())
    assert not list(root.glob("*/analysis.json"))


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="either --jobs or --ray, not both"):
        make_executor(jobs=2, ray="auto")
    with pytest.raises(ConfigError, match="jobs must be at least 1, got 0"):
        make_executor(jobs=0)
    assert isinstance(make_executor(jobs=1), SequentialExecutor)
    assert make_executor() is None


def test_unreachable_cluster_is_a_clear_error_at_once() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=rf"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        RayExecutor(f"127.0.0.1:{port}")


def test_gradlog_works_without_ray() -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"  # any `import ray` now fails
        "import gradlog.analysis.pipeline\n"
        "from gradlog.analysis.executors import RayExecutor, ClusterError\n"
        "assert 'ray' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n    RayExecutor('auto')\nexcept ClusterError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--ray needs Ray: pip install 'ray>=2.9'" in out.stdout
