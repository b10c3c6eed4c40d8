"""Schedules are plain ``step -> bool`` callables; each is checked against the set of steps it
should select, written out by hand or from its definition."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from gradlog.errors import ConfigError
from gradlog.recorder.schedules import (
    any_of,
    as_schedule,
    describe,
    every,
    first,
    log_spaced,
    never,
)


def _loose(fn: object) -> Any:
    """``fn`` without its type, to pass wrongly typed arguments on purpose."""
    return fn


def _selected(schedule: Callable[[int], bool], n: int) -> list[int]:
    return [s for s in range(n) if schedule(s)]


def test_every() -> None:
    assert _selected(every(1), 5) == [0, 1, 2, 3, 4]
    assert _selected(every(3), 10) == [0, 3, 6, 9]
    assert _selected(every(4, offset=2), 15) == [2, 6, 10, 14]
    assert describe(every(3)) == "every(3)"


def test_first() -> None:
    assert _selected(first(3), 10) == [0, 1, 2]
    assert _selected(first(1), 10) == [0]
    assert describe(first(7)) == "first(7)"


def test_never() -> None:
    assert _selected(never(), 1000) == []
    assert describe(never()) == "never()"


def test_log_spaced_is_dense_early_and_has_per_decade_steps_per_decade() -> None:
    sched = log_spaced(10)
    steps = _selected(sched, 100_000)
    assert steps[:10] == list(range(10))  # every step below per_decade
    assert steps[10:14] == [10, 13, 16, 20]  # 10**(j/10) rounded up: 10, 12.6, 15.8, 19.95
    for d in range(1, 5):
        in_decade = [s for s in steps if 10**d <= s < 10 ** (d + 1)]
        assert len(in_decade) == 10, (d, in_decade)
    # Past the dense start, the selected steps are the first integers >= 10**(j/10).
    expected = sorted({math.ceil(10 ** (j / 10)) for j in range(10, 50)})
    assert steps[10:] == expected
    assert describe(sched) == "log_spaced(10)"


def test_log_spaced_other_densities() -> None:
    steps = _selected(log_spaced(1), 10_001)
    assert steps == [0, 1, 10, 100, 1000, 10_000]
    steps = _selected(log_spaced(3), 1001)
    assert steps == [0, 1, 2, 3, 5, 10, 22, 47, 100, 216, 465, 1000]


def test_any_of() -> None:
    sched = any_of(first(3), every(10))
    assert _selected(sched, 35) == [0, 1, 2, 10, 20, 30]
    assert describe(sched) == "any_of(first(3), every(10))"
    assert _selected(any_of(), 10) == []


def test_any_of_accepts_plain_callables() -> None:
    def odd(s: int) -> bool:
        return s % 2 == 1

    sched = any_of(odd, first(1))
    assert _selected(sched, 7) == [0, 1, 3, 5]
    assert describe(sched) == "any_of(odd, first(1))"


def test_as_schedule() -> None:
    assert _selected(as_schedule(True, "grads"), 4) == [0, 1, 2, 3]
    assert _selected(as_schedule(False, "grads"), 4) == []
    assert _selected(as_schedule(None, "grads"), 4) == []
    assert _selected(as_schedule(5, "grads"), 12) == [0, 5, 10]
    custom = first(2)
    assert as_schedule(custom, "grads") is custom
    assert describe(as_schedule(lambda s: s == 3, "grads")) == "<lambda>"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: every(0), r"every\(n\) must be a positive integer, got 0"),
        (lambda: every(-2), r"every\(n\) must be a positive integer, got -2"),
        (lambda: _loose(every)(2.5), r"every\(n\) must be a positive integer, got 2.5"),
        (lambda: every(True), r"every\(n\) must be a positive integer, got True"),
        (lambda: first(0), r"first\(k\) must be a positive integer, got 0"),
        (lambda: _loose(first)("3"), r"first\(k\) must be a positive integer, got '3'"),
        (lambda: log_spaced(0), r"log_spaced\(per_decade\) must be a positive integer, got 0"),
        (lambda: every(2, offset=-1), r"every\(offset=...\) must be a non-negative integer"),
        (
            lambda: _loose(every)(2, offset="1"),
            r"every\(offset=...\) must be a non-negative integer",
        ),
        (
            lambda: _loose(any_of)(first(2), 5),
            r"any_of\(\) takes schedules \(step -> bool\), got 5",
        ),
    ],
)
def test_bad_schedule_arguments(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


@pytest.mark.parametrize("value", [0, -1, 2.5, "often", [1, 2]])
def test_as_schedule_rejects_bad_values_and_names_the_allowed_ones(value: object) -> None:
    with pytest.raises(
        ConfigError,
        match=r"hists must be a schedule \(step -> bool\), a positive int, True or False; got",
    ):
        as_schedule(_loose(value), "hists")
