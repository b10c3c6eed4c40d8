"""Following the analysis's learning-rate hints: rerun a scenario with the suggested learning rate
and compare what the two runs reached.

A hint is only as good as the run that follows it: the rerun must not end worse than the original
(the loss it reached, or for an original that blew up, not blow up itself) and must not be told
to move the learning rate the same way again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sample_runs.scenarios import SCENARIOS

LR_KINDS = ("lr_too_high", "lr_too_low")
BROKEN = ("nonfinite", "divergence")
TOLERANCE = 1.02
"""The followed run may end at most this factor above the original's loss (noise)."""


def _kind(f: Any) -> str:
    return str(getattr(f.kind, "value", f.kind))


def _severity(f: Any) -> str:
    return str(getattr(f.severity, "value", f.severity))


def suggested_lr(findings: list[Any]) -> tuple[str, float] | None:
    """(kind, suggested lr) of the run-level learning-rate warning, if the analysis gave one."""
    for f in findings:
        lr = f.evidence.get("suggested_lr")
        if _kind(f) in LR_KINDS and _severity(f) != "info" and f.tensor is None and lr:
            return _kind(f), float(lr)
    return None


@dataclass
class Outcome:
    """What one run reached: its observed loss and whether it blew up."""

    loss: float | None
    broken: bool


def outcome(result: Any) -> Outcome:
    """A run result's observed loss (last finite one when it blew up) and whether it did."""
    broken = any(_kind(f) in BROKEN and _severity(f) == "error" for f in result.findings)
    c = result.convergence
    if c is None:
        return Outcome(None, broken)
    loss = c.final_loss if math.isfinite(c.final_loss) and not c.diverged else c.last_finite_loss
    return Outcome(loss, broken or c.diverged or c.ended_nonfinite)


@dataclass
class Followed:
    """A scenario rerun with its suggested learning rate."""

    scenario: str
    kind: str
    lr: float
    suggested: float
    before: Outcome
    after: Outcome
    repeated: bool
    """The rerun got a learning-rate warning of the same kind again."""

    @property
    def not_worse(self) -> bool:
        if self.after.broken:
            return False
        if self.before.broken:
            return True
        if self.after.loss is None or self.before.loss is None:
            return False
        return self.after.loss <= self.before.loss * TOLERANCE


def follow(name: str, result: Any, root: Path) -> Followed | None:
    """Rerun scenario ``name`` with the lr its analysis ``result`` suggests (None: none)."""
    from gradlog.analysis import analyze

    hint = suggested_lr(list(result.findings))
    if hint is None:
        return None
    kind, lr = hint
    module = SCENARIOS[name]
    run = module.train(root / name, lr=lr)
    again = analyze([run]).runs[0]
    repeated = any(
        _kind(f) == kind and _severity(f) != "info" for f in again.findings if f.tensor is None
    )
    return Followed(
        name, kind, float(module.CONFIG["lr"]), lr, outcome(result), outcome(again), repeated
    )
