import json

import pytest

from gradlog.analysis import Finding, Kind, Severity
from gradlog.errors import CorruptRunError


def test_severity_is_ordered() -> None:
    assert Severity.INFO < Severity.WARNING < Severity.ERROR
    assert max([Severity.WARNING, Severity.ERROR, Severity.INFO]) is Severity.ERROR


def test_finding_json_round_trip() -> None:
    f = Finding(
        "r",
        "spikes",
        Kind.SPIKE,
        Severity.WARNING,
        "fc.weight",
        3,
        7,
        {"z": 9.5, "n": 2, "what": "x"},
        "msg",
        "hint",
    )
    assert Finding.from_json(json.loads(json.dumps(f.to_json()))) == f
    assert {
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
    } <= {k.value for k in Kind}


def test_finding_from_bad_json() -> None:
    with pytest.raises(CorruptRunError, match="not a gradlog finding"):
        Finding.from_json({"run": "r", "detector": "d", "kind": "nope", "severity": "info"})
