"""Loops without an optimizer (``Recorder(model, None)`` and ``rec.step()`` after the update),
as in the classic word-language-model example: gradients, parameters before the update and the
update itself, compared with float64 references taken by the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from gradlog.errors import ConfigError
from gradlog.recorder import Recorder, every
from tests.recorder.helpers import (
    assert_stats_match,
    chain_model,
    global_norm,
    only_run,
    read_meta,
    read_rows,
    scalar_rows,
    stat_rows,
)

CHAIN_NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


def _steps(run: Path) -> list[dict[str, Any]]:
    return sorted(read_rows(run, "steps"), key=lambda r: r["step"])


def _snapshot(model: torch.nn.Module, attr: str = "data") -> dict[str, torch.Tensor]:
    out = {}
    for n, p in model.named_parameters():
        t = p.detach() if attr == "data" else p.grad
        if t is not None:
            out[n] = t.detach().clone()
    return out


def test_manual_sgd_with_clipping(tmp_path: Path) -> None:
    model = chain_model()
    lr, clip = 0.5, 0.2
    grads_pre: list[dict[str, torch.Tensor]] = []
    grads_applied: list[dict[str, torch.Tensor]] = []
    before: list[dict[str, torch.Tensor]] = []
    after: list[dict[str, torch.Tensor]] = []
    with Recorder(model, None, root=tmp_path, params=every(2), updates=every(2)) as rec:
        for _ in range(6):
            model.zero_grad()
            x, y = torch.randn(12, 6), torch.randn(12, 3)
            loss = torch.nn.functional.mse_loss(model(x), y) * 30
            torch.autograd.backward(loss)
            grads_pre.append(_snapshot(model, "grad"))
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            grads_applied.append(_snapshot(model, "grad"))
            before.append(_snapshot(model))
            for p in model.parameters():  # the update the loop applies by hand
                p.data.add_(p.grad, alpha=-lr)  # type: ignore[arg-type]
            after.append(_snapshot(model))
            rec.step(lr=lr)
            rec.log(loss=loss)
    run = only_run(tmp_path)
    meta = read_meta(run)
    assert meta["optimizer"] is None
    assert meta["name"] == "Sequential-manual"
    assert all(t["in_optimizer"] for t in meta["tensors"])  # every trainable tensor is updated
    grads, params, updates = (stat_rows(run, k) for k in ("grad", "param", "update"))
    scalars = scalar_rows(run)
    assert [r["step"] for r in _steps(run)] == list(range(6))
    assert {s for s, _ in params} == {s for s, _ in updates} == {0, 2, 4}
    for s in range(6):
        for name in CHAIN_NAMES:
            assert_stats_match(grads[(s, name)], grads_pre[s][name], stored_float32=True)
            if s % 2 == 0:
                assert_stats_match(params[(s, name)], before[s][name], stored_float32=True)
                upd = after[s][name] - before[s][name]
                assert_stats_match(updates[(s, name)], upd, stored_float32=True)
        assert scalars[(s, "lr/0")] == lr
        assert scalars[(s, "grad_norm_preclip")] == pytest.approx(
            global_norm(list(grads_pre[s].values())), rel=1e-5
        )
    for r in _steps(run):
        want = global_norm(list(grads_applied[r["step"]].values()))
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)


def test_frozen_parameters_without_an_optimizer_are_recorded_as_not_updated(
    tmp_path: Path,
) -> None:
    model = chain_model()
    model[0].weight.requires_grad_(False)
    with Recorder(model, None, root=tmp_path, updates=1) as rec:
        for _ in range(2):
            model.zero_grad()
            model(torch.randn(4, 6)).sum().backward()
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p.sub_(0.1 * p.grad)
            rec.step()
    run = only_run(tmp_path)
    flags = {t["name"]: t["in_optimizer"] for t in read_meta(run)["tensors"]}
    assert flags["0.weight"] is False
    assert all(v for k, v in flags.items() if k != "0.weight")
    assert {n for _, n in stat_rows(run, "update")} == set(CHAIN_NAMES) - {"0.weight"}
    assert all(r["grads_none"] == 0 for r in _steps(run))


def test_manual_mode_misuse_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs a model, an optimizer or both"):
        Recorder(None, None, root=tmp_path)
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(model, opt, root=tmp_path)
    with pytest.raises(ConfigError, match=r"Recorder.step\(\) is for loops without an opt"):
        rec.step()
    rec.close()
    manual = Recorder(model, None, root=tmp_path)
    manual.close()
    with pytest.raises(ConfigError, match=r"step\(\) called after close\(\)"):
        manual.step()
