"""GradlogCallback in real Lightning fits, checked step by step against Lightning's own numbers.

The reference is ``grad_norm(module, norm_type=2)`` called in the LightningModule's
``on_before_optimizer_step`` (after the callbacks' hook, before Lightning clips). On every
optimizer step the recorded pre-clip global norm (``grad_norm_preclip`` where Lightning clipped,
else ``steps.grad_norm``) and the norm derived from the per-tensor rows must be within 1e-5 of it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as lp
import pytest
import pytorch_lightning
import torch
from lightning.pytorch.plugins import MixedPrecision

from gradlog.errors import ConfigError, GradlogWarning
from gradlog.integrations.lightning import GradlogCallback
from tests.integrations.lightning_helpers import (
    TOTAL,
    Regression,
    TinyGAN,
    assert_norms_match,
    gan_data,
    read_recorded,
    regression_data,
    rel,
    trainer_kwargs,
)
from tests.recorder.helpers import only_run, read_meta, run_dirs

WORKER = Path(__file__).with_name("lightning_ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fit(root: Path, module: lp.LightningModule, batches: int, **kwargs: Any) -> Path:
    trainer = lp.Trainer(callbacks=[GradlogCallback(root)], **trainer_kwargs(), **kwargs)
    trainer.fit(module, regression_data(batches))
    return only_run(root)


def _step_losses(module: Regression) -> dict[int, float]:
    """The mean of the micro-batch losses of each optimizer step."""
    by_step: dict[int, list[float]] = {}
    for step, loss in module.micro_losses:
        by_step.setdefault(step, []).append(loss)
    return {step: statistics.fmean(losses) for step, losses in by_step.items()}


def test_fp32_norms_loss_metrics_and_config(tmp_path: Path) -> None:
    module = Regression(lr=0.1)
    run = _fit(tmp_path, module, batches=7, max_steps=10)
    worst = assert_norms_match(run, module.reference)
    print(f"max relative difference, fp32: {worst:.2e}")
    assert len(module.reference) == 10
    got = read_recorded(run)
    assert not any(name == "grad_norm_preclip" for _, name in got.scalars)  # nothing clipped
    for step, loss in _step_losses(module).items():
        assert rel(got.scalars[(step, "loss")], loss) <= 1e-6, step
        # Lightning's metric, under its own name, logged at the step it belongs to
        assert rel(got.scalars[(step, "train_loss_step")], loss) <= 1e-6, step
    # each epoch mean appears once, at the epoch's last step (7 batches, then 3 until max_steps)
    assert [s for s, name in sorted(got.scalars) if name == "train_loss_epoch"] == [6, 9]
    for step, epoch in ((6, slice(0, 7)), (9, slice(7, 10))):
        epoch_mean = statistics.fmean(loss for _, loss in module.micro_losses[epoch])
        assert rel(got.scalars[(step, "train_loss_epoch")], epoch_mean) <= 1e-5
    meta = read_meta(run)
    assert meta["status"] == "finished"
    assert meta["name"] == "Regression"
    assert meta["config"]["lr"] == 0.1  # the module's hparams
    assert meta["config"]["lightning"] == {
        "accumulate_grad_batches": 1,
        "gradient_clip_val": None,
        "gradient_clip_algorithm": None,
        "precision": "32-true",
        "max_epochs": -1,
        "max_steps": 10,
        "world_size": 1,
        "strategy": "SingleDeviceStrategy",
        "automatic_optimization": True,
        "package": "lightning.pytorch",
    }


def test_gradient_accumulation_loss_is_the_mean_of_micro_batches(tmp_path: Path) -> None:
    module = Regression()
    # 7 batches an epoch with k=2: windows of 2, 2, 2 and 1 micro-batches (Lightning steps on
    # the epoch's last batch), so the loss must not simply be the sum of the normalised losses.
    run = _fit(tmp_path, module, batches=7, max_epochs=2, accumulate_grad_batches=2)
    worst = assert_norms_match(run, module.reference)
    print(f"max relative difference, accumulate_grad_batches=2: {worst:.2e}")
    assert len(module.reference) == 8
    got = read_recorded(run)
    losses = _step_losses(module)
    sizes = [len([s for s, _ in module.micro_losses if s == k]) for k in range(8)]
    assert sizes == [2, 2, 2, 1] * 2
    assert sorted(losses) == sorted(got.steps)
    for step, loss in losses.items():
        assert rel(got.scalars[(step, "loss")], loss) <= 1e-6, step
    assert read_meta(run)["config"]["lightning"]["accumulate_grad_batches"] == 2


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_lightning_clipping_records_preclip_norms(tmp_path: Path, algorithm: str) -> None:
    clip = 0.5 if algorithm == "norm" else 0.05
    module = Regression()
    run = _fit(
        tmp_path,
        module,
        batches=12,
        max_steps=12,
        gradient_clip_val=clip,
        gradient_clip_algorithm=algorithm,
    )
    worst = assert_norms_match(run, module.reference)  # grad_norm_preclip vs Lightning's
    print(f"max relative difference, clip by {algorithm}: {worst:.2e}")
    got = read_recorded(run)
    assert len(module.applied) == len(got.steps) == 12
    for step, applied in enumerate(module.applied):
        assert got.scalars[(step, "grad_clip_limit")] == pytest.approx(clip)
        post = float(got.steps[step]["grad_norm"])  # what the optimizer applied
        assert rel(post, applied) <= 1e-5, step
        if algorithm == "norm":
            assert post <= clip * (1 + 1e-5), step
    assert any(got.preclip(s) > clip for s in got.steps)  # the clip really fired
    assert read_meta(run)["config"]["lightning"]["gradient_clip_algorithm"] == algorithm

    if algorithm == "norm":
        from gradlog.analysis import analyze

        (result,) = analyze([run]).runs
        (hint,) = [f for f in result.findings if f.detector == "hint.clipping"]
        preclip = [got.scalars[(s, "grad_norm_preclip")] for s in sorted(got.steps)]
        assert hint.evidence["p50"] == pytest.approx(statistics.median(preclip), rel=1e-6)
        assert float(hint.evidence["fired_share"]) > 0


def test_bf16_mixed(tmp_path: Path) -> None:
    module = Regression()
    run = _fit(tmp_path, module, batches=10, max_steps=10, precision="bf16-mixed")
    worst = assert_norms_match(run, module.reference)
    print(f"max relative difference, bf16-mixed: {worst:.2e}")
    meta = read_meta(run)
    assert meta["scaler"] is None
    assert meta["config"]["lightning"]["precision"] == "bf16-mixed"


def test_fp16_mixed_with_grad_scaler_records_skipped_steps(tmp_path: Path) -> None:
    # precision="16-mixed" becomes bf16-mixed on CPU; Lightning's own plugin keeps fp16 autocast
    # and a torch.amp.GradScaler on CPU.
    module = Regression()
    plugin = MixedPrecision("16-mixed", "cpu")
    run = _fit(
        tmp_path, module, batches=7, max_steps=12, plugins=[plugin], accumulate_grad_batches=2
    )
    worst = assert_norms_match(run, module.reference)  # skipped steps: NaN where Lightning has inf
    print(f"max relative difference, 16-mixed (finite steps): {worst:.2e}")
    got = read_recorded(run)
    skipped = [s for s in sorted(got.steps) if got.steps[s]["skipped"]]
    assert skipped, "the data are chosen so that fp16 overflows once"
    assert skipped == [s for s, ref in enumerate(module.reference) if not math.isfinite(ref)]
    assert len(skipped) < len(got.steps)
    for step, scale in enumerate(module.scales):
        assert got.steps[step]["loss_scale"] == scale, step
    assert read_meta(run)["scaler"] == "GradScaler"


def test_manual_optimization_with_two_optimizers_makes_two_runs(tmp_path: Path) -> None:
    module = TinyGAN()
    trainer = lp.Trainer(callbacks=[GradlogCallback(tmp_path)], max_epochs=1, **trainer_kwargs())
    trainer.fit(module, gan_data(6))
    runs = run_dirs(tmp_path)
    by_name = {read_meta(r)["name"]: r for r in runs}
    assert sorted(by_name) == ["TinyGAN-opt0", "TinyGAN-opt1"]
    for i, which in enumerate(("generator", "discriminator")):
        run = by_name[f"TinyGAN-opt{i}"]
        reference = module.reference[which]
        assert len(reference) == 6
        worst = assert_norms_match(run, reference)
        print(f"max relative difference, manual optimization, {which}: {worst:.2e}")
        meta = read_meta(run)
        names = {t["name"] for t in meta["tensors"]}
        assert names == {f"{which}.{n}" for n in ("0.weight", "0.bias", "2.weight", "2.bias")}
        got = read_recorded(run)
        assert {r["tensor"] for rows in got.grad_rows.values() for r in rows} == names
        for step, d_loss in enumerate(module.d_losses):  # the batch's metrics go to both runs
            assert rel(got.scalars[(step, "loss")], d_loss) <= 1e-6, step
            assert (step, "g_loss") in got.scalars
        assert meta["config"]["lightning"]["automatic_optimization"] is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_ddp_two_ranks_share_one_run(tmp_path: Path) -> None:
    root, out, steps = tmp_path / "runs", tmp_path / "out", 4
    out.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(root), str(out), str(steps)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    run = only_run(root)
    assert {rep["run_dir"] for rep in reports} == {str(run)}
    assert json.loads((run / "meta-rank1.json").read_text())["world_size"] == 2
    for rank, rep in enumerate(reports):
        assert len(rep["reference"]) == steps
        worst = assert_norms_match(run, rep["reference"], rank=rank)
        print(f"max relative difference, DDP rank {rank}: {worst:.2e}")
    assert read_meta(run)["config"]["lightning"]["strategy"] == "DDPStrategy"


@pytest.mark.parametrize("twice", ["same instance", "two instances"])
def test_attached_twice_fails_before_training(tmp_path: Path, twice: str) -> None:
    first = GradlogCallback(tmp_path)
    second = first if twice == "same instance" else GradlogCallback(tmp_path)
    module = Regression()
    trainer = lp.Trainer(callbacks=[first, second], max_steps=2, **trainer_kwargs())
    with pytest.raises(ConfigError, match="attach exactly one"):
        trainer.fit(module, regression_data(2))
    assert module.calls == 0
    assert run_dirs(tmp_path) == []


class PLRegression(pytorch_lightning.LightningModule):
    """Regression's model under the ``pytorch_lightning`` import path."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
        )
        self.reference: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        from pytorch_lightning.utilities import grad_norm

        self.reference.append(float(grad_norm(self, norm_type=2)[TOTAL]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_both_import_paths_produce_a_run(tmp_path: Path) -> None:
    callback = GradlogCallback(tmp_path / "pl", name="pl")
    # both packages are imported here: the callback is a Callback of each
    assert {pytorch_lightning.Callback, lp.Callback} <= set(type(callback).__mro__)
    module = PLRegression()
    trainer = pytorch_lightning.Trainer(callbacks=[callback], max_steps=5, **trainer_kwargs())
    trainer.fit(module, regression_data(5))
    run = only_run(tmp_path / "pl")
    worst = assert_norms_match(run, module.reference)
    print(f"max relative difference, pytorch_lightning: {worst:.2e}")
    meta = read_meta(run)
    assert (meta["name"], meta["status"]) == ("pl", "finished")
    assert meta["config"]["lightning"]["package"] == "pytorch_lightning"
    assert callback.run_dirs == [run]
    # lightning.pytorch is covered by every other test; one more run under it, in the same root
    other = Regression()
    lp.Trainer(callbacks=[GradlogCallback(tmp_path / "lp")], max_steps=2, **trainer_kwargs()).fit(
        other, regression_data(2)
    )
    assert read_meta(only_run(tmp_path / "lp"))["config"]["lightning"]["package"] == (
        "lightning.pytorch"
    )


def test_an_exception_marks_the_run_crashed(tmp_path: Path) -> None:
    module = Regression(fail_at=3)
    trainer = lp.Trainer(callbacks=[GradlogCallback(tmp_path)], max_steps=8, **trainer_kwargs())
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(module, regression_data(8))
    run = only_run(tmp_path)
    meta = read_meta(run)
    assert meta["status"] == "crashed"
    assert "RuntimeError: boom at training step 3" in meta["error"]
    assert_norms_match(run, module.reference)  # the three steps before the failure
    assert len(module.reference) == 3


def test_an_unusable_root_is_a_config_error_before_the_first_step(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    trainer = lp.Trainer(callbacks=[GradlogCallback(blocker)], max_steps=3, **trainer_kwargs())
    with pytest.raises(ConfigError, match=r"cannot record under '.*a-file'"):
        trainer.fit(Regression(), regression_data(3))
    assert trainer.global_step == 0


def test_a_recording_problem_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(5, "Input/output error")  # e.g. a failing disk under the run directory

    monkeypatch.setattr("gradlog.integrations.lightning.Recorder", broken)
    trainer = lp.Trainer(callbacks=[GradlogCallback(tmp_path)], max_steps=3, **trainer_kwargs())
    with pytest.warns(GradlogWarning, match="could not start recording"):
        trainer.fit(Regression(), regression_data(3))
    assert trainer.global_step == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grads": 0}, "grads must be a schedule"),
        ({"hists": "often"}, "hists must be a schedule"),
        ({"root": 3}, "root must be a path"),
        ({"config": ["lr"]}, "config must be a mapping"),
        ({"strict": "yes"}, "strict must be True or False"),
        ({"name": 5}, "run name must be a str"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GradlogCallback(**kwargs)


def test_pickles_for_ddp_spawn(tmp_path: Path) -> None:
    callback = GradlogCallback(tmp_path, name="x", grads=2)
    copy = pickle.loads(pickle.dumps(callback))
    assert isinstance(copy, GradlogCallback)
    assert isinstance(copy, lp.Callback)
    assert type(copy) is type(callback)
    assert (copy.root, copy.name) == (tmp_path, "x")


def test_a_fit_resumed_from_a_checkpoint_continues_the_steps(tmp_path: Path) -> None:
    """Lightning restores global_step after on_fit_start: resumed at global_step 4, the new
    run's steps are 4..7 (global_step - 1), continuing the first run's 0..3."""
    root = tmp_path / "runs"
    kwargs = {**trainer_kwargs(), "enable_checkpointing": True, "default_root_dir": tmp_path}
    first = lp.Trainer(callbacks=[GradlogCallback(root)], max_steps=4, **kwargs)
    first.fit(Regression(), regression_data(16))
    (checkpoint,) = sorted(tmp_path.rglob("*.ckpt"))
    module = Regression()
    resumed = lp.Trainer(callbacks=[GradlogCallback(root)], max_steps=8, **kwargs)
    resumed.fit(module, regression_data(16), ckpt_path=checkpoint)
    assert resumed.global_step == 8
    by_first = {read_meta(r)["first_step"]: r for r in run_dirs(root)}
    assert sorted(by_first) == [0, 4]
    assert sorted(read_recorded(by_first[0]).steps) == [0, 1, 2, 3]
    later = read_recorded(by_first[4])
    assert sorted(later.steps) == [4, 5, 6, 7]
    assert len(module.reference) == 4
    losses = _step_losses(module)  # by global_step at each training_step: the module's count
    assert sorted(losses) == [4, 5, 6, 7]
    for step, loss in losses.items():
        assert rel(later.scalars[(step, "loss")], loss) <= 1e-6, step
