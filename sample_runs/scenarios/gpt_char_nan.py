"""The GPT-style recipe of :mod:`gpt_char` with a NaN born in the backward of the first block's
MLP (``h.0.mlp.c_fc``'s output) at step 50, clipping on. Clipping multiplies every gradient by
the NaN total norm, so after it every tensor is NaN; the recorder takes the gradients before
clipping, where only ``h.0.mlp.c_fc`` and the tensors below it in the backward pass are NaN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sample_runs.scenarios import gpt_char

NAME = "gpt_char_nan"
NAN_STEP = 50
CONFIG: dict[str, Any] = {
    **gpt_char.CONFIG,
    "steps": 80,
    "nan_step": NAN_STEP,
    "nan_in": "h.0.mlp.c_fc",
}
EXPECT: dict[str, Any] = {
    "must": [
        {
            "kind": "nonfinite",
            "tensor": ["h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias"],
            "step_start": NAN_STEP,
            "step_tolerance": 1,
            "severity_at_least": "error",
        },
    ],
    "must_not": [
        "exploding",
        "vanishing",
        "dead",
        "frozen",
        "lr_too_high",
        "lr_too_low",
        "plateau",
        "weight_decay",
    ],
}


def train(root: Path, **overrides: Any) -> Path:
    """Train through the NaN step and beyond; returns the run directory."""
    return gpt_char.run(root, {**CONFIG, **overrides}, NAME, nan_step=NAN_STEP)
