"""The Recorder in-process on CPU: what lands in the Parquet tables and meta.json is compared
with statistics computed independently (float64 numpy) from gradients and parameters that the
tests capture themselves, through their own optimizer hooks registered before the recorder's."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from gradlog.errors import ConfigError, GradlogWarning
from gradlog.recorder import Recorder, every, kernel
from gradlog.schema import HIST_BINS, SCHEMA_VERSION, TABLES, arrow_schema, polars_schema
from tests.recorder.helpers import (
    Capture,
    assert_stats_match,
    chain_model,
    global_norm,
    only_run,
    part_files,
    read_meta,
    read_rows,
    reference_hist,
    reference_stats,
    scalar_rows,
    stat_rows,
)

CHAIN_NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


def _batch(n: int = 12, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 6, dtype=dtype), torch.randn(n, 3, dtype=dtype)


def _loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(model(x).float(), y.float())


def _steps(run: Path) -> list[dict[str, Any]]:
    return sorted(read_rows(run, "steps"), key=lambda r: r["step"])


# ----------------------------------------------------------------------------- the main path
def test_one_line_api_records_every_statistic(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    cap = Capture(model, opt)
    losses: dict[int, float] = {}
    config = {"lr": 0.05, "batch": 12, "arch": "mlp"}
    with Recorder(
        model,
        opt,
        root=tmp_path,
        name="main path",
        config=config,
        params=every(2),
        updates=every(2),
        hists=every(3),
    ) as rec:
        assert rec.last_step == -1
        for step in range(7):
            x, y = _batch()
            opt.zero_grad()
            loss = _loss(model, x, y)
            torch.autograd.backward(loss)
            opt.step()
            assert rec.last_step == step
            rec.log(loss=loss, acc=0.5 + step, count=step, np_value=np.float32(2.5))
            losses[step] = loss.item()
    run = only_run(tmp_path)
    n = 7
    assert len(cap.grads) == n

    # steps: one row per optimizer.step(), in order, with the global norm of what it saw.
    steps = _steps(run)
    assert [r["step"] for r in steps] == list(range(n))
    for r in steps:
        s = r["step"]
        assert r["tensor_stats"] is True
        assert r["grads_none"] == 0
        assert r["skipped"] is None
        assert r["loss_scale"] is None
        want = global_norm([cap.grad(s, name) for name in CHAIN_NAMES])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)
    times = [r["time"] for r in steps]
    assert times == sorted(times)
    meta = read_meta(run)
    assert meta["start_time"] <= times[0] <= times[-1] <= meta["end_time"]

    # grads: every step, every parameter.
    grads = stat_rows(run, "grad")
    assert set(grads) == {(s, name) for s in range(n) for name in CHAIN_NAMES}
    for (s, name), row in grads.items():
        assert_stats_match(row, cap.grad(s, name), stored_float32=True)

    # params (before the update) and updates (after - before) on their schedule.
    params = stat_rows(run, "param")
    updates = stat_rows(run, "update")
    assert set(params) == {(s, name) for s in (0, 2, 4, 6) for name in CHAIN_NAMES}
    assert set(updates) == set(params)
    for (s, name), row in params.items():
        assert_stats_match(row, cap.before[s][name], stored_float32=True)
    for (s, name), row in updates.items():
        assert_stats_match(row, cap.update(s, name), stored_float32=True)

    # histograms on their schedule.
    hists = read_rows(run, "hists")
    assert {(r["step"], r["tensor"]) for r in hists} == {
        (s, name) for s in (0, 3, 6) for name in CHAIN_NAMES
    }
    for r in hists:
        assert r["kind"] == "grad"
        assert len(r["bins"]) == HIST_BINS
        np.testing.assert_array_equal(r["bins"], reference_hist(cap.grad(r["step"], r["tensor"])))

    # scalars: what was logged after each step, at that step; the learning rate of group 0.
    scalars = scalar_rows(run)
    for s in range(n):
        assert scalars[(s, "loss")] == pytest.approx(losses[s], rel=1e-7)
        assert scalars[(s, "acc")] == 0.5 + s
        assert scalars[(s, "count")] == s
        assert scalars[(s, "np_value")] == 2.5
        assert scalars[(s, "lr/0")] == 0.05
    assert len(scalars) == 5 * n

    # Every part has exactly the declared Arrow schema.
    for table in TABLES:
        files = part_files(run, table)
        assert files, table
        for f in files:
            assert (
                pq.read_schema(f).remove_metadata() == arrow_schema(TABLES[table]).remove_metadata()
            )


def test_parts_read_with_polars_using_the_declared_schema(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path, hists=1, flush_every_steps=2) as rec:
        for _ in range(5):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
            rec.log(loss=1.0)
    run = only_run(tmp_path)
    for name, table in TABLES.items():
        frame = pl.read_parquet(run / name / "rank=0" / "*.parquet")
        frame = frame.cast(pl.Schema(polars_schema(table)))
        assert frame.columns == table.names
        assert frame.height > 0
    assert len(part_files(run, "steps")) == 3  # parts rotate every 2 steps


def test_log_before_the_first_step_and_tensor_values_are_taken_at_log_time(
    tmp_path: Path,
) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path) as rec:
        rec.log(setup=3.0)  # before any step: step 0
        running = torch.zeros(())
        for _ in range(3):
            opt.zero_grad()
            loss = _loss(model, *_batch())
            torch.autograd.backward(loss)
            opt.step()
            running += 1.0
            rec.log(running=running)
        running += 100.0  # changed in place after the last log(): must not change the log
    scalars = scalar_rows(only_run(tmp_path))
    assert scalars[(0, "setup")] == 3.0
    assert [scalars[(s, "running")] for s in range(3)] == [1.0, 2.0, 3.0]


def test_a_cpu_tensor_scalar_is_read_at_log_time_and_an_unreadable_one_is_copied() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from gradlog.recorder.recorder import _scalar

    loss = (torch.tensor([1.5, 2.0], requires_grad=True) * 2).sum()
    assert _scalar("loss", loss) == 7.0  # a float now, without autograd's warning
    with FakeTensorMode():  # item() raises on a fake tensor: copied, as for a device tensor
        fake = torch.ones(1)
        out = _scalar("fake", fake)
        assert isinstance(out, torch.Tensor)
        assert out.shape == (1,)
        assert out is not fake


def test_learning_rate_of_each_group_follows_the_scheduler(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": [*model[2].parameters(), *model[4].parameters()], "lr": 0.01},
        ]
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path):
        for _ in range(5):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
            sched.step()
    scalars = scalar_rows(only_run(tmp_path))
    for s in range(5):
        assert scalars[(s, "lr/0")] == cap.lrs[s][0] == 0.1 * 0.5 ** (s // 2)
        assert scalars[(s, "lr/1")] == cap.lrs[s][1] == 0.01 * 0.5 ** (s // 2)


def test_tensor_learning_rate_is_recorded_as_it_was_at_the_step(tmp_path: Path) -> None:
    model = chain_model()
    lr = torch.tensor(0.1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with Recorder(model, opt, root=tmp_path):
        for _ in range(3):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
            opt.param_groups[0]["lr"].mul_(0.5)  # an in-place schedule of a tensor lr
    scalars = scalar_rows(only_run(tmp_path))
    assert [scalars[(s, "lr/0")] for s in range(3)] == pytest.approx([0.1, 0.05, 0.025])


def test_grad_schedule_selects_tensor_rows_but_every_step_has_a_row(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path, grads=every(2), params=False, updates=False):
        for _ in range(5):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
    run = only_run(tmp_path)
    steps = _steps(run)
    assert [r["tensor_stats"] for r in steps] == [True, False, True, False, True]
    for r in steps:  # the global norm is cheap and kept on every step
        want = global_norm([cap.grad(r["step"], n) for n in CHAIN_NAMES])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)
    assert {s for s, _ in stat_rows(run, "grad")} == {0, 2, 4}
    assert stat_rows(run, "param") == {}
    assert stat_rows(run, "update") == {}


def test_gradient_accumulation_records_one_step_with_the_accumulated_gradient(
    tmp_path: Path,
) -> None:
    model = chain_model()
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    k = 3
    expected: list[dict[str, torch.Tensor]] = []
    with Recorder(model, opt, root=tmp_path):
        for _ in range(2):
            opt.zero_grad()
            batches = [_batch(4) for _ in range(k)]
            # The reference: the sum of the micro-batch gradients, each from autograd.grad.
            total = {n: torch.zeros_like(p) for n, p in params.items()}
            for x, y in batches:
                gs = torch.autograd.grad(_loss(model, x, y) / k, list(params.values()))
                for n, g in zip(params, gs, strict=True):
                    total[n] += g
            expected.append(total)
            for x, y in batches:
                torch.autograd.backward(_loss(model, x, y) / k)
            opt.step()
    run = only_run(tmp_path)
    assert [r["step"] for r in _steps(run)] == [0, 1]
    grads = stat_rows(run, "grad")
    assert len(grads) == 2 * len(CHAIN_NAMES)
    for (s, name), row in grads.items():
        assert_stats_match(row, expected[s][name], stored_float32=True)


class _Mixed(torch.nn.Module):
    """A frozen stem, an unused branch, a trunk and a head the optimizer does not hold."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Linear(6, 8)
        self.unused = torch.nn.Linear(8, 8)
        self.trunk = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 3)
        self.stem.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.relu(self.trunk(torch.relu(self.stem(x)))))
        return out


