"""Run phases and the rules built on them: overflowed statistics, ambiguous NaN origins, NaN-loss
GradScaler skips, lone spikes, neutral zero-gradient wording, consistent hints, ranking."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradlog.analysis import AnalysisConfig, load_run
from gradlog.analysis.batch import outcome, ranking
from gradlog.analysis.detectors import dead, exploding, loss, nonfinite, precision, spikes
from gradlog.analysis.findings import Finding, Kind, Severity, reconcile
from gradlog.analysis.frames import DETECTOR_COLUMNS, build_frames
from gradlog.analysis.phases import phases
from gradlog.analysis.result import RunResult
from gradlog.analysis.trend import Convergence
from tests.analysis.synth import FramesOf, as_schema_2, make_run


@pytest.mark.parametrize("version", [2, 3])
def test_float64_norms_beyond_float32_are_not_nonfinite(
    tmp_path: Path, cfg: AnalysisConfig, version: int
) -> None:
    n = 40
    g = np.where(np.arange(n) < 20, 1.0, 1e40)
    run = make_run(tmp_path, "r", {"a": g, "b": g})
    if version == 2:  # stored the global norm as float32, where it reads inf
        as_schema_2(run)
    f = build_frames(load_run(run), DETECTOR_COLUMNS)
    assert np.isfinite(f.steps["grad_norm"].to_numpy()[25]) == (version == 3)
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


def _scaler_run(
    frames_of: FramesOf,
    n: int,
    scale: np.ndarray,
    skipped: np.ndarray,
    bad: dict[str, list[tuple[int, tuple[int, float]]]],
) -> Any:
    """Three tensors (backward order out, mid, in) of norm 0.01 (absmax 1e-3) and a finite
    loss; ``bad[t]`` lists the skipped steps at which t held NaN/Inf, each with its own norm."""
    norms = {t: np.full(n, 0.01) for t in ("in", "mid", "out")}
    nf = {t: np.zeros(n) for t in norms}
    for t, steps in bad.items():
        for s, (count, norm) in steps:
            nf[t][s] = count
            norms[t][s] = norm
    return frames_of(
        norms,
        nonfinite=nf,
        loss=2.0 * np.exp(-np.arange(n) / 1000.0) + 0.5,
        skipped=skipped,
        loss_scale=scale,
    )


def test_routine_gradscaler_probing_is_info(frames_of: FramesOf, cfg: AnalysisConfig) -> None:
    """The scaler's cycle: 32768 for 2000 steps, grow to 65536, the first step there overflows
    (a few Inf elements in the output layer, whose finite values x 65536 reach 60000, at the
    edge of the fp16 range), the scale halves and training goes on."""
    n = 6300
    scale = np.full(n, 32768.0)
    skipped = np.zeros(n, dtype=bool)
    skips = [100, 2101, 4102]
    for s in skips:
        scale[s] = 65536.0
        skipped[s] = True
    edge = 60000 / 65536 * 10  # norm of 100 values whose absmax x 65536 is 60000
    f = _scaler_run(frames_of, n, scale, skipped, {"out": [(s, (3, edge)) for s in skips]})
    assert nonfinite.detect(f, cfg) == []
    (skip,) = [x for x in precision.detect(f, cfg) if "skipped" in x.message]
    assert skip.severity is Severity.INFO
    assert "routine" in skip.message
    assert skip.evidence["skipped_steps"] == 3


def test_gradscaler_skip_of_a_nan_born_in_backward_is_not_routine(
    frames_of: FramesOf, cfg: AnalysisConfig
) -> None:
    """The same cycle, but at step 3000 (scale 32768, which had overflowed at 65536 and been
    halved; no growth since) the loss is finite while mid and in are NaN throughout (a NaN
    born in mid's backward, flowing to the input side) and out stays finite."""
    n = 3500
    scale = np.full(n, 32768.0)
    skipped = np.zeros(n, dtype=bool)
    scale[100], skipped[100] = 65536.0, True  # a routine overflow, as above
    skipped[3000] = True
    scale[3001:] = 16384.0  # halved after the skip
    edge = 60000 / 65536 * 10
    f = _scaler_run(
        frames_of,
        n,
        scale,
        skipped,
        {"out": [(100, (3, edge))], "mid": [(3000, (100, np.nan))], "in": [(3000, (100, np.nan))]},
    )
    (real,) = nonfinite.detect(f, cfg)
    assert real.severity is Severity.WARNING
    assert (real.step_start, real.tensor) == (3000, "mid")
    assert "not to probe its loss scale" in real.message
    assert "gradients of mid, in (2 of 3 recorded tensors, the rest finite)" in real.message
    assert "below the scale's high-water mark 65536" in real.message
    assert real.evidence["loss_scale"] == 32768.0
    # the overflow at step 100 stays routine; the NaN is not counted as probing
    (skip,) = [x for x in precision.detect(f, cfg) if "skipped" in x.message]
    assert (skip.severity, skip.evidence["skipped_steps"]) == (Severity.INFO, 1)
    assert phases(f, cfg).healthy_end is None  # skipped: the weights stayed clean


def test_the_amp_samples_overflows_are_told_apart_by_their_fp16_headroom(
    cfg: AnalysisConfig,
) -> None:
    """The committed amp sample (a healthy fp16 run): its 5 skips are overflows. Step 126 came
    at 524288, below the high-water mark 1048576, yet the finite values of out.weight x scale
    reached 63648, at the edge of fp16 (65504): still routine."""
    from pathlib import Path

    from gradlog.analysis.frames import DETECTOR_COLUMNS, build_frames
    from gradlog.analysis.loading import load_run
    from gradlog.analysis.phases import scaler_skips

    logs = Path(__file__).resolve().parents[2] / "sample_runs" / "logs"
    f = build_frames(load_run(logs / "amp" / "amp"), DETECTOR_COLUMNS)
    skips = {k.step: k for k in scaler_skips(f, cfg)}
    assert sorted(skips) == [79, 122, 126, 167, 188]
    assert not any(k.fault for k in skips.values())
    k = skips[126]
    assert (k.probing, k.overflow, k.tensors) == (False, True, ["out.weight"])
    assert k.peak is not None
    assert 60000 < k.peak <= 65504


def test_a_skip_is_a_fault_only_without_probing_and_without_fp16_headroom() -> None:
    from gradlog.analysis.phases import ScalerSkip

    def skip(scale: float, grew: bool, peak: float | None) -> ScalerSkip:
        return ScalerSkip(
            step=5,
            scale=scale,
            high_water=65536.0,
            initial=False,
            consecutive=1,
            grew=grew,
            tensors=["w"],
            recorded=2,
            peak=peak,
        )

    assert not skip(65536.0, grew=False, peak=0.0).fault  # at the high-water mark: a probe
    assert not skip(32768.0, grew=True, peak=0.0).fault  # regrown, below the peak: a probe
    assert not skip(32768.0, grew=False, peak=30000.0).fault  # at the fp16 edge: an overflow
    assert skip(32768.0, grew=False, peak=50.0).fault
    assert skip(32768.0, grew=False, peak=0.0).fault
