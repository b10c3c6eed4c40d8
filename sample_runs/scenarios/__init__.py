"""Scenario scripts: small models really trained with the recorder, each declaring its findings.

Every scenario module defines

- ``NAME: str`` -- the scenario's name (its log directory is ``sample_runs/logs/<NAME>/``);
- ``CONFIG: dict`` -- its hyperparameters (also passed to the Recorder as ``config=``);
- ``EXPECT: dict`` -- the findings the analysis must and must not produce on its run;
- ``train(root: Path, **overrides) -> Path`` -- trains (seeded, deterministic, seconds on a
  laptop CPU) and returns the run directory it recorded under ``root``; ``overrides`` replace
  CONFIG entries (e.g. ``lr=...`` to follow a learning-rate hint).

EXPECT format::

    {
        "must": [
            {
                "kind": "nonfinite",              # required: a finding kind (see KINDS)
                "tensor": "fc2.weight",           # optional: str, or a list of acceptable names
                "step_start": 60,                 # optional: first step of the finding
                "step_tolerance": 0,              # optional: |step_start difference| allowed
                "severity_at_least": "warning",   # optional: info < warning < error
            },
        ],
        "must_not": ["exploding", "vanishing"],   # kinds that must not appear at warning or error
    }

A ``must`` item is met by a finding of the same kind whose tensor equals ``tensor`` (or one of
them, when a list is given; any tensor, run-level findings included, when omitted), whose
``step_start`` is within ``step_tolerance`` of the item's (default: 0 for ``nonfinite``, where the
first bad step is exact, and :data:`DEFAULT_STEP_TOLERANCE` for every other kind), and whose
severity is at least ``severity_at_least`` (default: any severity, ``info`` included). A
``must_not`` kind is violated by any finding of that kind at severity warning or error (an info
note is allowed). Kinds listed in neither place may or may not be reported.
"""

from __future__ import annotations

from types import ModuleType

from sample_runs.scenarios import (
    amp,
    amp_nan,
    dying_relu,
    exploding_sgd,
    float64_explode,
    gpt_char,
    gpt_char_nan,
    head_not_in_optimizer,
    healthy_cnn,
    lbfgs_seq,
    loss_spike,
    lr_too_low,
    lstm_sgd,
    nan_backward,
    vanishing_sigmoid,
)

KINDS = (
    "nonfinite",
    "exploding",
    "vanishing",
    "spike",
    "dead",
    "frozen",
    "lr_too_high",
    "lr_too_low",
    "plateau",
    "divergence",
    "precision",
    "clipping",
    "batch_size",
    "oscillation",
    "warmup",
    "weight_decay",
)
"""The finding kinds an EXPECT may name."""

SEVERITIES = ("info", "warning", "error")
"""Finding severities, least severe first."""

DEFAULT_STEP_TOLERANCE = 5
"""Steps by which a finding's step_start may miss an expected one (kinds other than nonfinite)."""

HEALTHY = ("healthy_cnn", "amp", "gpt_char", "lstm_sgd", "lbfgs_seq")
"""Scenarios without any pathology: every warning or error on them is a false positive."""

SCENARIOS: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        healthy_cnn,
        exploding_sgd,
        vanishing_sigmoid,
        nan_backward,
        dying_relu,
        lr_too_low,
        loss_spike,
        head_not_in_optimizer,
        amp,
        gpt_char,
        gpt_char_nan,
        lstm_sgd,
        lbfgs_seq,
        float64_explode,
        amp_nan,
    )
}
"""Every scenario module by NAME, in generation order."""