def test_frozen_unused_and_optimizer_less_parameters(tmp_path: Path) -> None:
    model = _Mixed()
    in_opt = [*model.stem.parameters(), *model.unused.parameters(), *model.trunk.parameters()]
    opt = torch.optim.SGD(in_opt, lr=0.1)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path, updates=True, params=True):
        for _ in range(3):
            opt.zero_grad()
            model.head.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
    run = only_run(tmp_path)
    catalogue = {t["name"]: t for t in read_meta(run)["tensors"]}
    assert list(catalogue) == [
        "stem.weight",
        "stem.bias",
        "unused.weight",
        "unused.bias",
        "trunk.weight",
        "trunk.bias",
        "head.weight",
        "head.bias",
    ]
    for name, t in catalogue.items():
        assert t["requires_grad"] is (not name.startswith("stem"))
        assert t["in_optimizer"] is (not name.startswith("head"))
        assert t["module_type"] == "Linear"
    assert catalogue["unused.weight"]["backward_order"] is None
    assert catalogue["stem.weight"]["backward_order"] is None

    steps = _steps(run)
    # The unused branch requires grad and is in the optimizer but never got one; frozen
    # parameters are not counted.
    assert [r["grads_none"] for r in steps] == [2, 2, 2]
    for r in steps:  # the norm of what the optimizer saw: the head is not in it
        want = global_norm([cap.grad(r["step"], n) for n in ("trunk.weight", "trunk.bias")])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)
    grads = stat_rows(run, "grad")
    assert {n for _, n in grads} == {"trunk.weight", "trunk.bias", "head.weight", "head.bias"}
    for (s, name), row in grads.items():
        assert_stats_match(row, cap.grad(s, name), stored_float32=True)
    # Parameter statistics cover every parameter; updates only what the optimizer holds.
    assert {n for _, n in stat_rows(run, "param")} == set(catalogue)
    updates = stat_rows(run, "update")
    assert {n for _, n in updates} == {n for n, t in catalogue.items() if t["in_optimizer"]}
    for (s, name), row in updates.items():
        assert_stats_match(row, cap.update(s, name), stored_float32=True)
    assert updates[(0, "stem.weight")]["absmax"] == 0.0  # frozen: no update


