"""GradlogCallback in a real Hugging Face Trainer (CPU, tiny models), checked against the numbers
the Trainer itself logs: its ``grad_norm`` (the pre-clip global norm), its loss and learning rate,
and its ``global_step``."""

from __future__ import annotations

import importlib
import json
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from gradlog.errors import ConfigError, GradlogWarning
from gradlog.integrations.transformers import GradlogCallback
from tests.integrations.hf_helpers import TinyRegressor, recorded, regression_data, rel, token_data
from tests.recorder.helpers import assert_stats_match, only_run, read_meta, run_dirs, stat_rows

RTOL = 1e-5


@pytest.fixture(autouse=True)
def _fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps process-wide singletons; every Trainer here starts from a clean slate."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


class LogCapture(TrainerCallback):
    """Keeps every ``logs`` dict the Trainer emits, with the global step it was emitted at."""

    def __init__(self) -> None:
        self.logs: list[tuple[int, dict[str, Any]]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.logs.append((state.global_step, dict(logs or {})))

    def per_step(self, key: str) -> dict[int, float]:
        """{global_step: value} of ``key`` over the logs that hold it."""
        return {step: float(log[key]) for step, log in self.logs if key in log}


class SnapshotTrainer(Trainer):
    """A Trainer that copies the gradients it is about to clip (accumulated, before the clip)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def _clip_grad_norm(self, model: Any) -> Any:
        assert self.model is not None
        snapshot = {}
        for name, p in self.model.named_parameters():
            assert p.grad is not None
            snapshot[name] = p.grad.detach().clone()
        self.snapshots.append(snapshot)
        clip: Callable[[Any], Any] = super()._clip_grad_norm  # untyped upstream
        return clip(model)


def _args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    base: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "max_steps": 8,
        "logging_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "seed": 0,
        "disable_tqdm": True,
    }
    return TrainingArguments(**{**base, **overrides})


def _tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=8, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def test_trainer_records_preclip_norms_per_accumulated_step(tmp_path: Path) -> None:
    """Default max_grad_norm=1.0, gradient_accumulation_steps=4: one row per optimizer step whose
    pre-clip norm is the Trainer's logged grad_norm, clipped post-clip norms, and per-tensor
    statistics of the accumulated gradient."""
    root, logs = tmp_path / "runs", LogCapture()
    cb = GradlogCallback(root, config={"experiment": "hf"})
    model = _tiny_gpt2()
    # lr 0.3 drives the norm above 1.0 on some steps and leaves it below on others
    args = _args(tmp_path, learning_rate=0.3)
    assert args.max_grad_norm == 1.0  # the Trainer's default
    trainer = SnapshotTrainer(
        model=model,
        args=args,
        train_dataset=token_data(256, vocab=32, length=8),
        callbacks=[cb, logs],
    )
    trainer.train()
    run = only_run(root)
    got = recorded(run)
    steps, scalars = got["steps"], got["scalars"]
    n = trainer.state.global_step
    assert n == 8
    assert sorted(steps) == list(range(n))  # one row per optimizer step, not per micro-batch

    hf_norm = logs.per_step("grad_norm")
    assert sorted(hf_norm) == list(range(1, n + 1))
    clipped = [hf_norm[s + 1] > args.max_grad_norm for s in range(n)]
    assert any(clipped), hf_norm  # both kinds of step are exercised
    assert not all(clipped), hf_norm
    worst = 0.0
    for s in range(n):
        pre, post, ref = scalars[(s, "grad_norm_preclip")], steps[s]["grad_norm"], hf_norm[s + 1]
        worst = max(worst, rel(pre, ref))
        assert rel(pre, ref) <= RTOL, (s, pre, ref)
        assert scalars[(s, "grad_clip_limit")] == args.max_grad_norm
        assert post <= args.max_grad_norm * (1 + RTOL), (s, post)
        if not clipped[s]:  # below the limit the clip leaves the gradients as they were
            assert rel(post, ref) <= RTOL, (s, post, ref)
        assert rel(got["row_norm"][s], pre) <= RTOL, (s, got["row_norm"][s], pre)
    print(f"max rel diff, grad_norm_preclip vs HF grad_norm (max_grad_norm=1.0): {worst:.2e}")

    # per-tensor rows are the accumulated gradients before the clip
    assert len(trainer.snapshots) == n
    rows = stat_rows(run, "grad")
    for s, snap in enumerate(trainer.snapshots):
        for name, grad in snap.items():
            assert_stats_match(rows[(s, name)], grad, stored_float32=True)

    # the Trainer's log entries at the optimizer step they describe; its grad_norm is ours
    for key in ("loss", "learning_rate", "epoch"):
        for global_step, value in logs.per_step(key).items():
            assert scalars[(global_step - 1, key)] == pytest.approx(value, rel=1e-12), key
    assert not any(name == "grad_norm" for _, name in scalars)
    assert scalars[(n - 1, "train_loss")] == pytest.approx(logs.per_step("train_loss")[n])
    for global_step, lr in logs.per_step("learning_rate").items():
        assert scalars[(global_step - 1, "lr/0")] == pytest.approx(lr, rel=1e-12)

    meta = read_meta(run)
    assert meta["status"] == "finished"
    assert meta["name"] == "GPT2LMHeadModel"
    assert meta["config"]["gradient_accumulation_steps"] == 4
    assert meta["config"]["learning_rate"] == 0.3
    assert meta["config"]["model_config"]["n_embd"] == 16
    assert meta["config"]["experiment"] == "hf"
    json.dumps(meta, allow_nan=False)  # strictly JSON


def test_max_grad_norm_zero_measures_without_clipping(tmp_path: Path) -> None:
    """max_grad_norm=0: the Trainer only measures (clip_grad_norm_ with inf); the step's norm is
    its grad_norm and no pre-clip scalars are recorded."""
    root, logs = tmp_path / "runs", LogCapture()
    trainer = Trainer(
        model=_tiny_gpt2(),
        args=_args(tmp_path, learning_rate=0.3, max_grad_norm=0.0),
        train_dataset=token_data(256, vocab=32, length=8),
        callbacks=[GradlogCallback(root), logs],
    )
    trainer.train()
    got = recorded(only_run(root))
    n = trainer.state.global_step
    assert sorted(got["steps"]) == list(range(n))
    hf_norm = logs.per_step("grad_norm")
    assert any(v > 1.0 for v in hf_norm.values())  # unclipped norms above the default limit
    worst = 0.0
    for s in range(n):
        norm = got["steps"][s]["grad_norm"]
        worst = max(worst, rel(norm, hf_norm[s + 1]))
        assert rel(norm, hf_norm[s + 1]) <= RTOL, (s, norm, hf_norm[s + 1])
        assert rel(got["row_norm"][s], norm) <= RTOL
    print(f"max rel diff, steps.grad_norm vs HF grad_norm (max_grad_norm=0): {worst:.2e}")
    names = {name for _, name in got["scalars"]}
    assert "grad_norm_preclip" not in names
    assert "grad_clip_limit" not in names


def test_attaching_twice_raises_before_training(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    data = regression_data(32)
    with pytest.raises(ConfigError, match="has 2 GradlogCallbacks in its callbacks"):
        Trainer(
            model=TinyRegressor(),
            args=_args(tmp_path),
            train_dataset=data,
            callbacks=[GradlogCallback(root), GradlogCallback(root)],
        )
    cb = GradlogCallback(root)
    with pytest.raises(ConfigError, match="the same GradlogCallback 2 times"):
        Trainer(model=TinyRegressor(), args=_args(tmp_path), train_dataset=data, callbacks=[cb, cb])

    model = TinyRegressor()
    trainer = Trainer(
        model=model, args=_args(tmp_path), train_dataset=data, callbacks=[GradlogCallback(root)]
    )
    trainer.add_callback(GradlogCallback(root))  # no on_init_end: caught when train() starts
    with pytest.raises(ConfigError, match="has 2 GradlogCallbacks"):
        trainer.train()
    assert model.calls == 0  # not a single forward pass
    assert run_dirs(root) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"root": 3}, "root must be a path"),
        ({"name": 5}, "run name must be a str"),
        ({"config": [1]}, "config must be a mapping"),
        ({"grads": "often"}, "grads"),
        ({"hists": -1}, "hists"),
        ({"strict": 1}, "strict must be True or False"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GradlogCallback(**kwargs)


def test_an_unusable_root_is_a_config_error_before_the_first_step(tmp_path: Path) -> None:
    root = tmp_path / "not-a-dir"
    root.write_text("")
    trainer = Trainer(
        model=TinyRegressor(),
        args=_args(tmp_path, max_steps=2),
        train_dataset=regression_data(64),
        callbacks=[GradlogCallback(root)],
    )
    with pytest.raises(ConfigError, match=r"cannot record under '.*not-a-dir'"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_a_recording_problem_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recorder that cannot start (a failing disk): one warning, training goes on unrecorded."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("gradlog.integrations.transformers.Recorder", broken)
    cb = GradlogCallback(tmp_path / "runs")
    trainer = Trainer(
        model=TinyRegressor(),
        args=_args(tmp_path, max_steps=2),
        train_dataset=regression_data(64),
        callbacks=[cb],
    )
    with pytest.warns(GradlogWarning, match="could not start recording"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert cb.recorder is None


def test_training_error_marks_run_crashed(tmp_path: Path) -> None:
    """An exception in train() closes the run as crashed, with the error, keeping the steps
    recorded before it."""
    root = tmp_path / "runs"
    trainer = Trainer(
        model=TinyRegressor(fail_at=9),  # the 3rd optimizer step's 2nd micro-batch
        args=_args(tmp_path, learning_rate=0.01),
        train_dataset=regression_data(128),
        callbacks=[GradlogCallback(root)],
    )
    with pytest.raises(RuntimeError, match="boom at forward 9"):
        trainer.train()
    run = only_run(root)
    meta = read_meta(run)
    assert meta["status"] == "crashed"
    assert meta["error"] == "RuntimeError: boom at forward 9"
    assert sorted(recorded(run)["steps"]) == [0, 1]


def test_callback_added_later_closes_a_dangling_run_on_the_next_train(tmp_path: Path) -> None:
    """Added with add_callback, the first train() is not guarded: its run stays open after the
    error (the Recorder's exit handler would close it at process exit); the next train() with
    the callback closes it as crashed and records a new run."""
    root = tmp_path / "runs"
    model = TinyRegressor(fail_at=5)
    trainer = Trainer(
        model=model, args=_args(tmp_path, max_steps=2), train_dataset=regression_data(64)
    )
    cb = GradlogCallback(root)
    trainer.add_callback(cb)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    (first,) = run_dirs(root)
    assert read_meta(first)["status"] == "running"
    model.fail_at = None
    trainer.train()  # a new TrainerState: a new run; the dangling one is closed first
    assert read_meta(first)["status"] == "crashed"
    (second,) = set(run_dirs(root)) - {first}
    assert read_meta(second)["status"] == "finished"
    assert sorted(recorded(second)["steps"]) == [0, 1]


def test_a_guarded_trainer_still_pickles(tmp_path: Path) -> None:
    """Ray Tune pickles the Trainer for its workers: the copy records its own runs, guarded
    too; a callback that recorded pickles without its (process-bound) Recorder."""
    root = tmp_path / "runs"
    trainer = Trainer(
        model=TinyRegressor(),
        args=_args(tmp_path, max_steps=2),
        train_dataset=regression_data(64),
        callbacks=[GradlogCallback(root)],
    )
    copy = pickle.loads(pickle.dumps(trainer))
    assert isinstance(copy.model, TinyRegressor)
    copy.model.fail_at = 5
    with pytest.raises(RuntimeError, match="boom"):
        copy.train()
    (run,) = run_dirs(root)
    assert read_meta(run)["status"] == "crashed"  # the copy's train() is guarded

    trainer.train()
    cb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, GradlogCallback))
    assert cb.recorder is not None
    assert read_meta(cb.recorder.run_dir)["status"] == "finished"
    assert pickle.loads(pickle.dumps(cb)).recorder is None


def test_import_without_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    monkeypatch.delitem(sys.modules, "gradlog.integrations.transformers")
    with pytest.raises(ImportError, match=r"pip install 'torch-gradlog\[transformers\]'"):
        importlib.import_module("gradlog.integrations.transformers")


def test_gradlog_never_imports_transformers() -> None:
    code = (
        "import sys, gradlog, gradlog.recorder, gradlog.integrations; "
        "assert 'transformers' not in sys.modules and 'accelerate' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


class ExtraLogsTrainer(Trainer):
    """Adds entries the callback must skip (text, a bool, a name too long) to every log."""

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        extra: dict[str, Any] = {"note": "text", "flag": True, "x" * 300: 1.0, "custom": 7}
        super().log({**logs, **extra}, start_time)


def test_loss_is_the_logging_window_mean(tmp_path: Path) -> None:
    """With logging_steps=2 the Trainer's loss (recorded as is) is the mean of two steps' losses,
    at the second step; non-numeric entries and over-long names are skipped."""
    root, logs, model = tmp_path / "runs", LogCapture(), TinyRegressor()
    trainer = ExtraLogsTrainer(
        model=model,
        args=_args(tmp_path, max_steps=4, logging_steps=2, gradient_accumulation_steps=1),
        train_dataset=regression_data(64),
        callbacks=[GradlogCallback(root), logs],
    )
    trainer.train()
    scalars = recorded(only_run(root))["scalars"]
    losses = {s: v for (s, name), v in scalars.items() if name == "loss"}
    assert sorted(losses) == [1, 3]
    assert losses == {s - 1: v for s, v in logs.per_step("loss").items()}
    step_losses = model.losses  # one forward pass per optimizer step here
    assert len(step_losses) == 4
    for s in (1, 3):
        assert losses[s] == pytest.approx((step_losses[s - 1] + step_losses[s]) / 2, rel=1e-6)
    names = {name for _, name in scalars}
    assert "custom" in names
    assert not names & {"note", "flag", "x" * 300, "grad_norm"}


def test_a_resumed_train_records_steps_aligned_with_global_step(tmp_path: Path) -> None:
    """Resumed from a checkpoint at global_step 4, the run's steps are 4..7 (global_step - 1),
    continuing the first run's 0..3, and each logged loss sits at its global_step - 1."""
    data = token_data(256, vocab=32, length=8)
    root = tmp_path / "runs"
    args = _args(tmp_path, max_steps=4, save_strategy="steps", save_steps=4)
    first = Trainer(
        model=_tiny_gpt2(), args=args, train_dataset=data, callbacks=[GradlogCallback(root)]
    )
    first.train()
    (checkpoint,) = sorted((tmp_path / "out").glob("checkpoint-*"))
    logs = LogCapture()
    resumed = Trainer(
        model=_tiny_gpt2(),
        args=_args(tmp_path, max_steps=8),
        train_dataset=data,
        callbacks=[GradlogCallback(root), logs],
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 8
    runs = run_dirs(root)
    assert len(runs) == 2
    by_first = {read_meta(r)["first_step"]: r for r in runs}
    assert sorted(by_first) == [0, 4]
    assert sorted(recorded(by_first[0])["steps"]) == [0, 1, 2, 3]
    later = recorded(by_first[4])
    assert sorted(later["steps"]) == [4, 5, 6, 7]
    assert read_meta(by_first[4])["config"]["initial_global_step"] == 4
    losses = logs.per_step("loss")
    assert sorted(losses) == [5, 6, 7, 8]
    for global_step, value in losses.items():
        assert later["scalars"][(global_step - 1, "loss")] == pytest.approx(value, rel=1e-12)
