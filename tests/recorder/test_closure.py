"""``optimizer.step(closure)``: the recorded gradients are the ones the step applies (those of
the closure's first evaluation), for SGD, Adam and LBFGS; parameters and updates stay exact.
The references are taken inside the closures themselves, in float64."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from gradlog.recorder import Recorder
from tests.recorder.helpers import (
    assert_stats_match,
    chain_model,
    global_norm,
    only_run,
    read_rows,
    scalar_rows,
    stat_rows,
)

CHAIN_NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


def _steps(run: Path) -> list[dict[str, Any]]:
    return sorted(read_rows(run, "steps"), key=lambda r: r["step"])


class Evaluations:
    """A closure factory that clones the gradients of every evaluation of every step."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer
        self.steps: list[list[dict[str, torch.Tensor]]] = []
        gen = torch.Generator().manual_seed(3)
        self.x = torch.randn(16, 6, generator=gen)
        self.y = torch.randn(16, 3, generator=gen)

    def closure(self, clip: float | None = None) -> Callable[[], float]:
        evals: list[dict[str, torch.Tensor]] = []
        self.steps.append(evals)

        def closure() -> float:  # torch's annotation; the optimizers return the tensor as is
            self.optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(self.model(self.x), self.y)
            torch.autograd.backward(loss)
            evals.append(
                {
                    n: p.grad.detach().clone()
                    for n, p in self.model.named_parameters()
                    if p.grad is not None
                }
            )
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            return loss  # type: ignore[return-value]

        return closure

    def first(self, step: int) -> dict[str, torch.Tensor]:
        return self.steps[step][0]


def test_the_issue_repro_linear_sgd_with_a_closure(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    true: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        torch.autograd.backward(loss)
        true.append(global_norm([p.grad for p in model.parameters() if p.grad is not None]))
        return loss

    with Recorder(model, opt, root=tmp_path):
        for _ in range(5):
            opt.step(closure)
    got = [r["grad_norm"] for r in _steps(only_run(tmp_path))]
    assert len(got) == 5
    assert got == pytest.approx(true, rel=1e-5)  # step 0 included: not the previous step's


@pytest.mark.parametrize("how", ["positional", "keyword"])
@pytest.mark.parametrize("opt_class", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_closure_steps_record_the_applied_gradients_params_and_updates(
    tmp_path: Path, how: str, opt_class: type[torch.optim.Optimizer]
) -> None:
    model = chain_model()
    opt = opt_class(model.parameters(), lr=0.01)  # type: ignore[call-arg]
    ev = Evaluations(model, opt)
    before: list[dict[str, torch.Tensor]] = []
    after: list[dict[str, torch.Tensor]] = []
    with Recorder(model, opt, root=tmp_path, params=1, updates=1, hists=False):
        for _ in range(4):
            before.append({n: p.detach().clone() for n, p in model.named_parameters()})
            closure = ev.closure()
            if how == "positional":
                opt.step(closure)
            else:
                opt.step(closure=closure)
            after.append({n: p.detach().clone() for n, p in model.named_parameters()})
    run = only_run(tmp_path)
    grads, params, updates = (stat_rows(run, k) for k in ("grad", "param", "update"))
    assert len(grads) == len(params) == len(updates) == 4 * len(CHAIN_NAMES)
    for step in range(4):
        assert len(ev.steps[step]) == 1  # these optimizers evaluate the closure once
        for name in CHAIN_NAMES:
            assert_stats_match(grads[(step, name)], ev.first(step)[name], stored_float32=True)
            assert_stats_match(params[(step, name)], before[step][name], stored_float32=True)
            upd = after[step][name] - before[step][name]
            assert_stats_match(updates[(step, name)], upd, stored_float32=True)
    for r in _steps(run):
        want = global_norm(list(ev.first(r["step"]).values()))
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)


def test_lbfgs_records_the_first_evaluation_and_the_whole_update(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    ev = Evaluations(model, opt)
    before: list[dict[str, torch.Tensor]] = []
    after: list[dict[str, torch.Tensor]] = []
    with Recorder(model, opt, root=tmp_path, params=1, updates=1) as rec:
        for _ in range(3):
            before.append({n: p.detach().clone() for n, p in model.named_parameters()})
            loss = opt.step(ev.closure())  # type: ignore[no-untyped-call]
            rec.log(loss=loss)
            after.append({n: p.detach().clone() for n, p in model.named_parameters()})
    assert all(len(e) > 1 for e in ev.steps)  # LBFGS really re-evaluated its closure
    run = only_run(tmp_path)
    grads, params, updates = (stat_rows(run, k) for k in ("grad", "param", "update"))
    assert {s for s, _ in grads} == {0, 1, 2}
    for step in range(3):
        for name in CHAIN_NAMES:
            assert_stats_match(grads[(step, name)], ev.first(step)[name], stored_float32=True)
            assert_stats_match(params[(step, name)], before[step][name], stored_float32=True)
            upd = after[step][name] - before[step][name]  # all of the step's iterations
            assert_stats_match(updates[(step, name)], upd, stored_float32=True)
    norms = [r["grad_norm"] for r in _steps(run)]
    assert norms == pytest.approx([global_norm(list(ev.first(s).values())) for s in range(3)])


def test_clipping_inside_a_closure_records_pre_and_post_clip(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ev = Evaluations(model, opt)
    post: list[float] = []
    with Recorder(model, opt, root=tmp_path):
        for _ in range(3):
            opt.step(ev.closure(clip=0.05))
            post.append(global_norm([p.grad for p in model.parameters() if p.grad is not None]))
    run = only_run(tmp_path)
    scalars = scalar_rows(run)
    grads = stat_rows(run, "grad")
    for r in _steps(run):
        s = r["step"]
        pre = global_norm(list(ev.first(s).values()))
        assert pre > 0.05  # the test really clips
        assert scalars[(s, "grad_norm_preclip")] == pytest.approx(pre, rel=1e-5)
        assert scalars[(s, "grad_clip_limit")] == 0.05
        assert r["grad_norm"] == pytest.approx(post[s], rel=1e-5)
        assert r["grad_norm"] == pytest.approx(0.05, rel=1e-4)
        for name in CHAIN_NAMES:  # the per-tensor rows are of the gradients before the clip
            assert_stats_match(grads[(s, name)], ev.first(s)[name], stored_float32=True)


class _NoClosureCall(torch.optim.SGD):
    """An optimizer that accepts a closure but never calls it (the recorder must cope)."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


def test_an_optimizer_that_ignores_its_closure_still_gets_its_gradients_recorded(
    tmp_path: Path,
) -> None:
    model = chain_model()
    opt = _NoClosureCall(model.parameters(), lr=0.01)
    ev = Evaluations(model, opt)
    with Recorder(model, opt, root=tmp_path, params=1, updates=1):
        for _ in range(2):
            ev.closure()()  # gradients computed outside the step
            opt.step(lambda: None)
    run = only_run(tmp_path)
    grads = stat_rows(run, "grad")
    for step in range(2):
        for name in CHAIN_NAMES:
            assert_stats_match(grads[(step, name)], ev.first(step)[name], stored_float32=True)
    # the parameters had already moved when the step was seen: neither they nor the update
    assert stat_rows(run, "param") == {}
    assert stat_rows(run, "update") == {}
