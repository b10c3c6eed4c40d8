"""Every detector module; importing this package registers them all."""

from gradlog.analysis.detectors import (
    adam_eps,
    batch_size,
    clipping,
    dead,
    exploding,
    loss,
    nonfinite,
    precision,
    spikes,
    update_ratio,
    vanishing,
    warmup,
    weight_decay,
)

__all__ = [
    "adam_eps",
    "batch_size",
    "clipping",
    "dead",
    "exploding",
    "loss",
    "nonfinite",
    "precision",
    "spikes",
    "update_ratio",
    "vanishing",
    "warmup",
    "weight_decay",
]
