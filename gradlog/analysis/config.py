"""Typed thresholds of every detector, with documented defaults; overridable from TOML and the CLI.

A TOML file holds the fields at top level or under an ``[analysis]`` table::

    spike_z = 8.0
    update_ratio_high = 0.05
    disabled = ["oscillation"]

Each field declares its type (the annotation) and the values it allows (``_setting``, beside the
default); every value is checked against them when a config is made, so that a bad setting is a
one-line ConfigError naming the key, the value and the allowed range before any detector runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from gradlog.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

T = TypeVar("T")

_SHOWN = 60
"""At most this many characters of a bad value are repeated in an error message."""


@dataclass(frozen=True)
class Allowed:
    """The values a setting allows: numbers between ``lo`` and ``hi`` (None: unbounded; open
    ends exclusive); strings non-empty; names a list of non-empty strings."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def admits(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self, kind: type) -> str:
        """What the setting must be, e.g. ``an integer >= 1`` or ``a number in (0, 1]``."""
        if kind is tuple:
            return "a list of names"
        if kind is str:
            return "a non-empty string"
        noun = "an integer" if kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{noun} in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{noun} {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{noun} {'<' if self.hi_open else '<='} {self.hi:g}"
        return noun if kind is int else "a finite number"


def _setting(
    default: T,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> T:
    """A field with ``default`` that allows the values described by the other arguments."""
    allowed = Allowed(lo, hi, lo_open, hi_open)
    return dataclasses.field(default=default, metadata={"allowed": allowed})


@dataclass(frozen=True)
class AnalysisConfig:
    """Thresholds of the detectors.

    Each field's docstring gives its meaning; the value is the default.
    """

    loss_name: str = _setting("loss")
    """Name of the loss scalar (as passed to Recorder.log)."""
    max_tensor_findings: int = _setting(5, lo=0)
    """At most this many per-tensor findings per detector; the rest are counted in evidence."""
    disabled: tuple[str, ...] = _setting(())
    """Detector names to skip."""

    # exploding
    exploding_growth: float = _setting(100.0, lo=1)
    """Late-window median norm over early-window median norm above this: sustained growth."""
    exploding_abs_norm: float = _setting(1e4, lo=0, lo_open=True)
    """A finite gradient norm (global or per tensor) above this is out of range."""
    exploding_onset_factor: float = _setting(3.0, lo=1)
    """An explosion starts at the first step after which the norm stays above this many times
    its early median (the finding's step_start)."""
    window_frac: float = _setting(0.1, lo=0, hi=1, lo_open=True)
    """Early/late windows are this fraction of the recorded steps (at least min_window steps)."""
    min_window: int = _setting(5, lo=1)
    """Smallest early/late window, in recorded steps."""

    # vanishing
    vanishing_ratio: float = _setting(1e-3, lo=0, lo_open=True)
    """Input-side over output-side relative gradient norm (|g|/|w|) below this: vanishing."""
    vanishing_persist: float = _setting(0.75, lo=0, hi=1)
    """...in at least this fraction of the time quarters of the run."""

    # spikes
    spike_window: int = _setting(50, lo=1)
    """Rolling window (steps) of the median/MAD baseline of log10 norms."""
    spike_min_history: int = _setting(10, lo=1)
    """A step needs this many earlier steps in the window to be judged."""
    spike_z: float = _setting(6.0, lo=0, lo_open=True)
    """Robust z-score (log10 norm minus rolling median, over 1.4826 * rolling MAD) above this."""
    spike_min_ratio: float = _setting(3.0, lo=1)
    """...and the norm at least this many times its rolling median."""
    spike_min_mad: float = _setting(0.02, lo=0, lo_open=True)
    """Floor of the MAD (decades): in a perfectly smooth series not every wiggle is a spike."""
    spike_gap: int = _setting(5, lo=1)
    """Spikes closer than this many steps are one event; a loss spike this close is linked."""
    max_events: int = _setting(20, lo=0)
    """At most this many spike events are reported per run."""
    spike_min_tensors: int = _setting(3, lo=1)
    """A spike event is a warning when the loss spiked with it or at least this many tensors
    spiked; a lone excursion without a loss reaction is info."""

    # dead / frozen
    dying_zero_frac: float = _setting(0.5, lo=0, hi=1)
    """Late zero fraction of a gradient at or above this ..."""
    dying_increase: float = _setting(0.25, lo=0, hi=1)
    """... and grown by at least this much since the start: dying units (e.g. ReLUs)."""

    # update ratio
    update_ratio_low: float = _setting(1e-4, lo=0, lo_open=True)
    """Median |update|/|param| below this: learning rate too low for the tensor/model."""
    update_ratio_high: float = _setting(1e-2, lo=0, lo_open=True)
    """Median |update|/|param| above this: learning rate too high."""
    update_ratio_target: float = _setting(1e-3, lo=0, lo_open=True)
    """The ratio a suggested learning rate aims at."""
    update_ratio_margin: float = _setting(1.5, lo=1)
    """The band edges are rules of thumb: a model-level ratio outside the band by less than this
    factor is reported as borderline (info), beyond it as a warning."""

    # precision
    precision_underflow_frac: float = _setting(0.01, lo=0, hi=1)
    """Share of nonzero gradient values below the fp16 normal range (after loss scaling) above
    this."""
    precision_overflow_frac: float = _setting(1e-6, lo=0, hi=1)
    """Share of gradient values above the fp16 maximum (after loss scaling) above this."""
    precision_skip_frac: float = _setting(0.05, lo=0, hi=1)
    """Share of steps skipped by the GradScaler above this."""
    precision_min_loss_scale: float = _setting(1.0, lo=0, lo_open=True)
    """A loss scale that falls below this has collapsed."""

    # loss
    divergence_factor: float = _setting(2.0, lo=1)
    """Final loss median above this many times the best rolling median (and above the start)."""
    plateau_window_frac: float = _setting(0.25, lo=0, hi=1, lo_open=True)
    """The trailing fraction of the run examined for a plateau."""
    plateau_rel: float = _setting(0.01, lo=0, hi=1)
    """Relative loss decrease over the trailing window below this: plateau."""
    plateau_min_progress: float = _setting(0.1, lo=0, hi=1)
    """A plateau after less than this relative improvement since the start is a warning."""
    oscillation_autocorr: float = _setting(-0.8, lo=-1, hi=1)
    """Lag-1 autocorrelation of loss differences below this (white noise gives -0.5)."""
    oscillation_rel_amp: float = _setting(0.05, lo=0)
    """... with median |diff| at least this fraction of the median loss."""
    early_stall_drop: float = _setting(0.25, lo=0, hi=1)
    """A non-negative loss that has dropped less than this fraction of its initial value ..."""
    early_stall_onset: float = _setting(0.2, lo=0, hi=1, lo_open=True)
    """... and came within that distance of its final level in this first fraction of the run,
    stayed there, and no longer falls at the end (the plateau window's Theil-Sen drop is below
    plateau_rel or not significant), stalled early: a warning."""
    early_stall_peak_ratio: float = _setting(0.1, lo=0)
    """A stalled run whose largest update moved the weights by this fraction of their norm in
    one step points at a too-high learning rate (the hint says so)."""

    # convergence
    projection_steps: int = _setting(0, lo=0)
    """Project the loss this many steps past the end (0: as many steps as recorded)."""
    fit_bin: int = _setting(5, lo=1)
    """The curves are fitted to medians over windows of this many logged steps (at most 400
    windows), so that batch noise and outlier batches do not pull the fit."""
    trend_windows: int = _setting(8, lo=2)
    """Number of windows for Theil-Sen slopes."""
    stall_rel: float = _setting(0.005, lo=0, hi=1)
    """A window whose relative loss decrease is below this has stalled."""
    max_change_points: int = _setting(3, lo=0)
    """At most this many change points in the loss curve."""

    # hints
    clip_fire_high: float = _setting(0.5, lo=0, hi=1)
    """Clipping that fires on more than this share of steps is too aggressive."""
    clip_percentile: float = _setting(99.0, lo=0, hi=100, lo_open=True)
    """Suggested clipping threshold: this percentile of the pre-clip global norm."""
    warmup_frac: float = _setting(0.05, lo=0, hi=1, lo_open=True)
    """The first fraction of steps (at least min_window) examined for early instability."""
    warmup_norm_factor: float = _setting(10.0, lo=1)
    """Early max global norm above this many times the later median: warmup recommended."""
    adam_eps_ratio: float = _setting(0.1, lo=0, lo_open=True)
    """Adam eps at least this fraction of a tensor's gradient RMS: eps dominates the update."""
    wd_growth: float = _setting(1.5, lo=1)
    """Parameter norm grown by this factor without weight decay: suggest weight decay."""
    wd_shrink: float = _setting(0.5, lo=0, hi=1, lo_open=True)
    """Parameter norm shrunk to this fraction with weight decay: weight decay too strong."""
    gns_min_steps: int = _setting(10, lo=1)
    """Steps with small- and large-batch norms needed for the gradient noise scale."""
    sweep_min_runs: int = _setting(3, lo=2)
    """Comparable runs with distinct values of one hyperparameter that make a sweep."""
    sweep_fit_min_values: int = _setting(4, lo=3)
    """Distinct values needed to fit a quadratic (3 parameters: with 3 values it passes through
    every point, R^2 = 1 whatever the data); with fewer the best observed value is reported."""
    sweep_min_r2: float = _setting(0.5, lo=0, hi=1)
    """Adjusted R^2 the quadratic needs before its vertex is offered as the optimum."""
    run_keys: tuple[str, ...] = _setting(
        (
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
    )
    """Config keys that name or replicate a run rather than set up its training (also any key
    ending in ``seed``): runs that differ only in these and one hyperparameter are comparable."""
    outlier_factor: float = _setting(10.0, lo=1)
    """A run whose final loss is at least this many times that of a comparable run ..."""
    outlier_min_gap: float = _setting(0.25, lo=0)
    """... and above it by at least this fraction of its own initial loss fell behind (warning)."""
    outlier_spread: float = _setting(5.0, lo=0, lo_open=True)
    """... or whose final loss is above the comparable runs' median by more than this many
    robust spreads (1.4826 x MAD of their final losses, at least outlier_min_spread of the
    median) and by outlier_min_gap of its initial loss: works for cross-entropy, where 10x
    never happens."""
    outlier_min_spread: float = _setting(0.02, lo=0)
    """Floor of the spread, as a fraction of the comparable runs' median final loss."""
    lr_symptom_spike_share: float = _setting(0.02, lo=0, hi=1)
    """Loss spikes in at least this share of logged steps are a too-high-lr symptom."""

    def __post_init__(self) -> None:
        """Every field checked against its type and range (ints given for floats become floats,
        lists of names tuples)."""
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f, getattr(self, f.name), "", text=False))
        low, high, target = self.update_ratio_low, self.update_ratio_high, self.update_ratio_target
        if not (low < high and low <= target <= high):
            raise ConfigError(
                "update_ratio_low < update_ratio_high with update_ratio_target between them, "
                f"got low {low:g}, target {target:g}, high {high:g}"
            )

    def replace(self, **overrides: Any) -> AnalysisConfig:
        """A copy with ``overrides`` applied and checked (unknown names are refused); strings
        are parsed as the CLI's ``--set`` values are."""
        return self.with_settings(overrides, source="", text=True)

    def with_settings(
        self, overrides: Mapping[str, Any], *, source: str, text: bool
    ) -> AnalysisConfig:
        """A copy with ``overrides`` applied and checked; errors end with ``(from SOURCE)``.

        ``text``: the values are strings typed by a user (``--set``), parsed as the field's type;
        otherwise (TOML) they must have the field's type already."""
        where = f" (from {source})" if source else ""
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in overrides.items():
            f = known.get(key)
            if f is None:
                raise ConfigError(_unknown(key, list(known), where))
            clean[key] = _coerce(f, value, where, text=text and isinstance(value, str))
        try:
            return dataclasses.replace(self, **clean)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{where}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> AnalysisConfig:
        """Defaults overridden by the settings in the TOML file ``path``."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError(f"config file {p} is nested too deeply to read") from None
        section = data.get("analysis", data)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {p}: analysis must be a table, got {_shown(section)}")
        return cls().with_settings(section, source=str(p), text=False)

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in fields(self)
        }


def allowed_values(f: dataclasses.Field[Any]) -> str:
    """What field ``f`` of AnalysisConfig allows, e.g. ``an integer >= 1``."""
    allowed: Allowed = f.metadata.get("allowed", Allowed())
    return allowed.describe(type(f.default))


def _unknown(key: str, known: list[str], where: str) -> str:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if near:
        return f"unknown analysis setting {_shown(key)}{where}; did you mean {near[0]}?"
    return f"unknown analysis setting {_shown(key)}{where}; known: {', '.join(sorted(known))}"


def _shown(value: Any, *, bare: bool = True) -> str:
    """``value`` as the user wrote it (TOML spelling for booleans), cut to a readable length.

    ``bare``: a string that is a plain word or number is shown without quotes (a ``--set``
    value); others are quoted with escapes."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif bare and isinstance(value, str) and value and value.isprintable() and " " not in value:
        text = value
    else:
        try:
            text = repr(value)
        except RecursionError:  # pragma: no cover - TOML's own depth limit comes first
            text = f"a nested {type(value).__name__}"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _coerce(f: dataclasses.Field[Any], value: Any, where: str, *, text: bool) -> Any:
    """``value`` as the type of ``f``'s default and inside its range, else a ConfigError naming
    the key, the value and what is allowed. ``text``: ``value`` is a string to parse."""
    kind = type(f.default)
    allowed: Allowed = f.metadata.get("allowed", Allowed())

    def bad() -> ConfigError:
        return ConfigError(
            f"{f.name} must be {allowed.describe(kind)}, got {_shown(value, bare=text)}{where}"
        )

    if kind is tuple:
        if text:
            names = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            names = [v.strip() for v in value]
        else:
            raise bad()
        if not all(names):
            raise bad()
        return tuple(names)
    if kind is str:
        if not isinstance(value, str) or not value.strip():
            raise bad()
        return value
    # a number; bool is an int subclass in Python, but never a number here
    number: float | int
    if text:
        try:
            number = int(value) if kind is int else float(value)
        except ValueError:
            raise bad() from None
    elif isinstance(value, bool):
        raise bad()
    elif kind is int and isinstance(value, int):
        number = value
    elif kind is float and isinstance(value, (int, float)):
        number = float(value)
    else:
        raise bad()
    if not math.isfinite(number) or not allowed.admits(number):
        raise bad()
    return number
