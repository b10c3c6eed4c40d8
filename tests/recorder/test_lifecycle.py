"""The recorder across process life: resuming a run in a second process appends and loses
nothing, exits are recorded as what they are, a forked child never closes the parent's run,
an unusable root is a ConfigError, complex parameters are named and left out, and every part
carries page checksums."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from gradlog.errors import ConfigError, GradlogWarning
from gradlog.recorder import Recorder
from tests.recorder.helpers import chain_model, only_run, part_files, read_meta, read_rows

REPO = Path(__file__).resolve().parents[2]

_TRAIN = textwrap.dedent(
    """
    import sys, torch
    from gradlog.recorder import Recorder
    root, run_id, steps, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    torch.manual_seed(len(first))
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {} if first == "auto" else {"first_step": int(first)}
    with Recorder(model, opt, root=root, run_id=run_id, flush_every_steps=3, **kwargs) as rec:
        for _ in range(steps):
            opt.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            opt.step()
            rec.log(loss=loss)
    """
)


def _train(root: Path, run_id: str, steps: int, first: str = "auto") -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", _TRAIN, str(root), run_id, str(steps), first]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


def test_a_resumed_run_appends_and_keeps_every_row(tmp_path: Path) -> None:
    _train(tmp_path, "job-1", 10)
    run = tmp_path / "job-1"
    first_parts = {p.name: p.read_bytes() for p in part_files(run, "tensors")}
    assert len(first_parts) >= 3  # several parts: rotation every 3 steps
    _train(tmp_path, "job-1", 7)
    for name, data in first_parts.items():  # nothing overwritten
        assert (run / "tensors" / "rank=0" / name).read_bytes() == data
    steps = sorted(r["step"] for r in read_rows(run, "steps"))
    assert steps == list(range(17))  # the second process went on after the first's last step
    losses = [r for r in read_rows(run, "scalars") if r["name"] == "loss"]
    assert len(losses) == 17
    meta = read_meta(run)
    assert meta["first_step"] == 10
    assert meta["last_step"] == 16
    assert meta["status"] == "finished"
    (earlier,) = meta["resumes"]
    assert earlier["first_step"] == 0
    assert earlier["last_step"] == 9
    assert earlier["status"] == "finished"
    assert meta["start_time"] == earlier["start_time"]


def test_resuming_from_a_checkpoint_step_repeats_steps_without_losing_rows(tmp_path: Path) -> None:
    _train(tmp_path, "job-2", 6)
    _train(tmp_path, "job-2", 4, first="3")  # resumed from a checkpoint at step 3
    run = tmp_path / "job-2"
    steps = sorted(r["step"] for r in read_rows(run, "steps"))
    assert steps == [0, 1, 2, 3, 3, 4, 4, 5, 5, 6]  # both writers' rows are kept
    assert read_meta(run)["first_step"] == 3


@pytest.mark.parametrize(
    ("raised", "status", "error"),
    [
        (SystemExit(0), "finished", None),
        (SystemExit(None), "finished", None),
        (SystemExit(3), "crashed", "SystemExit: 3"),
        (KeyboardInterrupt(), "interrupted", "KeyboardInterrupt"),
        (ValueError("boom"), "crashed", "ValueError: boom"),
    ],
)
def test_exits_are_recorded_as_what_they_are(
    tmp_path: Path, raised: BaseException, status: str, error: str | None
) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(type(raised)), Recorder(model, opt, root=tmp_path):
        raise raised
    meta = read_meta(only_run(tmp_path))
    assert meta["status"] == status
    assert meta.get("error") == error


def test_an_uncaught_interrupt_at_exit_is_interrupted(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import torch
        from gradlog.recorder import Recorder
        model = torch.nn.Linear(2, 2)
        rec = Recorder(model, torch.optim.SGD(model.parameters(), lr=0.1), root={str(tmp_path)!r})
        raise KeyboardInterrupt
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=False)
    assert done.returncode != 0
    assert read_meta(only_run(tmp_path))["status"] == "interrupted"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_never_closes_or_writes_the_parents_run(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(model, opt, root=tmp_path)
    pid = os.fork()
    if pid == 0:  # the child: what a forked DataLoader worker or a user's fork might do
        try:
            rec.log(child=1.0)
            rec.close(status="crashed", error="child")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert read_meta(rec.run_dir)["status"] == "running"
    opt.zero_grad()
    torch.autograd.backward(model(torch.randn(3, 6)).sum())
    opt.step()
    rec.log(parent=2.0)
    rec.close()
    run = only_run(tmp_path)
    assert read_meta(run)["status"] == "finished"
    names = {r["name"] for r in read_rows(run, "scalars")}
    assert "parent" in names
    assert "child" not in names


def test_an_unusable_root_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"cannot record under '.*not-a-dir'"):
        Recorder(model, opt, root=a_file)
    with pytest.raises(ConfigError, match=r"cannot record under '.*not-a-dir/below'"):
        Recorder(model, opt, root=a_file / "below")
    # A directory this user cannot write to (root ignores file modes, so ask os.access).
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p).parent == locked else real_access(p, mode)
    )
    with pytest.raises(ConfigError, match=r"cannot record under '.*locked': Permission denied"):
        Recorder(model, opt, root=locked)
    assert opt._optimizer_step_pre_hooks == {}


class ComplexModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.real = torch.nn.Linear(4, 2)
        self.phase = torch.nn.Parameter(torch.randn(2, dtype=torch.complex64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.real(x) * self.phase.abs()
        return out


def test_complex_parameters_are_named_and_left_out(tmp_path: Path) -> None:
    model = ComplexModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(GradlogWarning, match=r"phase is complex \(complex64\); it is not recorded"):
        rec = Recorder(model, opt, root=tmp_path, params=1, updates=1, hists=1)
    for _ in range(2):
        opt.zero_grad()
        torch.autograd.backward(model(torch.randn(3, 4)).sum())
        opt.step()
    rec.close()
    run = only_run(tmp_path)
    cat = {t["name"]: t for t in read_meta(run)["tensors"]}
    assert cat["phase"]["not_recorded"] == "complex (complex64)"
    assert cat["real.weight"]["not_recorded"] is None
    tensors = {(r["kind"], r["tensor"]) for r in read_rows(run, "tensors")}
    assert ("grad", "real.weight") in tensors
    assert ("update", "real.bias") in tensors
    assert not any(t == "phase" for _, t in tensors)


def test_parts_carry_page_checksums_that_catch_a_flipped_byte(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path) as rec:
        for _ in range(20):
            opt.zero_grad()
            torch.autograd.backward(model(torch.randn(3, 6)).pow(2).sum())
            opt.step()
            rec.log(loss=1.0)
    (part,) = part_files(only_run(tmp_path), "tensors")
    pq.read_table(part, page_checksum_verification=True)  # intact: verifies
    footer = pq.read_metadata(part)
    names = [footer.schema.column(i).name for i in range(footer.num_columns)]
    chunk = footer.row_group(0).column(names.index("sumsq"))
    data = bytearray(part.read_bytes())
    # The last byte of the column chunk: inside its (compressed) page data, past the header.
    data[chunk.data_page_offset + chunk.total_compressed_size - 1] ^= 0x10
    part.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"(?i)crc|checksum"):
        pq.read_table(part, page_checksum_verification=True)


class _Wrapper(torch.nn.Module):
    """A module whose own forward the training loop never calls (as many LightningModules)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)
        )


def test_no_forward_hook_outlives_the_first_step(tmp_path: Path) -> None:
    model = _Wrapper()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def hooks() -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    with Recorder(model, opt, root=tmp_path):
        assert hooks() > 0  # the activation probe waits for the first forward
        for _ in range(3):
            opt.zero_grad()
            torch.autograd.backward(model.net(torch.randn(2, 4)).sum())  # root forward never runs
            opt.step()
            assert hooks() == 0  # gone at the first step: nothing accumulates per forward