@pytest.mark.parametrize("kernels", ["auto", "torch"])
def test_parameter_and_update_statistics_on_their_own_and_shared_steps(
    tmp_path: Path, kernels: str
) -> None:
    """Parameter statistics come from the pass that copies the parameters for the update when
    both are due; rows stay in catalogue order; the copies are reused buffers on CPU."""
    model = _Mixed()
    in_opt = [*model.stem.parameters(), *model.unused.parameters(), *model.trunk.parameters()]
    opt = torch.optim.SGD(in_opt, lr=0.1, momentum=0.9)
    cap = Capture(model, opt)
    buffers: list[list[int]] = []
    with contextlib.ExitStack() as stack:
        if kernels == "torch":
            stack.enter_context(kernel.suspended())
        rec = stack.enter_context(Recorder(model, opt, root=tmp_path, params=2, updates=3))
        for _ in range(7):
            opt.zero_grad()
            model.head.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
            buffers.append([b.data_ptr() for b in rec._snapshot_buffers])
    assert rec._snapshot_buffers == []  # released at close
    assert buffers[0] == buffers[3] == buffers[6] != []  # the same memory at each update step
    run = only_run(tmp_path)
    names = [t["name"] for t in read_meta(run)["tensors"]]
    params = stat_rows(run, "param")
    assert sorted({s for s, _ in params}) == [0, 2, 4, 6]
    for (s, name), row in params.items():
        assert_stats_match(row, cap.before[s][name], stored_float32=True)
    updates = stat_rows(run, "update")
    assert sorted({s for s, _ in updates}) == [0, 3, 6]
    assert {n for _, n in updates} == set(names) - {"head.weight", "head.bias"}
    for (s, name), row in updates.items():
        assert_stats_match(row, cap.update(s, name), stored_float32=True)
    rows = read_rows(run, "tensors")
    for kind in ("param", "update"):  # each step's rows in catalogue order
        for step in {r["step"] for r in rows}:
            order = [r["tensor"] for r in rows if r["kind"] == kind and r["step"] == step]
            assert order == sorted(order, key=names.index)


