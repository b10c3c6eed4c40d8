"""A real 2-process Hugging Face Trainer run (DDP, gloo on loopback, CPU) with GradlogCallback:
one run directory, one set of parts per rank, and each rank's pre-clip norms equal to the
grad_norm its Trainer logged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.integrations.hf_helpers import recorded, rel
from tests.recorder.helpers import read_meta, run_dirs

WORKER = Path(__file__).with_name("hf_ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_trainer_ddp_ranks_share_one_run(tmp_path: Path) -> None:
    root, port = tmp_path / "runs", _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(root)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=tmp_path,
            )
        )
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    printed = {out.strip().splitlines()[-1] for out, _ in outs}
    (run,) = run_dirs(root)
    assert printed == {str(run)}  # both ranks recorded into one directory

    metas = [read_meta(run), json.loads((run / "meta-rank1.json").read_text("utf-8"))]
    assert [(m["rank"], m["world_size"], m["status"]) for m in metas] == [
        (0, 2, "finished"),
        (1, 2, "finished"),
    ]
    worst = 0.0
    for rank in range(2):
        logs = json.loads((tmp_path / f"logs-rank{rank}.json").read_text("utf-8"))
        hf_norm = {log["global_step"]: log["grad_norm"] for log in logs if "grad_norm" in log}
        got = recorded(run, rank)
        assert sorted(got["steps"]) == list(range(4))
        assert sorted(hf_norm) == [1, 2, 3, 4]
        for s in range(4):
            pre = got["scalars"][(s, "grad_norm_preclip")]
            worst = max(worst, rel(pre, hf_norm[s + 1]))
            assert rel(pre, hf_norm[s + 1]) <= 1e-5, (rank, s, pre, hf_norm[s + 1])
            assert rel(got["row_norm"][s], pre) <= 1e-5
            assert got["steps"][s]["grad_norm"] <= 1.0 * (1 + 1e-5)
    print(f"max rel diff, grad_norm_preclip vs HF grad_norm (DDP, both ranks): {worst:.2e}")

    from gradlog.analysis import analyze

    (result,) = analyze([run]).runs
    assert result.steps == 4
    assert not result.partial, result.problems
