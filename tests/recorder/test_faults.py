"""Faults: killed processes, scripts that never close, writer errors, full disks, full queues,
name collisions and very many tensors. Real processes where the fault is a process's fate
(SIGKILL, exit, file-size limits); in-process monkeypatching only where a real fault cannot be
produced on demand (an exception inside the writer, ENOSPC on a given part, a slow disk)."""

from __future__ import annotations

import errno
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from gradlog.errors import GradlogWarning, WriterError
from gradlog.recorder import Recorder
from gradlog.recorder.writer import Packet
from gradlog.schema import TABLES, arrow_schema
from tests.recorder.helpers import (
    chain_model,
    only_run,
    part_files,
    read_meta,
    read_rows,
    run_dirs,
    scalar_rows,
    stat_rows,
)

TRAINER = Path(__file__).with_name("trainer.py")


def _trainer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run tests/recorder/trainer.py in a fresh interpreter (the same one as the tests)."""
    env = dict(os.environ, PYTHONWARNINGS="default", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(TRAINER), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(8, 6)
        torch.autograd.backward(model(x).pow(2).mean())
        opt.step()


def _step_numbers(run: Path, table: str = "steps") -> list[int]:
    return sorted(r["step"] for r in read_rows(run, table))


def _gradlog_warnings(record: Any) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, GradlogWarning)]


# ----------------------------------------------------------------------------- SIGKILL
@pytest.mark.slow
def test_sigkill_at_random_points_leaves_only_whole_parts(tmp_path: Path) -> None:
    trials = 30
    # Parts rotate on every step, so the writer is almost always encoding, fsyncing or renaming
    # a part (or meta.json) when the SIGKILL lands, after a random delay of up to 0.6 s.
    out = _trainer(
        "kill",
        str(tmp_path),
        "--trials",
        str(trials),
        "--flush-every-steps",
        "1",
        "--max-delay",
        "0.6",
        "--layers",
        "3",
        "--width",
        "32",
    )
    assert out.returncode == 0, out.stderr
    reports = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == trials
    assert all(r["killed"] for r in reports), "a child ended before it was killed"
    with_parts = 0
    torn = 0
    for report in reports:
        runs = run_dirs(Path(report["root"]))
        assert len(runs) <= 1
        if not runs:
            continue
        run = runs[0]
        meta = read_meta(run)  # meta.json is replaced atomically: always whole JSON
        assert meta["status"] == "running"  # nobody could mark it finished
        torn += any(run.rglob(".part-*.tmp"))
        tensors = [t["name"] for t in meta["tensors"]]
        for name, table in TABLES.items():
            files = part_files(run, name)
            # Parts are numbered in write order and each becomes visible only when complete.
            assert [f.name for f in files] == [f"part-{i:06d}.parquet" for i in range(len(files))]
            for f in files:
                assert pq.read_schema(f).remove_metadata() == arrow_schema(table).remove_metadata()
                pq.read_table(f)  # every visible part is whole and readable
        steps = _step_numbers(run)
        assert steps == list(range(len(steps))), (report, steps)
        if steps:
            with_parts += 1
        grads = stat_rows(run, "grad")
        grad_steps = sorted({s for s, _ in grads})
        assert grad_steps == list(range(len(grad_steps)))
        for s in grad_steps:
            assert {n for (st, n) in grads if st == s} == set(tensors)
        loss_steps = sorted(s for (s, name) in scalar_rows(run) if name == "loss")
        assert loss_steps == list(range(len(loss_steps)))
    assert with_parts >= trials // 3, f"only {with_parts} trials committed a part ({torn} torn)"


# ----------------------------------------------------------------------------- process exit
@pytest.mark.slow
def test_script_ending_without_close_loses_nothing(tmp_path: Path) -> None:
    out = _trainer("noclose", str(tmp_path), "--steps", "25")
    assert out.returncode == 0, out.stderr
    assert "GradlogWarning" not in out.stderr
    run = only_run(tmp_path)
    meta = read_meta(run)
    assert meta["status"] == "finished"
    assert meta["end_time"] is not None
    assert meta["counters"]["steps_recorded"] == 25
    assert _step_numbers(run) == list(range(25))
    assert sorted(s for (s, n) in scalar_rows(run) if n == "loss") == list(range(25))
    assert {s for s, _ in stat_rows(run, "grad")} == set(range(25))


@pytest.mark.slow
def test_uncaught_exception_without_close_marks_the_run_crashed(tmp_path: Path) -> None:
    out = _trainer("raise", str(tmp_path), "--steps", "5")
    assert out.returncode == 1
    assert "RuntimeError: training diverged" in out.stderr
    run = only_run(tmp_path)
    meta = read_meta(run)
    assert meta["status"] == "crashed"
    assert meta["error"] == "RuntimeError: training diverged"
    assert _step_numbers(run) == list(range(5))  # still nothing lost


@pytest.mark.slow
def test_same_name_in_concurrent_processes_gets_separate_directories(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    counts = [3, 5]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(TRAINER),
                "with",
                str(tmp_path),
                "--name",
                "same",
                "--steps",
                str(n),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in counts
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    runs = run_dirs(tmp_path)
    assert len(runs) == len(counts)
    metas = [read_meta(r) for r in runs]
    assert len({m["pid"] for m in metas}) == len(counts)
    assert all(m["name"] == "same" and m["status"] == "finished" for m in metas)
    # Each directory holds exactly one process's complete run: nothing was overwritten.
    assert sorted(len(_step_numbers(r)) for r in runs) == counts
    for r, m in zip(runs, metas, strict=True):
        assert _step_numbers(r) == list(range(m["counters"]["steps_recorded"]))


def test_same_name_in_one_process_gets_separate_directories(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = chain_model()
    opt2 = torch.optim.SGD(other.parameters(), lr=0.1)
    with (
        Recorder(model, opt, root=tmp_path, name="dup") as a,
        Recorder(other, opt2, root=tmp_path, name="dup") as b,
    ):
        _train(model, opt, 2)
        _train(other, opt2, 3)
    assert a.run_dir != b.run_dir
    assert len(run_dirs(tmp_path)) == 2
    assert _step_numbers(a.run_dir) == [0, 1]
    assert _step_numbers(b.run_dir) == [0, 1, 2]


# ----------------------------------------------------------------------------- writer errors
def _failing(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


def test_writer_exception_becomes_one_warning_on_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path, flush_every_steps=2) as rec:
        _train(model, opt, 2)
        rec.flush()
        monkeypatch.setattr(rec.writer, "_to_arrow", _failing(RuntimeError("arrow exploded")))
        _train(model, opt, 2)
        assert rec.writer.flush(timeout=30)
        with pytest.warns(GradlogWarning, match=r"writer error.*arrow exploded") as record:
            rec.log(loss=1.0)
        assert len(_gradlog_warnings(record)) == 1
        _train(model, opt, 2)  # more failures: no more warnings (the filter turns them to errors)
        rec.log(loss=2.0)
        assert rec.writer.flush(timeout=30)
        monkeypatch.undo()
        _train(model, opt, 2)
    meta = read_meta(rec.run_dir)
    assert meta["status"] == "finished"
    assert meta["counters"]["dropped_rows"] > 0
    assert "RuntimeError: arrow exploded" in meta["errors"]
    steps = _step_numbers(rec.run_dir)
    assert steps[:2] == [0, 1]  # written before the fault
    assert steps[-2:] == [6, 7]  # written after it


def test_writer_exception_raises_in_strict_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(model, opt, root=tmp_path, strict=True)
    _train(model, opt, 1)
    monkeypatch.setattr(rec.writer, "_write_part", _failing(RuntimeError("cannot encode")))
    with pytest.raises(
        WriterError, match=r"gradlog writer failed: RuntimeError\('cannot encode'\)"
    ):
        rec.flush()
    _train(model, opt, 2)  # step 1 is handed to the writer when step 2 begins
    assert rec.writer.flush(timeout=30)
    with pytest.raises(WriterError, match=r"gradlog writer failed: RuntimeError"):
        opt.step()  # raised from the optimizer's pre-hook, before the update
    monkeypatch.undo()
    rec.close()
    meta = read_meta(rec.run_dir)
    assert meta["status"] == "finished"
    assert meta["counters"]["dropped_rows"] > 0
    assert _step_numbers(rec.run_dir) == [2]  # steps 0 and 1 were lost (and counted)


def test_disk_full_drops_and_counts_without_disturbing_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    first_parts: dict[str, list[Path]] = {}
    first_steps: list[int] = []

    def train_until_the_disk_fills_up() -> Path:
        with Recorder(model, opt, root=tmp_path, flush_every_steps=2, hists=True) as rec:
            _train(model, opt, 2)
            assert rec.writer.flush(timeout=30)
            first_parts.update({t: part_files(rec.run_dir, t) for t in TABLES})
            first_steps.extend(_step_numbers(rec.run_dir))
            monkeypatch.setattr(rec.writer, "_write_part", _failing(enospc))
            for _ in range(10):  # the training loop itself never raises
                _train(model, opt, 1)
                rec.log(loss=0.5)
        return rec.run_dir

    with pytest.warns(GradlogWarning, match="No space left on device") as record:
        run = train_until_the_disk_fills_up()
    assert len(_gradlog_warnings(record)) == 1
    assert all(len(p) == 1 for p in first_parts.values())
    assert first_steps
    meta = read_meta(run)
    assert meta["status"] == "finished"
    assert meta["counters"]["dropped_rows"] > 0
    assert meta["counters"]["io_errors"] > 0
    assert any("No space left on device" in e for e in meta["errors"])
    # The parts written before the disk filled up are intact; nothing else became visible.
    for table, parts in first_parts.items():
        assert part_files(run, table) == parts
        assert pq.read_table(parts[0]).num_rows > 0
    assert _step_numbers(run) == first_steps
    assert not list(run.rglob("*.tmp"))


@pytest.mark.slow
def test_file_size_limit_in_a_real_process(tmp_path: Path) -> None:
    # RLIMIT_FSIZE with SIGXFSZ ignored makes write() fail with EFBIG once a part outgrows it.
    out = _trainer(
        "fsize",
        str(tmp_path),
        "--steps",
        "120",
        "--layers",
        "8",
        "--width",
        "16",
        "--fsize",
        str(32 * 1024),
    )
    assert out.returncode == 0, out.stderr
    assert "trainer done" in out.stdout
    assert out.stderr.count("GradlogWarning") == 1, out.stderr
    run = only_run(tmp_path)
    meta = read_meta(run)
    assert meta["status"] == "finished"
    assert meta["counters"]["dropped_rows"] > 0
    assert meta["counters"]["io_errors"] > 0
    assert any("File too large" in e for e in meta["errors"])
    for table in TABLES:
        for f in part_files(run, table):
            pq.read_table(f)
    assert _step_numbers(run)[:2] == [0, 1]  # flushed before the limit was hit
    assert not list(run.rglob(".part-*.tmp"))  # the failed parts were removed


# ----------------------------------------------------------------------------- full queue
def test_full_queue_drops_steps_with_one_warning_and_never_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 layers -> 80 tensors: one step's histograms alone (80 x 279 x 8 bytes) exceed the
    # 64 KiB queue, so while the (slowed) writer is busy, the next-but-one step cannot queue.
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(40)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    writer_delay = 1.0
    n = 12
    durations: list[float] = []

    def train_against_a_slow_disk() -> Path:
        with Recorder(model, opt, root=tmp_path, hists=True, max_queue_bytes=1 << 16) as rec:
            consume = rec.writer._consume

            def slow_consume(packet: Packet) -> None:
                time.sleep(writer_delay)
                consume(packet)

            monkeypatch.setattr(rec.writer, "_consume", slow_consume)
            for _ in range(n):
                t0 = time.perf_counter()
                opt.zero_grad()
                torch.autograd.backward(model(torch.randn(2, 4)).sum())
                opt.step()
                durations.append(time.perf_counter() - t0)
        return rec.run_dir

    with pytest.warns(GradlogWarning, match="writer queue is full") as record:
        run = train_against_a_slow_disk()
    assert len(_gradlog_warnings(record)) == 1
    # Never waited for the writer: waiting would take about (n - 2) x writer_delay.
    assert sum(durations) < 2 * writer_delay, durations
    counters = read_meta(run)["counters"]
    assert counters["dropped_steps"] > 0
    assert counters["dropped_steps"] + counters["steps_recorded"] == n
    assert len(_step_numbers(run)) == counters["steps_recorded"]


# ----------------------------------------------------------------------------- many tensors
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc for RSS")
def test_ten_thousand_tensors_bounded_memory(tmp_path: Path) -> None:
    n_tensors, warmup, measured = 10_000, 5, 50
    params = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(3)) for _ in range(n_tensors)])
    plist = list(params)
    # loss = sum(w * concat(params)): the gradient of tensor i is w[3i:3i+3] at every step.
    w = torch.randn(3 * n_tensors)
    opt = torch.optim.SGD(plist, lr=1e-3, foreach=True)

    def step() -> None:
        opt.zero_grad()
        torch.autograd.backward((torch.cat(plist) * w).sum())
        opt.step()

    def settle() -> tuple[int, int]:
        rec.flush()  # everything recorded so far written out: the writer's buffers are empty
        gc.collect()
        return sys.getallocatedblocks(), _rss_bytes()

    with Recorder(params, opt, root=tmp_path, flush_every_steps=5, params=10, updates=10) as rec:
        for _ in range(warmup):
            step()
        blocks0, rss0 = settle()
        for _ in range(measured):
            step()
        blocks1, rss1 = settle()
    # Python objects (numpy arrays included) still allocated after the 50 steps: about 300 here
    # (caches that fill once). Keeping each step's packet alive adds about 17 objects per step
    # (~1,150 in all); anything kept per tensor, hundreds of thousands. RSS is noisy (a
    # histogram step allocates ~50 MB transiently), so its bound only catches gross leaks.
    assert blocks1 - blocks0 < 800, f"{blocks1 - blocks0} Python objects more after {measured}"
    assert rss1 - rss0 < 200 << 20, f"RSS grew {(rss1 - rss0) / 2**20:.0f} MiB"

    run = rec.run_dir
    table = pa.concat_tables(
        pq.read_table(f, columns=["step", "tensor", "kind", "count", "sum", "sumsq", "absmax"])
        for f in part_files(run, "tensors")
    )
    grads = table.filter(pc.equal(table["kind"].cast(pa.string()), "grad"))
    steps = warmup + measured
    assert grads.num_rows == steps * n_tensors
    ref = w.reshape(n_tensors, 3).double().numpy()
    for s in (0, steps - 1):
        at = grads.filter(pc.equal(grads["step"], s))
        index = np.array([int(x) for x in at["tensor"].cast(pa.string()).to_pylist()])
        order = np.argsort(index)  # ParameterList names its tensors '0'..'9999'
        np.testing.assert_array_equal(index[order], np.arange(n_tensors))
        col = {c: at[c].to_numpy()[order] for c in ("count", "sum", "sumsq", "absmax")}
        np.testing.assert_array_equal(col["count"], 3)
        np.testing.assert_allclose(col["sum"], ref.sum(1), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(col["sumsq"], (ref**2).sum(1), rtol=1e-5)
        np.testing.assert_array_equal(col["absmax"], np.abs(ref).max(1).astype(np.float32))
    assert len(read_meta(run)["tensors"]) == n_tensors


def test_no_warning_leaks_from_a_clean_run(tmp_path: Path) -> None:
    # The pyproject filter makes any GradlogWarning an error; also no other warning at all.
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Recorder(model, opt, root=tmp_path, hists=True, params=True, updates=True):
            _train(model, opt, 3)
