"""Which runs of a batch can be compared: their configs differ in at most one hyperparameter.

Keys that name or replicate a run (``AnalysisConfig.run_keys``, and any key ending in ``seed``)
are left out of the comparison; 64 and 64.0 are the same value; a key present in one config and
absent in the other is a difference.
"""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from gradlog.analysis.config import AnalysisConfig

_MISSING = object()


def is_run_key(key: str, cfg: AnalysisConfig) -> bool:
    """A key that names or replicates a run (seed, name, output directory) rather than its setup."""
    k = key.lower()
    return k in cfg.run_keys or k.endswith("seed")


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _canon(value: Any) -> Any:
    """A value that compares equal across 64 / 64.0 and across nested containers."""
    if is_number(value):
        return float(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def setup(config: dict[str, Any], cfg: AnalysisConfig, without: str | None = None) -> str:
    """A key for the run's setup: its config without run keys and without ``without``."""
    kept = {k: _canon(v) for k, v in config.items() if k != without and not is_run_key(str(k), cfg)}
    return json.dumps(kept, sort_keys=True, default=str)


def differing_keys(a: dict[str, Any], b: dict[str, Any], cfg: AnalysisConfig) -> list[str]:
    """The setup keys (not run keys) whose values differ between configs ``a`` and ``b``."""
    keys = sorted({str(k) for k in (*a, *b) if not is_run_key(str(k), cfg)})
    return [k for k in keys if _canon(a.get(k, _MISSING)) != _canon(b.get(k, _MISSING))]


def sweep_groups(configs: list[dict[str, Any]], key: str, cfg: AnalysisConfig) -> list[list[int]]:
    """Indices of the configs with a numeric ``key``, grouped by the rest of their setup (runs in
    a group differ only in ``key`` and run keys), groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        if is_number(c.get(key)):
            groups.setdefault(setup(c, cfg, without=key), []).append(i)
    return list(groups.values())


def describe_fixed(
    configs: list[dict[str, Any]],
    group: list[int],
    others: list[list[int]],
    key: str,
    cfg: AnalysisConfig,
) -> str:
    """``k=v`` for every setup key but ``key`` in which ``group`` differs from one of the
    ``others`` (the other groups over ``key``): what tells the sweeps apart; empty when there
    are no others."""
    first = configs[group[0]]
    varying = sorted(
        {k for other in others for k in differing_keys(first, configs[other[0]], cfg) if k != key}
    )
    return ", ".join(f"{k}={first.get(k, '(unset)')}" for k in varying)
