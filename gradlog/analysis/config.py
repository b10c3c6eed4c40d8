"""Typed thresholds of every detector, with documented defaults; overridable from TOML and the CLI.

A TOML file holds the fields at top level or under an ``[analysis]`` table::

    spike_z = 8.0
    update_ratio_high = 0.05
    disabled = ["oscillation"]
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gradlog.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds of the detectors.

    Each field's docstring gives its meaning; the value is the default.
    """

    loss_name: str = "loss"
    """Name of the loss scalar (as passed to Recorder.log)."""
    max_tensor_findings: int = 5
    """At most this many per-tensor findings per detector; the rest are counted in evidence."""
    disabled: tuple[str, ...] = ()
    """Detector names to skip."""

    # exploding
    exploding_growth: float = 100.0
    """Late-window median norm over early-window median norm above this: sustained growth."""
    exploding_abs_norm: float = 1e4
    """A finite gradient norm (global or per tensor) above this is out of range."""
    exploding_onset_factor: float = 3.0
    """An explosion starts at the first step after which the norm stays above this many times
    its early median (the finding's step_start)."""
    window_frac: float = 0.1
    """Early/late windows are this fraction of the recorded steps (at least min_window steps)."""
    min_window: int = 5
    """Smallest early/late window, in recorded steps."""

    # vanishing
    vanishing_ratio: float = 1e-3
    """Input-side over output-side relative gradient norm (|g|/|w|) below this: vanishing."""
    vanishing_persist: float = 0.75
    """...in at least this fraction of the time quarters of the run."""

    # spikes
    spike_window: int = 50
    """Rolling window (steps) of the median/MAD baseline of log10 norms."""
    spike_min_history: int = 10
    """A step needs this many earlier steps in the window to be judged."""
    spike_z: float = 6.0
    """Robust z-score (log10 norm minus rolling median, over 1.4826 * rolling MAD) above this."""
    spike_min_ratio: float = 3.0
    """...and the norm at least this many times its rolling median."""
    spike_min_mad: float = 0.02
    """Floor of the MAD (decades): in a perfectly smooth series not every wiggle is a spike."""
    spike_gap: int = 5
    """Spikes closer than this many steps are one event; a loss spike this close is linked."""
    max_events: int = 20
    """At most this many spike events are reported per run."""
    spike_min_tensors: int = 3
    """A spike event is a warning when the loss spiked with it or at least this many tensors
    spiked; a lone excursion without a loss reaction is info."""

    # dead / frozen
    dying_zero_frac: float = 0.5
    """Late zero fraction of a gradient at or above this ..."""
    dying_increase: float = 0.25
    """... and grown by at least this much since the start: dying units (e.g. ReLUs)."""

    # update ratio
    update_ratio_low: float = 1e-4
    """Median |update|/|param| below this: learning rate too low for the tensor/model."""
    update_ratio_high: float = 1e-2
    """Median |update|/|param| above this: learning rate too high."""
    update_ratio_target: float = 1e-3
    """The ratio a suggested learning rate aims at."""
    update_ratio_margin: float = 1.5
    """The band edges are rules of thumb: a model-level ratio outside the band by less than this
    factor is reported as borderline (info), beyond it as a warning."""

    # precision
    precision_underflow_frac: float = 0.01
    """Share of nonzero gradient values below the fp16 normal range (after loss scaling) above
    this."""
    precision_overflow_frac: float = 1e-6
    """Share of gradient values above the fp16 maximum (after loss scaling) above this."""
    precision_skip_frac: float = 0.05
    """Share of steps skipped by the GradScaler above this."""
    precision_min_loss_scale: float = 1.0
    """A loss scale that falls below this has collapsed."""

    # loss
    divergence_factor: float = 2.0
    """Final loss median above this many times the best rolling median (and above the start)."""
    plateau_window_frac: float = 0.25
    """The trailing fraction of the run examined for a plateau."""
    plateau_rel: float = 0.01
    """Relative loss decrease over the trailing window below this: plateau."""
    plateau_min_progress: float = 0.1
    """A plateau after less than this relative improvement since the start is a warning."""
    oscillation_autocorr: float = -0.8
    """Lag-1 autocorrelation of loss differences below this (white noise gives -0.5)."""
    oscillation_rel_amp: float = 0.05
    """... with median |diff| at least this fraction of the median loss."""
    early_stall_drop: float = 0.25
    """A non-negative loss that has dropped less than this fraction of its initial value ..."""
    early_stall_onset: float = 0.2
    """... and came within that distance of its final level in this first fraction of the run,
    stayed there, and no longer falls at the end (the plateau window's Theil-Sen drop is below
    plateau_rel or not significant), stalled early: a warning."""
    early_stall_peak_ratio: float = 0.1
    """A stalled run whose largest update moved the weights by this fraction of their norm in
    one step points at a too-high learning rate (the hint says so)."""

    # convergence
    projection_steps: int = 0
    """Project the loss this many steps past the end (0: as many steps as recorded)."""
    fit_bin: int = 5
    """The curves are fitted to medians over windows of this many logged steps (at most 400
    windows), so that batch noise and outlier batches do not pull the fit."""
    trend_windows: int = 8
    """Number of windows for Theil-Sen slopes."""
    stall_rel: float = 0.005
    """A window whose relative loss decrease is below this has stalled."""
    max_change_points: int = 3
    """At most this many change points in the loss curve."""

    # hints
    clip_fire_high: float = 0.5
    """Clipping that fires on more than this share of steps is too aggressive."""
    clip_percentile: float = 99.0
    """Suggested clipping threshold: this percentile of the pre-clip global norm."""
    warmup_frac: float = 0.05
    """The first fraction of steps (at least min_window) examined for early instability."""
    warmup_norm_factor: float = 10.0
    """Early max global norm above this many times the later median: warmup recommended."""
    adam_eps_ratio: float = 0.1
    """Adam eps at least this fraction of a tensor's gradient RMS: eps dominates the update."""
    wd_growth: float = 1.5
    """Parameter norm grown by this factor without weight decay: suggest weight decay."""
    wd_shrink: float = 0.5
    """Parameter norm shrunk to this fraction with weight decay: weight decay too strong."""
    gns_min_steps: int = 10
    """Steps with small- and large-batch norms needed for the gradient noise scale."""
    sweep_min_runs: int = 3
    """Comparable runs with distinct values of one hyperparameter that make a sweep."""
    sweep_fit_min_values: int = 4
    """Distinct values needed to fit a quadratic (3 parameters: with 3 values it passes through
    every point, R^2 = 1 whatever the data); with fewer the best observed value is reported."""
    sweep_min_r2: float = 0.5
    """Adjusted R^2 the quadratic needs before its vertex is offered as the optimum."""
    run_keys: tuple[str, ...] = (
        "seed",
        "run",
        "name",
        "run_name",
        "run_id",
        "id",
        "tags",
        "notes",
        "root",
        "output_dir",
        "out_dir",
        "log_dir",
        "save_dir",
        "timestamp",
        "date",
    )
    """Config keys that name or replicate a run rather than set up its training (also any key
    ending in ``seed``): runs that differ only in these and one hyperparameter are comparable."""
    outlier_factor: float = 10.0
    """A run whose final loss is at least this many times that of a comparable run ..."""
    outlier_min_gap: float = 0.25
    """... and above it by at least this fraction of its own initial loss fell behind (warning)."""
    outlier_spread: float = 5.0
    """... or whose final loss is above the comparable runs' median by more than this many
    robust spreads (1.4826 x MAD of their final losses, at least outlier_min_spread of the
    median) and by outlier_min_gap of its initial loss: works for cross-entropy, where 10x
    never happens."""
    outlier_min_spread: float = 0.02
    """Floor of the spread, as a fraction of the comparable runs' median final loss."""
    lr_symptom_spike_share: float = 0.02
    """Loss spikes in at least this share of logged steps are a too-high-lr symptom."""

    def replace(self, **overrides: Any) -> AnalysisConfig:
        """A copy with ``overrides`` applied and type-checked (unknown names are refused)."""
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise ConfigError(f"unknown analysis setting {key!r}; allowed: {allowed}")
            clean[key] = _coerce(key, getattr(self, key), value)
        return dataclasses.replace(self, **clean)

    @classmethod
    def from_toml(cls, path: str | Path) -> AnalysisConfig:
        """Defaults overridden by the settings in the TOML file ``path``."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
        section = data.get("analysis", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {p}: [analysis] must be a table")
        return cls().replace(**section)

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in fields(self)
        }


def _coerce(key: str, default: Any, value: Any) -> Any:
    """``value`` as the type of ``default``, or a ConfigError naming the expected type."""
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{key} must be a list of names, got {value!r}")
    if isinstance(default, bool):  # pragma: no cover - no bool settings yet
        raise ConfigError(f"{key} cannot be set")
    try:
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            out: Any = int(value)
            if out < 0:
                raise ValueError
            return out
        if isinstance(default, float):
            out = float(value)
            if math.isnan(out):
                raise ValueError
            return out
    except (TypeError, ValueError):
        kind = "a non-negative integer" if isinstance(default, int) else "a number"
        raise ConfigError(f"{key} must be {kind}, got {value!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value