def test_bf16_parameters(tmp_path: Path) -> None:
    model = chain_model(torch.bfloat16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path, params=True, updates=True, hists=True):
        for _ in range(3):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch(dtype=torch.bfloat16)))
            opt.step()
    run = only_run(tmp_path)
    assert {t["dtype"] for t in read_meta(run)["tensors"]} == {"bfloat16"}
    for kind, ref in (("grad", cap.grad), ("param", None), ("update", cap.update)):
        rows = stat_rows(run, kind)
        assert len(rows) == 3 * len(CHAIN_NAMES)
        for (s, name), row in rows.items():
            t = cap.before[s][name] if ref is None else ref(s, name)
            assert t.dtype == torch.bfloat16
            assert_stats_match(row, t, stored_float32=True)
    for r in read_rows(run, "hists"):
        np.testing.assert_array_equal(r["bins"], reference_hist(cap.grad(r["step"], r["tensor"])))
    for r in _steps(run):
        # The global norm is accumulated and stored in float32 even for bf16 gradients.
        want = global_norm([cap.grad(r["step"], n) for n in CHAIN_NAMES])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)


def test_float64_parameters(tmp_path: Path) -> None:
    model = chain_model(torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path, hists=True):
        opt.zero_grad()
        torch.autograd.backward(_loss(model, *_batch(dtype=torch.float64)))
        opt.step()
    run = only_run(tmp_path)
    for (s, name), row in stat_rows(run, "grad").items():
        assert_stats_match(row, cap.grad(s, name), stored_float32=True)
    for r in read_rows(run, "hists"):
        np.testing.assert_array_equal(r["bins"], reference_hist(cap.grad(r["step"], r["tensor"])))


def test_float64_gradients_beyond_the_float32_range_are_stored_finite(tmp_path: Path) -> None:
    # Gradients of 1e40-1e60: float32 cannot hold them; every stored sum, sum of squares and
    # absmax is the float64 value (schema 3), none reads inf, and nothing is counted non-finite.
    model = chain_model(torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cap = Capture(model, opt)
    gen = torch.Generator().manual_seed(0)
    with Recorder(model, opt, root=tmp_path):
        for scale in (1e40, 1e60):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, dtype=torch.float64, generator=gen) * scale
            opt.step()
    run = only_run(tmp_path)
    rows = stat_rows(run, "grad")
    assert len(rows) == 2 * len(CHAIN_NAMES)
    for (s, name), row in rows.items():
        ref = reference_stats(cap.grad(s, name))
        assert ref["absmax"] > 3.5e38  # float32's largest is 3.4e38
        assert row["nonfinite"] == 0
        for col in ("sum", "sumsq", "absmax"):
            assert np.isfinite(row[col]), (col, row[col])
            assert row[col] == pytest.approx(ref[col], rel=1e-6), col


def test_tied_weights_are_catalogued_once_and_model_none_names_by_optimizer(
    tmp_path: Path,
) -> None:
    emb = torch.nn.Embedding(5, 4)
    out = torch.nn.Linear(4, 5, bias=False)
    out.weight = emb.weight
    model = torch.nn.Sequential(emb, out)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path / "tied"):
        pass
    names = [t["name"] for t in read_meta(only_run(tmp_path / "tied"))["tensors"]]
    assert names == ["0.weight"]

    w = torch.nn.Parameter(torch.randn(3))
    opt2 = torch.optim.SGD([w], lr=0.1)
    with Recorder(None, opt2, root=tmp_path / "none", name="no model"):
        w.grad = torch.tensor([1.0, -2.0, 0.0])
        opt2.step()
    run = only_run(tmp_path / "none")
    assert [t["name"] for t in read_meta(run)["tensors"]] == ["optimizer.group0.param0"]
    row = stat_rows(run, "grad")[(0, "optimizer.group0.param0")]
    assert_stats_match(row, torch.tensor([1.0, -2.0, 0.0]), stored_float32=True)


