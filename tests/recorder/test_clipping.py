"""Clipping through torch's own functions: the per-tensor statistics are of the gradients
before the clip, ``grad_norm_preclip`` is the norm torch returns, the step's ``grad_norm`` is
what the optimizer applies, and torch's functions are only wrapped while a recorder lives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gradlog.recorder import Recorder, clipping
from tests.recorder.helpers import (
    Capture,
    assert_stats_match,
    chain_model,
    global_norm,
    only_run,
    read_rows,
    scalar_rows,
    stat_rows,
)

CHAIN_NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
ORIGINAL_NORM = torch.nn.utils.clip_grad_norm_
ORIGINAL_VALUE = torch.nn.utils.clip_grad_value_


def _steps(run: Path) -> list[dict[str, Any]]:
    return sorted(read_rows(run, "steps"), key=lambda r: r["step"])


def _backward(model: torch.nn.Module, scale: float = 50.0) -> None:
    x, y = torch.randn(12, 6), torch.randn(12, 3)
    torch.autograd.backward(torch.nn.functional.mse_loss(model(x), y) * scale)


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_torch_clip_grad_norm_in_a_plain_loop(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cap = Capture(model, opt)  # sees the gradients the optimizer applies: after the clip
    pre: list[dict[str, torch.Tensor]] = []
    returned: list[float] = []
    with Recorder(model, opt, root=tmp_path):
        for _ in range(4):
            opt.zero_grad()
            _backward(model)
            pre.append(_grads(model))
            # a generator, as most code passes it: the wrapper must hand torch a list
            returned.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)))
            opt.step()
    run = only_run(tmp_path)
    scalars, grads = scalar_rows(run), stat_rows(run, "grad")
    for r in _steps(run):
        s = r["step"]
        assert returned[s] > 0.5  # the test really clips
        assert returned[s] == pytest.approx(global_norm(list(pre[s].values())), rel=1e-5)
        assert scalars[(s, "grad_norm_preclip")] == pytest.approx(returned[s], rel=1e-6)
        assert scalars[(s, "grad_clip_limit")] == 0.5
        applied = [cap.grad(s, n) for n in CHAIN_NAMES]
        assert r["grad_norm"] == pytest.approx(global_norm(applied), rel=1e-5)
        assert r["grad_norm"] == pytest.approx(0.5, rel=1e-4)
        for name in CHAIN_NAMES:
            assert_stats_match(grads[(s, name)], pre[s][name], stored_float32=True)


def test_clip_grad_value_is_a_clip_too(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cap = Capture(model, opt)
    pre: list[dict[str, torch.Tensor]] = []
    with Recorder(model, opt, root=tmp_path):
        for _ in range(3):
            opt.zero_grad()
            _backward(model)
            pre.append(_grads(model))
            torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=0.01)
            opt.step()
    run = only_run(tmp_path)
    scalars, grads = scalar_rows(run), stat_rows(run, "grad")
    for r in _steps(run):
        s = r["step"]
        assert scalars[(s, "grad_norm_preclip")] == pytest.approx(
            global_norm(list(pre[s].values())), rel=1e-5
        )
        assert scalars[(s, "grad_clip_limit")] == 0.01
        applied = [cap.grad(s, n) for n in CHAIN_NAMES]
        assert r["grad_norm"] == pytest.approx(global_norm(applied), rel=1e-5)
        assert r["grad_norm"] < scalars[(s, "grad_norm_preclip")]
        assert_stats_match(grads[(s, "2.weight")], pre[s]["2.weight"], stored_float32=True)


def test_an_infinite_limit_only_measures(tmp_path: Path) -> None:
    """``clip_grad_norm_(params, inf)`` (the Hugging Face Trainer's way to measure) is no clip."""
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path):
        for _ in range(3):
            opt.zero_grad()
            _backward(model)
            torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            opt.step()
    run = only_run(tmp_path)
    names = {n for _, n in scalar_rows(run)}
    assert "grad_norm_preclip" not in names
    assert "grad_clip_limit" not in names
    for r in _steps(run):
        want = global_norm([cap.grad(r["step"], n) for n in CHAIN_NAMES])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)


