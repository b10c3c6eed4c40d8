"""Run phases and the rules built on them: overflowed statistics, ambiguous NaN origins, NaN-loss
GradScaler skips, lone spikes, neutral zero-gradient wording, consistent hints, ranking."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gradlog.analysis import AnalysisConfig
from gradlog.analysis.batch import outcome, ranking
from gradlog.analysis.detectors import dead, exploding, loss, nonfinite, precision, spikes
from gradlog.analysis.findings import Finding, Kind, Severity, reconcile
from gradlog.analysis.phases import phases
from gradlog.analysis.result import RunResult
from gradlog.analysis.trend import Convergence
from tests.analysis.synth import FramesOf


def test_float64_norms_beyond_float32_are_not_nonfinite(
    frames_of: FramesOf, cfg: AnalysisConfig
) -> None:
    n = 40
    g = np.where(np.arange(n) < 20, 1.0, 1e40)  # the stored float32 global norm reads inf
    f = frames_of({"a": g, "b": g})
    assert not np.isfinite(f.steps["grad_norm"].to_numpy()[25])
    assert nonfinite.detect(f, cfg) == []
    assert phases(f, cfg).healthy_end is None
    (glob, *_) = exploding.detect(f, cfg)
    assert glob.tensor is None
    assert glob.evidence["late_median"] == np.sqrt(2) * 1e40  # the tensors' norms, not inf


def test_everything_nonfinite_at_once_is_an_ambiguous_origin(
    frames_of: FramesOf, cfg: AnalysisConfig
) -> None:
    n = 30
    nf = {k: np.where(np.arange(n) >= 12, 5, 0) for k in ("in", "mid", "out")}
    (grad,) = nonfinite.detect(frames_of({k: np.ones(n) for k in nf}, nonfinite=nf), cfg)
    assert (grad.step_start, grad.tensor) == (12, None)
    assert grad.evidence["origin_ambiguous"] == 1
    assert "origin is ambiguous" in grad.message
    assert "in, mid, out" in grad.message.replace("out, mid, in", "in, mid, out")


def test_gradscaler_skip_with_a_nan_loss_is_not_routine(
    frames_of: FramesOf, cfg: AnalysisConfig
) -> None:
    n = 40
    nf = {"w": np.zeros(n), "v": np.zeros(n)}
    nf["w"][[10, 25]] = 3
    nf["v"][[10, 25]] = 3
    lossv = np.linspace(2, 1, n)
    lossv[25] = np.nan  # step 25: a real NaN; step 10: an fp16 overflow (finite loss)
    skipped = np.zeros(n, dtype=bool)
    skipped[[10, 25]] = True
    f = frames_of(
        {"w": np.ones(n), "v": np.ones(n)},
        nonfinite=nf,
        loss=lossv,
        skipped=skipped,
        loss_scale=np.full(n, 1024.0),
    )
    (real,) = nonfinite.detect(f, cfg)
    assert (real.severity, real.step_start) == (Severity.WARNING, 25)
    assert "not because the fp16 loss scale overflowed" in real.message
    assert "at that step: v, w" in real.message or "at that step: w, v" in real.message
    skips = [x for x in precision.detect(f, cfg) if "skipped" in x.message]
    assert [x.evidence["skipped_steps"] for x in skips] == [1]  # only the overflow is routine
    assert phases(f, cfg).healthy_end is None  # the scaler kept the weights clean


def test_a_lone_spike_without_loss_reaction_is_info(
    frames_of: FramesOf, cfg: AnalysisConfig, rng: np.random.Generator
) -> None:
    n = 120
    base = {k: np.exp(rng.normal(0, 0.05, n)) for k in ("a", "b", "c", "d")}
    one = {k: v.copy() for k, v in base.items()}
    one["a"][80] *= 50
    (f1,) = spikes.detect(frames_of(one, loss=np.linspace(2, 1, n)), cfg)
    assert f1.severity is Severity.INFO
    many = {k: v.copy() for k, v in base.items()}
    for series in many.values():
        series[80] *= 50
    found = spikes.detect(frames_of(many, loss=np.linspace(2, 1, n)), cfg)
    assert {x.severity for x in found} == {Severity.WARNING}


def _cat(names: list[str], activation: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "name": t,
            "shape": [10, 10],
            "numel": 100,
            "dtype": "float32",
            "module_type": "Linear",
            "requires_grad": True,
            "in_optimizer": True,
            "depth": i,
            "backward_order": len(names) - 1 - i,
            "activation": activation.get(t),
        }
        for i, t in enumerate(names)
    ]


def test_dying_relu_only_where_a_relu_follows(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    n = 60
    z = np.linspace(0.0, 0.9, n)
    names = ["lstm.weight_hh", "fc.weight", "emb.weight"]
    cat = _cat(names, {"lstm.weight_hh": "", "fc.weight": "relu"})
    f = frames_of({t: np.ones(n) for t in names}, zero_frac=dict.fromkeys(names, z), catalogue=cat)
    by = {x.tensor: x for x in dead.detect(f, cfg) if x.kind is Kind.DEAD}
    assert by["fc.weight"].severity is Severity.WARNING
    assert "relu units it feeds are dying" in by["fc.weight"].message
    for t in ("lstm.weight_hh", "emb.weight"):
        assert by[t].severity is Severity.INFO
        assert "ReLU" not in by[t].hint
        assert "zero gradients" in by[t].message


def test_no_plateau_or_raise_hint_on_a_run_that_went_nonfinite(
    frames_of: FramesOf, cfg: AnalysisConfig
) -> None:
    n = 100
    lossv = np.full(n, 2.0)  # flat: a plateau on a healthy run
    lossv[60:] = np.nan
    nf = {"a": np.where(np.arange(n) >= 60, 1, 0)}
    f = frames_of({"a": np.ones(n)}, loss=lossv, nonfinite=nf)
    assert phases(f, cfg).healthy_end == 60
    assert [x for x in loss.detect(f, cfg) if x.kind is Kind.PLATEAU] == []


def _f(kind: Kind, severity: Severity) -> Finding:
    return Finding("r", "d", kind, severity, None, 0, 1, {}, "m", "h")


def test_reconcile_drops_raise_hints_beside_a_blow_up() -> None:
    low, plateau = _f(Kind.LR_TOO_LOW, Severity.INFO), _f(Kind.PLATEAU, Severity.INFO)
    boom = _f(Kind.EXPLODING, Severity.ERROR)
    assert reconcile([low, plateau, boom]) == [boom]
    mild = _f(Kind.EXPLODING, Severity.WARNING)  # a per-tensor warning alone is no blow-up
    assert reconcile([low, mild]) == [low, mild]


def _result(run_id: str, final: float, last: float, projected: float, failed: bool) -> RunResult:
    c = Convergence(
        model="power",
        fits=[],
        t0=0.0,
        nonnegative=True,
        projected_step=10,
        projected_loss=projected,
        projected_low=0.0,
        projected_high=2 * projected,
        initial_loss=10.0,
        final_loss=final,
        final_step=9,
        stalled_step=None,
        diverged=failed,
        last_finite_loss=last,
        last_finite_step=9,
    )
    findings = [_f(Kind.DIVERGENCE, Severity.ERROR)] if failed else []
    return RunResult(run_id, run_id, "", "finished", 10, False, [], findings, c)


def test_ranking_by_the_loss_reached() -> None:
    healthy = _result("healthy", 6.2, 6.2, 6.0, failed=False)
    exploded = _result("exploded", 9.8, 9.8, 5.1, failed=True)
    slower = _result("slower", 6.5, 6.5, 3.0, failed=False)  # a better projection: no matter
    order = [e.run_id for e in ranking([exploded, slower, healthy])]
    assert order == ["healthy", "slower", "exploded"]
    tie = _result("tie", 6.2, 6.2, 5.0, failed=False)
    assert [e.run_id for e in ranking([healthy, tie])] == ["tie", "healthy"]


def test_a_run_whose_gradients_went_nonfinite_ranks_after_healthy_runs() -> None:
    """Whatever its loss or projection: a run that failed (here: gradients NaN at step 30, loss
    still finite and low, no error finding to go by) comes after every healthy run."""
    healthy = _result("healthy", 6.2, 6.2, 6.0, failed=False)
    worse = _result("worse", 9.0, 9.0, 8.0, failed=False)
    nan_grads = dataclasses.replace(
        _result("nan_grads", 0.1, 0.1, 0.05, failed=False),
        findings=[],
    )
    assert nan_grads.convergence is not None
    nan_grads.convergence = dataclasses.replace(
        nan_grads.convergence,
        final_loss=float("nan"),
        projected_loss=None,
        projected_low=None,
        projected_high=None,
        healthy_end=30,
        health_reason="nonfinite gradients",
        last_healthy_step=29,
        last_healthy_loss=0.5,
    )
    order = ranking([nan_grads, worse, healthy])
    assert [e.run_id for e in order] == ["healthy", "worse", "nan_grads"]
    assert order[-1].outcome == 0.5  # ranked among the failed by its last healthy loss
    assert outcome(nan_grads) == float("inf")
    assert nan_grads.convergence.failure == (
        "diverged at step 30 (gradients non-finite); last healthy loss 0.5 at step 29"
    )
