"""The Recorder on an accelerate-prepared optimizer (CPU): one step per real optimizer step under
gradient accumulation, and the pre-clip norm of ``Accelerator.clip_grad_norm_`` recorded, checked
against the norm accelerate itself returns."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.state import AcceleratorState, GradientState
from torch.utils.data import DataLoader, Dataset

from gradlog.recorder import Recorder
from tests.integrations.hf_helpers import TinyRegressor, recorded, regression_data, rel
from tests.recorder.helpers import only_run, read_meta

RTOL = 1e-5


@pytest.fixture(autouse=True)
def _fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps process-wide singletons; every test starts from a clean slate."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _train(
    root: Path, max_norm: float, *, accumulation: int = 2, lr: float = 0.05
) -> tuple[Path, list[float], Accelerator]:
    """An accelerate loop with gradient accumulation and clipping, recorded by gradlog; returns
    the run, the norms ``clip_grad_norm_`` returned (one per real optimizer step) and the
    Accelerator."""
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    torch.manual_seed(0)
    model = TinyRegressor()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    data = regression_data(96)
    loader = DataLoader(cast("Dataset[dict[str, torch.Tensor]]", data), batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    assert isinstance(optimizer, AcceleratedOptimizer)
    norms: list[float] = []
    with Recorder(model, optimizer, root=root, name="accelerate") as rec:
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch)["loss"]
                accelerator.backward(loss)
                sync = accelerator.sync_gradients
                if sync:
                    norms.append(float(accelerator.clip_grad_norm_(model.parameters(), max_norm)))
                optimizer.step()  # a no-op while accumulating: no optimizer hook fires
                optimizer.zero_grad()
            if sync:
                rec.log(loss=loss.detach())  # the last micro-batch's loss, at this step
    return only_run(root), norms, accelerator


def test_preclip_norm_of_clip_grad_norm_matches_accelerate(tmp_path: Path) -> None:
    max_norm = 1.5  # between the smallest and the largest norms of this run
    run, norms, _ = _train(tmp_path / "runs", max_norm)
    got = recorded(run)
    steps, scalars = got["steps"], got["scalars"]
    assert len(norms) == 96 // 4 // 2  # one clip per real optimizer step
    assert sorted(steps) == list(range(len(norms)))  # the skipped (accumulating) steps are not rows
    clipped = [n > max_norm for n in norms]
    assert any(clipped), norms  # both kinds of step are exercised
    assert not all(clipped), norms
    worst = 0.0
    for s, ref in enumerate(norms):
        pre = scalars[(s, "grad_norm_preclip")]
        worst = max(worst, rel(pre, ref))
        assert rel(pre, ref) <= RTOL, (s, pre, ref)
        assert rel(got["row_norm"][s], ref) <= RTOL, (s, got["row_norm"][s], ref)
        assert scalars[(s, "grad_clip_limit")] == max_norm
        post = steps[s]["grad_norm"]
        assert post <= max_norm * (1 + RTOL)
        if not clipped[s]:
            assert rel(post, ref) <= RTOL, (s, post, ref)
    print(f"max rel diff (accelerate, max_norm=1.5): {worst:.2e}")
    assert len([1 for _, name in scalars if name == "loss"]) == len(norms)
    assert read_meta(run)["status"] == "finished"


def test_measuring_with_an_infinite_limit_is_not_a_clip(tmp_path: Path) -> None:
    run, norms, _ = _train(tmp_path / "runs", math.inf, accumulation=3)
    got = recorded(run)
    assert len(norms) == 96 // 4 // 3
    assert sorted(got["steps"]) == list(range(len(norms)))
    worst = 0.0
    for s, ref in enumerate(norms):
        norm = got["steps"][s]["grad_norm"]
        worst = max(worst, rel(norm, ref))
        assert rel(norm, ref) <= RTOL, (s, norm, ref)
    print(f"max rel diff (accelerate, max_norm=inf): {worst:.2e}")
    assert not any(name in ("grad_norm_preclip", "grad_clip_limit") for _, name in got["scalars"])