def test_clipping_another_models_gradients_is_not_ours(tmp_path: Path) -> None:
    model, other = chain_model(), chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path):
        for _ in range(2):
            opt.zero_grad()
            other.zero_grad()
            _backward(model)
            _backward(other)
            torch.nn.utils.clip_grad_norm_(other.parameters(), 0.1)
            opt.step()
    run = only_run(tmp_path)
    assert "grad_norm_preclip" not in {n for _, n in scalar_rows(run)}
    for r in _steps(run):
        want = global_norm([cap.grad(r["step"], n) for n in CHAIN_NAMES])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)


def test_torch_functions_are_wrapped_only_while_a_recorder_lives(tmp_path: Path) -> None:
    assert torch.nn.utils.clip_grad_norm_ is ORIGINAL_NORM
    model_a, model_b = chain_model(), chain_model()
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1)
    rec_a = Recorder(model_a, opt_a, root=tmp_path)
    rec_b = Recorder(model_b, opt_b, root=tmp_path)
    from torch.nn.utils import clip_grad

    assert torch.nn.utils.clip_grad_norm_ is not ORIGINAL_NORM
    assert clip_grad.clip_grad_norm_ is torch.nn.utils.clip_grad_norm_
    assert torch.nn.utils.clip_grad_value_ is not ORIGINAL_VALUE
    assert clipping.original("clip_grad_norm_") is ORIGINAL_NORM
    rec_a.close()
    assert torch.nn.utils.clip_grad_norm_ is not ORIGINAL_NORM  # rec_b still lives
    rec_b.close()
    assert torch.nn.utils.clip_grad_norm_ is ORIGINAL_NORM
    assert clip_grad.clip_grad_norm_ is ORIGINAL_NORM
    assert torch.nn.utils.clip_grad_value_ is ORIGINAL_VALUE
    rec_c = Recorder(model_a, opt_a, root=tmp_path, watch_clipping=False)
    assert torch.nn.utils.clip_grad_norm_ is ORIGINAL_NORM
    rec_c.close()


def test_the_wrapper_returns_torchs_result_and_keeps_its_errors(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    twin = chain_model()
    twin.load_state_dict(model.state_dict())
    with Recorder(model, opt, root=tmp_path):
        torch.manual_seed(1)
        _backward(model)
        torch.manual_seed(1)
        _backward(twin)
        ours = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3, norm_type=1.0)
        theirs = ORIGINAL_NORM(list(twin.parameters()), 0.3, norm_type=1.0)
        assert torch.equal(ours, theirs)
        for p, q in zip(model.parameters(), twin.parameters(), strict=True):
            assert torch.equal(p.grad, q.grad)  # type: ignore[arg-type]
        first = next(model.parameters())
        assert first.grad is not None
        first.grad[0, 0] = float("nan")
        with pytest.raises(RuntimeError, match="non-finite"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
        opt.step()


def test_scaler_unscale_then_clip_records_unscaled_pre_clip_statistics(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    pre: list[dict[str, torch.Tensor]] = []
    with Recorder(model, opt, root=tmp_path, scaler=scaler):
        for _ in range(3):
            opt.zero_grad()
            x, y = torch.randn(12, 6), torch.randn(12, 3)
            torch.autograd.backward(scaler.scale(torch.nn.functional.mse_loss(model(x), y) * 50))
            scaler.unscale_(opt)
            pre.append(_grads(model))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
    run = only_run(tmp_path)
    scalars, grads = scalar_rows(run), stat_rows(run, "grad")
    for s in range(3):
        assert scalars[(s, "grad_norm_preclip")] == pytest.approx(
            global_norm(list(pre[s].values())), rel=1e-5
        )
        for name in CHAIN_NAMES:
            assert_stats_match(grads[(s, name)], pre[s][name], stored_float32=True)
    assert [r["grad_norm"] for r in _steps(run)] == pytest.approx([0.5] * 3, rel=1e-4)
