"""The labels of the realistic scenarios, checked against the training itself (independently of
gradlog's analysis): where the NaN was born, when the float64 explosion started."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from sample_runs.scenarios import amp_nan, float64_explode, gpt_char_nan
from sample_runs.scenarios._common import batches, seed_all
from sample_runs.scenarios.exploding_sgd import _diabetes

LOGS = Path(__file__).resolve().parents[2] / "sample_runs" / "logs"


def _tensors(name: str) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    (run,) = [p.parent for p in (LOGS / name).glob("*/meta.json")]
    table = pq.read_table(run / "tensors").to_pandas()
    grad = table[table["kind"] == "grad"]
    meta = json.loads((run / "meta.json").read_text())
    order = {t["name"]: t["backward_order"] for t in meta["tensors"]}
    cols = {c: grad[c].to_numpy() for c in ("step", "nonfinite", "absmax", "sumsq")}
    cols["tensor"] = grad["tensor"].astype(str).to_numpy()
    return cols, order


def test_gpt_nan_is_born_in_the_mlp_before_clipping() -> None:
    g, order = _tensors("gpt_char_nan")
    first = int(g["step"][g["nonfinite"] > 0].min())
    assert first == gpt_char_nan.NAN_STEP
    bad = set(g["tensor"][(g["step"] == first) & (g["nonfinite"] > 0)])
    fine = set(g["tensor"][(g["step"] == first) & (g["nonfinite"] == 0)])
    assert "h.0.mlp.c_proj.weight" in fine  # output side of the NaN: recorded before clipping
    assert min(bad, key=lambda t: order[t]) in {"h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias"}


def test_amp_nan_step_is_a_skip_with_a_nan_loss() -> None:
    (run,) = [p.parent for p in (LOGS / "amp_nan").glob("*/meta.json")]
    steps = pq.read_table(run / "steps").to_pandas().set_index("step")
    scalars = pq.read_table(run / "scalars").to_pandas()
    loss = scalars[scalars["name"] == "loss"].set_index("step")["value"]
    assert bool(steps.loc[amp_nan.NAN_STEP, "skipped"])
    assert np.isnan(loss[amp_nan.NAN_STEP])
    assert np.isfinite(loss.drop(amp_nan.NAN_STEP)).all()


def test_float64_explosion_onset_and_finite_gradients() -> None:
    cfg = float64_explode.CONFIG
    gen = seed_all(cfg["seed"])
    x, y = (t.double() for t in _diabetes())
    model = float64_explode.model()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    peak = []
    for idx in batches(len(x), cfg["batch_size"], cfg["steps"], gen):
        torch.autograd.backward(nn.functional.mse_loss(model(x[idx]), y[idx]))
        peak.append(
            max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None)
        )
        opt.step()
        opt.zero_grad()
    peak_arr = np.array(peak)
    early = np.median(peak_arr[: len(peak) // 10])  # the first tenth of the run
    stays = [s for s in range(len(peak)) if (peak_arr[s:] > 3 * early).all()]
    assert stays[0] == float64_explode.ONSET
    assert np.isfinite(peak_arr).all()
    assert peak_arr.max() > 1e100  # far beyond float32
    g, _ = _tensors("float64_explode")
    assert (g["nonfinite"] == 0).all()
    assert np.isfinite(g["sumsq"]).any()
    assert g["absmax"].max() > 1e100