# ----------------------------------------------------------------------------- AMP
def test_amp_grad_scaler_records_unscaled_grads_skips_and_loss_scale(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    unscaled: list[dict[str, torch.Tensor]] = []
    scales: list[float] = []
    with Recorder(model, opt, root=tmp_path, scaler=scaler, updates=True) as rec:
        for step in range(4):
            opt.zero_grad()
            x, y = _batch()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = _loss(model, x, y)
            torch.autograd.backward(scaler.scale(loss))
            if step == 2:  # an overflowing gradient: the scaler must skip this step
                layer = model[2]
                assert isinstance(layer, torch.nn.Linear)
                assert layer.weight.grad is not None
                layer.weight.grad[1, 3] = math.inf
            scale = scaler.get_scale()
            scales.append(scale)
            # The reference: the scaled gradients unscaled here, in float64.
            unscaled.append(
                {
                    n: p.grad.double() / scale
                    for n, p in model.named_parameters()
                    if p.grad is not None
                }
            )
            scaler.step(opt)
            scaler.update()
            rec.log(loss=loss)
        assert "step" in vars(scaler)
    assert "step" not in vars(scaler)  # close() restored the scaler's own method
    assert scales == [2.0**12, 2.0**12, 2.0**12, 2.0**11]
    run = only_run(tmp_path)
    assert read_meta(run)["scaler"] == "GradScaler"
    steps = _steps(run)
    assert [r["step"] for r in steps] == [0, 1, 2, 3]
    assert [r["skipped"] for r in steps] == [False, False, True, False]
    assert [r["loss_scale"] for r in steps] == scales  # the scale each step was taken with
    grads = stat_rows(run, "grad")
    assert len(grads) == 4 * len(CHAIN_NAMES)
    for (s, name), row in grads.items():
        assert_stats_match(row, unscaled[s][name], stored_float32=True)
    assert grads[(2, "2.weight")]["nonfinite"] == 1
    for r in steps:
        if not r["skipped"]:
            want = global_norm(list(unscaled[r["step"]].values()))
            assert r["grad_norm"] == pytest.approx(want, rel=1e-5)
    # The skipped step did not update anything, so it has no update rows.
    assert {s for s, _ in stat_rows(run, "update")} == {0, 1, 3}


def test_fused_optimizer_with_scaler_warns_that_grads_are_scaled(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cpu")
    with pytest.warns(GradlogWarning, match="unscales gradients inside step"):
        rec = Recorder(model, opt, root=tmp_path, scaler=scaler)
    rec.close()


def test_sparse_gradients_are_skipped_with_a_warning(tmp_path: Path) -> None:
    emb = torch.nn.Embedding(10, 4, sparse=True)
    head = torch.nn.Linear(4, 1)
    model = torch.nn.Sequential(emb, head)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cap = Capture(model, opt)

    def train() -> Path:
        with Recorder(model, opt, root=tmp_path) as rec:
            for _ in range(2):
                opt.zero_grad()
                torch.autograd.backward(model(torch.tensor([1, 2, 3])).sum())
                opt.step()
        return rec.run_dir

    with pytest.warns(GradlogWarning, match="sparse gradient of 0.weight is not recorded"):
        run = train()
    grads = stat_rows(run, "grad")
    assert {n for _, n in grads} == {"1.weight", "1.bias"}
    for (s, name), row in grads.items():
        assert_stats_match(row, cap.grad(s, name), stored_float32=True)
    for r in _steps(run):
        assert r["grads_none"] == 0
        want = global_norm([cap.grad(r["step"], n) for n in ("1.weight", "1.bias")])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- torch.compile
def test_compiled_model(tmp_path: Path) -> None:
    model = chain_model()
    compiled = torch.compile(model)
    assert isinstance(compiled, torch.nn.Module)
    opt = torch.optim.SGD(compiled.parameters(), lr=0.1)
    cap = Capture(compiled, opt)
    with Recorder(compiled, opt, root=tmp_path, name="compiled"):
        for _ in range(3):
            opt.zero_grad()
            torch.autograd.backward(_loss(compiled, *_batch()))
            opt.step()
    run = only_run(tmp_path)
    names = [t["name"] for t in read_meta(run)["tensors"]]
    assert names == CHAIN_NAMES  # no '_orig_mod.' prefix
    grads = stat_rows(run, "grad")
    assert {n for _, n in grads} == set(CHAIN_NAMES)
    for (s, name), row in grads.items():
        assert_stats_match(row, cap.grad(s, name), stored_float32=True)


# ----------------------------------------------------------------------------- lifecycle
def test_meta_json(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    config = {"lr": 0.05, "layers": [6, 16, 8, 3], "note": "</script>", "bad": math.nan}
    with Recorder(model, opt, root=tmp_path, name="</script> ünï", config=config) as rec:
        for _ in range(3):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
        run = rec.run_dir
        assert read_meta(run)["status"] == "running"
    meta = read_meta(run)
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["status"] == "finished"
    assert meta["run_id"] == run.name
    assert meta["name"] == "</script> ünï"
    assert meta["end_time"] >= meta["start_time"]
    assert meta["world_size"] == 1
    assert meta["rank"] == 0
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["config"] == {
        "lr": 0.05,
        "layers": [6, 16, 8, 3],
        "note": "</script>",
        "bad": "nan",
    }
    assert meta["optimizer"]["class"] == "SGD"
    (group,) = meta["optimizer"]["param_groups"]
    assert "params" not in group
    assert group["lr"] == 0.05
    assert group["momentum"] == 0.9
    assert group["weight_decay"] == 1e-4
    assert meta["counters"]["steps_recorded"] == 3
    assert meta["counters"]["dropped_steps"] == 0
    assert meta["counters"]["dropped_rows"] == 0
    assert meta["errors"] == []
    assert set(meta["schedules"]) == {"grads", "params", "updates", "hists"}

    catalogue = meta["tensors"]
    assert [t["name"] for t in catalogue] == CHAIN_NAMES
    params = dict(model.named_parameters())
    for depth, t in enumerate(catalogue):
        p = params[t["name"]]
        assert t["shape"] == list(p.shape)
        assert t["numel"] == p.numel()
        assert t["dtype"] == "float32"
        assert t["module_type"] == "Linear"
        assert t["requires_grad"] is True
        assert t["in_optimizer"] is True
        assert t["depth"] == depth
    order = {t["name"]: t["backward_order"] for t in catalogue}
    # Gradients arrive from the output side: the last layer first.
    assert {order["4.weight"], order["4.bias"]} == {0, 1}
    assert {order["2.weight"], order["2.bias"]} == {2, 3}
    assert {order["0.weight"], order["0.bias"]} == {4, 5}


def test_status_crashed_when_the_block_raises(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_then_fail() -> None:
        with Recorder(model, opt, root=tmp_path):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        train_then_fail()
    run = only_run(tmp_path)
    meta = read_meta(run)
    assert meta["status"] == "crashed"
    assert meta["error"] == "ValueError: boom"
    assert [r["step"] for r in _steps(run)] == [0]  # what was recorded before is kept


def test_without_with_and_close_is_idempotent(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = Recorder(model, opt, root=tmp_path)
    for _ in range(2):
        opt.zero_grad()
        torch.autograd.backward(_loss(model, *_batch()))
        opt.step()
    rec.close()
    meta_file = rec.run_dir / "meta.json"
    first = meta_file.read_bytes()
    rec.close()
    rec.close(status="crashed")
    assert meta_file.read_bytes() == first  # nothing rewritten by later calls
    assert read_meta(rec.run_dir)["status"] == "finished"
    # After close the hooks are gone: more steps add nothing.
    opt.zero_grad()
    torch.autograd.backward(_loss(model, *_batch()))
    opt.step()
    assert [r["step"] for r in _steps(rec.run_dir)] == [0, 1]
    with pytest.warns(GradlogWarning, match=r"log\(\) after close\(\): log before closing"):
        rec.log(loss=1.0)  # dropped and counted, never raised


def test_flush_makes_parts_visible_while_running(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path) as rec:
        for _ in range(3):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
        assert part_files(rec.run_dir, "steps") == []  # default rotation: 1000 steps
        rec.flush()
        assert [r["step"] for r in _steps(rec.run_dir)] == [0, 1, 2]
        assert read_meta(rec.run_dir)["counters"]["steps_recorded"] == 3


def test_clip_grad_norm_logs_the_norm_before_clipping(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cap = Capture(model, opt)
    theirs: list[float] = []
    returned: list[float] = []
    with Recorder(model, opt, root=tmp_path) as rec:
        for _ in range(3):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()) * 100)
            # torch's own clip_grad_norm_ on a copy of the model: the norm it returns.
            twin = copy.deepcopy(model)
            for p, q in zip(model.parameters(), twin.parameters(), strict=True):
                q.grad = None if p.grad is None else p.grad.clone()
            theirs.append(float(torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)))
            returned.append(float(rec.clip_grad_norm_(0.5)))
            opt.step()
    run = only_run(tmp_path)
    scalars = scalar_rows(run)
    assert returned == theirs
    for s in range(3):
        assert scalars[(s, "grad_norm_preclip")] == pytest.approx(theirs[s], rel=1e-6)
        assert theirs[s] > 0.5  # the test really clips
    for r in _steps(run):  # grad_norm is what the optimizer saw: after clipping
        assert r["grad_norm"] == pytest.approx(0.5, rel=1e-4)
        want = global_norm([cap.grad(r["step"], n) for n in CHAIN_NAMES])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------- bad input
def _good_args() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = chain_model()
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "resnet"}, r"model must be a torch.nn.Module or None, got str"),
        (
            {"optimizer": object()},
            r"optimizer must be a torch.optim.Optimizer \(or a wrapper exposing one as "
            r"\.optimizer\), got object",
        ),
        ({"config": [1, 2]}, r"config must be a dict of hyperparameters, got list"),
        ({"scaler": 3}, r"scaler must be a torch.amp.GradScaler"),
        ({"flush_every_steps": 0}, r"flush_every_steps must be a positive int, got 0"),
        ({"flush_every_steps": 2.5}, r"flush_every_steps must be a positive int, got 2.5"),
        ({"flush_every_secs": 0}, r"flush_every_secs must be a positive number, got 0"),
        ({"max_queue_bytes": 1024}, r"max_queue_bytes must be an int >= 65536, got 1024"),
        ({"grads": "sometimes"}, r"grads must be a schedule \(step -> bool\), a positive int"),
        ({"hists": -5}, r"hists must be a schedule .*got -5"),
        ({"params": 0}, r"params must be a schedule .*got 0"),
        ({"updates": 1.5}, r"updates must be a schedule .*got 1.5"),
        ({"name": "a\x00b"}, r"run name contains a NUL character"),
        ({"name": 42}, r"run name must be a str, got int"),
        ({"run_id": "../up"}, r"run_id '../up' is not file-name safe"),
    ],
)
def test_bad_constructor_input(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    model, opt = _good_args()
    args: dict[str, Any] = {"model": model, "optimizer": opt, "root": tmp_path / "runs"}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        Recorder(**args)
    assert not any((tmp_path / "runs").glob("*/meta.json"))  # nothing half-created
    assert opt._optimizer_step_pre_hooks == {}  # no hook left behind


def test_odd_log_values_are_converted_or_dropped_never_raised(tmp_path: Path) -> None:
    import decimal
    import fractions

    model, opt = _good_args()
    with Recorder(model, opt, root=tmp_path) as rec:
        with pytest.warns(GradlogWarning, match=r"dropped a scalar passed to log\(\)"):
            rec.log(loss=torch.ones(3))  # several elements: dropped
        rec.log(note="hello", z=1j, none=None, zt=torch.tensor(1j), arr=np.ones(2))
        rec.log(**{"x" * 257: 1.0, "": 2.0})  # names out of range: dropped
        rec.log(ok=torch.tensor([[2.0]]))  # one element of any shape is fine
        rec.log(flag=True, half=np.float16(0.5), dec=decimal.Decimal("0.25"))
        rec.log(frac=fractions.Fraction(3, 4), one=np.array([7.0]), big=10**400, small=-(10**400))
        opt.zero_grad()
        torch.autograd.backward(_loss(model, *_batch()))
        opt.step()  # recording goes on
    run = only_run(tmp_path)
    assert scalar_rows(run) == {
        (0, "ok"): 2.0,
        (0, "flag"): 1.0,
        (0, "half"): 0.5,
        (0, "dec"): 0.25,
        (0, "frac"): 0.75,
        (0, "one"): 7.0,
        (0, "big"): math.inf,
        (0, "small"): -math.inf,
        (0, "lr/0"): 0.1,
    }
    assert read_meta(run)["counters"]["dropped_scalars"] == 8
    assert len(stat_rows(run, "grad")) == len(CHAIN_NAMES)


def test_recorder_import_does_not_import_polars_or_scipy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gradlog.recorder; "
        "print(sorted(m for m in ('polars', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_global_norm_agrees_with_and_without_tensor_statistics(tmp_path: Path) -> None:
    """Steps with gradient statistics derive the global norm from them; the others compute it
    on the device. Both equal torch's norm, and both are NaN once a gradient is NaN."""
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    cap = Capture(model, opt)
    with Recorder(model, opt, root=tmp_path, grads=every(2)) as rec:
        for step in range(6):
            x, y = _batch()
            opt.zero_grad()
            torch.autograd.backward(_loss(model, x, y))
            if step >= 4:  # steps 4 (statistics) and 5 (no statistics) see a NaN gradient
                first = next(iter(model.parameters()))  # 0.weight
                assert first.grad is not None
                first.grad[0, 0] = float("nan")
            opt.step()
            rec.log(loss=1.0)
    steps = _steps(only_run(tmp_path))
    assert [r["tensor_stats"] for r in steps] == [s % 2 == 0 for s in range(6)]
    for r in steps[:4]:
        want = global_norm([cap.grad(r["step"], name) for name in CHAIN_NAMES])
        assert r["grad_norm"] == pytest.approx(want, rel=1e-5)
    for r in steps[4:]:
        assert math.isnan(r["grad_norm"])  # recorded as NaN, not as missing (null)


def test_a_name_logged_twice_in_one_step_keeps_the_last_value(tmp_path: Path) -> None:
    model, opt = _good_args()
    with Recorder(model, opt, root=tmp_path) as rec:
        for step in range(2):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
            rec.log(loss=1.0 + step, acc=0.5)
            rec.log(loss=torch.tensor(10.0 + step))  # a tensor replaces the float
            rec.log(acc=0.75)  # a float replaces the float
    scalars = scalar_rows(only_run(tmp_path))  # fails on any duplicate (step, name)
    assert [scalars[(s, "loss")] for s in range(2)] == [10.0, 11.0]
    assert [scalars[(s, "acc")] for s in range(2)] == [0.75, 0.75]


@pytest.mark.parametrize("close_first", ["a", "b"])
def test_two_recorders_sharing_one_grad_scaler_each_keep_their_skips(
    tmp_path: Path, close_first: str
) -> None:
    models = {k: chain_model() for k in "ab"}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01) for k, m in models.items()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    recs = {k: Recorder(models[k], opts[k], root=tmp_path / k, scaler=scaler) for k in "ab"}

    def step(inject_inf: bool) -> None:
        for k in "ab":
            opts[k].zero_grad()
            torch.autograd.backward(scaler.scale(_loss(models[k], *_batch())))
            if inject_inf:
                first = next(models[k].parameters())
                assert first.grad is not None
                first.grad[0, 0] = math.inf
            scaler.step(opts[k])
        scaler.update()

    step(False)
    recs[close_first].close()
    still = "b" if close_first == "a" else "a"
    step(True)  # skipped by the scaler: the live recorder must still see it
    recs[still].close()
    assert "step" not in vars(scaler)  # every wrapper gone
    skipped = [
        r["skipped"]
        for r in sorted(read_rows(only_run(tmp_path / still), "steps"), key=lambda r: r["step"])
    ]
    assert skipped == [False, True]


def test_schedules_pickle_and_keep_their_meaning() -> None:
    import pickle

    from gradlog.recorder import any_of, first, log_spaced, never

    for sched in (every(3, offset=1), first(4), log_spaced(5), never(), any_of(first(2), every(7))):
        again = pickle.loads(pickle.dumps(sched))
        assert again == sched
        assert repr(again) == repr(sched)
        assert [again(s) for s in range(60)] == [sched(s) for s in range(60)]


def test_start_at_numbers_the_first_step_only_before_it(tmp_path: Path) -> None:
    model = chain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path) as rec:
        with pytest.raises(ConfigError, match="non-negative int"):
            rec.start_at(-1)
        rec.start_at(40)
        for _ in range(2):
            opt.zero_grad()
            torch.autograd.backward(_loss(model, *_batch()))
            opt.step()
            rec.log(loss=1.0)
        with pytest.raises(ConfigError, match=r"start_at\(7\) after step 40 was begun"):
            rec.start_at(7)
    run = only_run(tmp_path)
    assert read_meta(run)["first_step"] == 40
    assert sorted({s for s, _ in stat_rows(run, "grad")}) == [40, 41]
    assert sorted(s for s, name in scalar_rows(run) if name == "loss") == [40, 41]
