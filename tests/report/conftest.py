"""Shared fixtures of the report tests: small synthetic runs, one with hostile strings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.report.synthetic import write_run

EVIL = [
    "</script><script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    '"><svg onload=window.__pwned=3>',
    "line\u2028separator\u2029para",
    "{{ 7*7 }}{% raw %}",
]
BIG = "x" * 1_000_000


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch of three runs with different learning rates."""
    root = tmp_path_factory.mktemp("runs")
    for i, lr in enumerate((1e-4, 1e-3, 1e-2)):
        write_run(root, name=f"sgd-lr-{lr:g}", lr=lr, seed=i, config={"lr": lr, "batch": 32})
    return root


@pytest.fixture(scope="session")
def evil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose every user string tries to inject markup or script."""
    root = tmp_path_factory.mktemp("evil")
    config = {
        EVIL[0]: EVIL[1],
        "nested": {"a": {"b": [EVIL[2], 1.5]}},
        "nan": math.nan,
        "inf": math.inf,
        "sep": EVIL[3],
        "big": BIG,
        "template": EVIL[4],
    }
    return write_run(
        root,
        name=EVIL[0] + EVIL[1] + EVIL[2] + EVIL[3],
        run_id="evil-run",
        tensors=[EVIL[0], EVIL[1], EVIL[2], EVIL[3], "ok.weight", BIG[:5000]],
        config=config,
        scalar_names=(EVIL[1], EVIL[2]),
        nan_at=60,
    )
