"""Batch analysis on a real Ray cluster on loopback: a head and one more worker node (one CPU
each), started by ``ray start`` for this module and stopped at its end, also when a test fails."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradlog.analysis.executors import RayExecutor
from gradlog.analysis.pipeline import analyze
from gradlog.analysis.result import BatchResult
from tests.analysis.test_executors import fails_on_three
from tests.report.synthetic import write_run

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _ray(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [RAY, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayExecutor]:
    """A two-node cluster on 127.0.0.1 and a driver connected to it (stopped in any case)."""
    port = _free_port()
    # a loopback cluster of this test only: no token authentication (Ray >= 2.5x enables it
    # whenever ~/.ray/auth_token exists), for the nodes and for this driver alike
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a limit
    head = ["start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    ex: RayExecutor | None = None
    try:
        _ray(*head, *common, "--include-dashboard", "false", "--temp-dir", temp, env=env)
        _ray("start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
             *common, env=env)  # fmt: skip
        ex = RayExecutor(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while ex.workers < 2 and time.monotonic() < deadline:  # the second node registering
            time.sleep(0.5)
        assert ex.workers == 2
        yield ex
    finally:
        if ex is not None:
            ex.close()
        subprocess.run(
            [RAY, "stop", "--force"], env=env, capture_output=True, timeout=120, check=False
        )
        shutil.rmtree(temp, ignore_errors=True)
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth


def _canon(b: BatchResult) -> str:
    return json.dumps(b.to_json(), sort_keys=True)


def _task_pids() -> list[int]:
    """Worker processes running an analysis task right now (Ray titles them ``ray::_call``)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::_call"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


def test_fifty_runs_on_ray_equal_the_local_result_with_a_worker_killed(
    cluster: RayExecutor, tmp_path: Path
) -> None:
    root = tmp_path / "runs"
    for i in range(49):
        write_run(root, name=f"run-{i}", seed=i, steps=200, config={"lr": 10.0 ** (-4 + i % 4)})
    bad = root / "zz-bad"
    bad.mkdir()
    (bad / "meta.json").write_text("{not json", encoding="utf-8")
    local = analyze([root])

    killed: list[int] = []
    stop = threading.Event()

    def kill_one() -> None:  # a worker killed while it analyses a run
        while not stop.is_set() and not killed:
            pids = _task_pids()
            if pids:
                time.sleep(0.2)
                if pids[0] in _task_pids():
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        remote = analyze([root], executor=cluster)
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was running a task to kill"
    assert len(remote.runs) == 50
    assert len({r.path for r in remote.runs}) == 50  # nothing lost, nothing twice
    assert _canon(remote) == _canon(local)
    (named,) = [r for r in remote.runs if r.path == str(bad)]
    assert named.status == "unreadable"
    assert named.partial
    assert "meta.json" in " ".join(named.problems)


def test_a_failing_task_gives_its_own_error_and_the_rest_complete(cluster: RayExecutor) -> None:
    out = dict(cluster.map(fails_on_three, list(range(6))))
    assert sorted(out) == list(range(6))
    assert isinstance(out[3], ValueError)
    assert "bad item 3" in str(out[3])
    assert {i: v for i, v in out.items() if i != 3} == {i: i * i for i in range(6) if i != 3}
