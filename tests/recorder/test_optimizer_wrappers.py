"""Optimizers as frameworks hand them out: wrappers are unwrapped (accelerate's
AcceleratedOptimizer subclasses Optimizer without its hooks), unknown ones and a second
recorder on one optimizer are named ConfigErrors raised before anything is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gradlog.errors import ConfigError
from gradlog.recorder import Recorder
from tests.recorder.helpers import Capture, chain_model, global_norm, only_run, read_meta, read_rows


class AcceleratedLike(torch.optim.Optimizer):
    """Like accelerate's AcceleratedOptimizer: an Optimizer subclass that never ran
    Optimizer.__init__ (no hook dictionaries) and forwards to ``.optimizer``."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: Any = None) -> None:
        self.optimizer = optimizer
        self.scaler = scaler

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    def step(self, closure: Any = None) -> Any:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return None
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)


class Unknown(torch.optim.Optimizer):
    """An Optimizer subclass with no hooks and nothing inside."""

    def __init__(self) -> None:
        pass


def test_a_wrapper_exposing_optimizer_is_unwrapped_and_its_scaler_used(tmp_path: Path) -> None:
    model = chain_model()
    inner = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    wrapped = AcceleratedLike(inner, scaler)
    cap = Capture(model, inner)
    with Recorder(model, wrapped, root=tmp_path) as rec:
        assert rec.optimizer is inner
        assert rec.scaler is scaler
        for _ in range(3):
            wrapped.zero_grad()
            x, y = torch.randn(8, 6), torch.randn(8, 3)
            scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
            scaler.unscale_(inner)
            wrapped.step()
    run = only_run(tmp_path)
    meta = read_meta(run)
    assert meta["optimizer"]["class"] == "SGD"
    assert meta["name"] == "Sequential-SGD"
    assert meta["scaler"] == "GradScaler"
    steps = sorted(read_rows(run, "steps"), key=lambda r: r["step"])
    assert len(steps) == 3
    for r in steps:
        want = global_norm([g for g in cap.grads[r["step"]].values() if g is not None])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)
        assert r["loss_scale"] == 2.0**8


def test_an_unknown_wrapper_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Unknown is a wrapper gradlog does not know"):
        Recorder(chain_model(), Unknown(), root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_second_live_recorder_on_one_optimizer_is_a_config_error(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    first = Recorder(model, opt, root=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"already has a live gradlog Recorder \(run "):
        Recorder(model, AcceleratedLike(opt), root=tmp_path / "b")
    assert not (tmp_path / "b").exists()
    assert len(opt._optimizer_step_pre_hooks) == 1  # only the first recorder's hook
    first.close()
    second = Recorder(model, opt, root=tmp_path / "b")  # after close(): allowed
    second.close()
    manual = Recorder(model, None, root=tmp_path / "c")
    with pytest.raises(ConfigError, match=r"this model already has a live gradlog Recorder"):
        Recorder(model, None, root=tmp_path / "c")
    manual.close()
