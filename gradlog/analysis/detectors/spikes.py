"""Spikes: robust z-scores of log10 norms against a rolling median/MAD, grouped into events."""

from __future__ import annotations

import math

import numpy as np

from gradlog.analysis.config import AnalysisConfig
from gradlog.analysis.findings import Finding, Kind, Severity, make
from gradlog.analysis.frames import RunFrames
from gradlog.analysis.registry import detector
from gradlog.analysis.robust import group_events, rolling_spikes, series_spikes


def _spikes(x: np.ndarray, cfg: AnalysisConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        logx = np.where(x > 0, np.log10(x), np.nan)
    return rolling_spikes(
        logx,
        window=cfg.spike_window,
        min_history=cfg.spike_min_history,
        z=cfg.spike_z,
        min_jump=math.log10(cfg.spike_min_ratio),
        min_mad=cfg.spike_min_mad,
    )


def loss_spikes(frames: RunFrames, cfg: AnalysisConfig) -> np.ndarray:
    """Steps where the loss spiked (log scale when positive, else in units of its own MAD)."""
    step, loss = frames.loss(cfg.loss_name)
    if len(loss) == 0:
        return np.empty(0, dtype=np.int64)
    if np.nanmin(np.where(np.isfinite(loss), loss, np.inf)) > 0:
        idx, _, _ = _spikes(loss, cfg)
    else:
        idx, _, _ = rolling_spikes(
            loss,
            window=cfg.spike_window,
            min_history=cfg.spike_min_history,
            z=cfg.spike_z,
            min_jump=0.0,
            min_mad=1e-12,
        )
    out: np.ndarray = step[idx]
    return out


CHUNK_VALUES = 1 << 21
"""Per-tensor series are scanned in chunks of about this many values (bounded temporaries)."""


def tensor_spikes(frames: RunFrames, cfg: AnalysisConfig) -> list[tuple[int, str, float, float]]:
    """(step, tensor, z, decades) of every per-tensor spike, many tensors vectorised at once."""
    series = frames.by_tensor("step", "norm")
    lengths, ends = series.lengths, np.cumsum(series.lengths)
    rows: list[tuple[int, str, float, float]] = []
    first = 0
    while first < len(lengths):
        a = int(ends[first] - lengths[first])
        last = max(first + 1, int(np.searchsorted(ends, a + CHUNK_VALUES, side="right")))
        b = int(ends[last - 1])
        with np.errstate(all="ignore"):
            norms = series.values["norm"][a:b]
            logx = np.where(norms > 0, np.log10(norms), np.nan)
        idx, z, jump = series_spikes(
            logx,
            lengths[first:last],
            window=cfg.spike_window,
            min_history=cfg.spike_min_history,
            z=cfg.spike_z,
            min_jump=math.log10(cfg.spike_min_ratio),
            min_mad=cfg.spike_min_mad,
        )
        which = first + np.searchsorted(ends[first:last] - a, idx, side="right")
        steps = series.values["step"][a:b][idx]
        rows += [
            (int(s), series.names[t], float(zz), float(j))
            for t, s, zz, j in zip(which, steps, z, jump, strict=True)
        ]
        first = last
    return rows


@detector("spikes")
def detect(frames: RunFrames, cfg: AnalysisConfig) -> list[Finding]:
    """Per-tensor and global spike events; the first tensor to spike and the lag to a loss spike."""
    rows: list[tuple[int, str, float, float]] = []  # step, tensor ("" = global), z, decades
    st = frames.steps.sort("step")
    idx, z, jump = _spikes(st["grad_norm"].to_numpy().astype(np.float64), cfg)
    gsteps = st["step"].to_numpy()
    rows += [
        (int(gsteps[i]), "", float(zz), float(j)) for i, zz, j in zip(idx, z, jump, strict=True)
    ]
    rows += tensor_spikes(frames, cfg)
    if not rows:
        return []
    rows.sort(key=lambda r: (r[0], -r[2]))
    order = dict(
        zip(
            frames.run.catalogue["tensor"].to_list(),
            frames.run.catalogue["backward_order"].to_list(),
            strict=True,
        )
    )
    steps_arr = np.array([r[0] for r in rows])
    events = group_events(steps_arr, cfg.spike_gap)
    lsteps = loss_spikes(frames, cfg)
    out: list[Finding] = []
    for a, b in events[: cfg.max_events]:
        ev = rows[a : b + 1]
        tensor_rows = [r for r in ev if r[1]]
        first_step = ev[0][0]
        firsts = [r for r in tensor_rows if r[0] == tensor_rows[0][0]] if tensor_rows else []
        firsts.sort(
            key=lambda r: (order.get(r[1]) if order.get(r[1]) is not None else 1 << 30, -r[2])
        )
        first_tensor = firsts[0][1] if firsts else None
        peak = max(ev, key=lambda r: r[2])
        near = lsteps[np.abs(lsteps - first_step) <= cfg.spike_gap * 4] if len(lsteps) else lsteps
        evidence: dict[str, float | int | str] = {
            "z_max": peak[2],
            "factor_max": 10 ** peak[3],
            "tensors_spiking": len({r[1] for r in tensor_rows}),
            "global_spike": int(any(not r[1] for r in ev)),
        }
        lag_text = ""
        if len(near):
            lag = int(near[np.argmin(np.abs(near - first_step))] - first_step)
            evidence["loss_spike_lag"] = lag
            lag_text = (
                f"; the loss spiked {lag} steps later"
                if lag >= 0
                else f"; the loss spiked {-lag} steps before"
            )
        where = f", first in {first_tensor}" if first_tensor else ""
        # a lone excursion of one tensor that the loss did not feel is a note, not an alarm
        alarm = bool(len(near)) or int(evidence["tensors_spiking"]) >= cfg.spike_min_tensors
        out.append(
            make(
                frames.run_id,
                "spikes",
                Kind.SPIKE,
                Severity.WARNING if alarm else Severity.INFO,
                f"Gradient spike at steps {first_step}-{ev[-1][0]}{where} (up to "
                f"{10 ** peak[3]:.3g}x the rolling median, z={peak[2]:.1f}){lag_text}.",
                "Inspect the batch at that step (outliers, bad labels); add gradient clipping or "
                "lower the learning rate of the first spiking layer; with Adam, consider a larger "
                "eps or lower beta2.",
                tensor=first_tensor,
                steps=(first_step, ev[-1][0]),
                extra=evidence,
            )
        )
    if len(events) > cfg.max_events:
        out.append(
            make(
                frames.run_id,
                "spikes",
                Kind.SPIKE,
                Severity.WARNING,
                f"{len(events) - cfg.max_events} more spike events not listed ({len(events)} in "
                "all).",
                "Frequent spikes usually mean the learning rate is too high; lower it or clip.",
                events=len(events),
            )
        )
    return out
