"""Schedules: plain ``step -> bool`` callables that say which steps record a statistic."""

from __future__ import annotations

import math
from collections.abc import Callable

from gradlog.errors import ConfigError

Schedule = Callable[[int], bool]


class _Described:
    """A schedule with a readable description (stored in meta.json)."""

    def __init__(self, fn: Schedule, description: str) -> None:
        self._fn = fn
        self.description = description

    def __call__(self, step: int) -> bool:
        return self._fn(step)

    def __repr__(self) -> str:
        return self.description


def _positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def every(n: int, *, offset: int = 0) -> Schedule:
    """Steps ``offset, offset + n, offset + 2n, ...``."""
    _positive_int("every(n)", n)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ConfigError(f"every(offset=...) must be a non-negative integer, got {offset!r}")
    return _Described(lambda s: s >= offset and (s - offset) % n == 0, f"every({n})")


def first(k: int) -> Schedule:
    """The first ``k`` steps."""
    _positive_int("first(k)", k)
    return _Described(lambda s: s < k, f"first({k})")


def log_spaced(per_decade: int = 10) -> Schedule:
    """About ``per_decade`` steps per power of ten: dense early, sparse late (step 0 included)."""
    _positive_int("log_spaced(per_decade)", per_decade)

    def fn(s: int) -> bool:
        # The first step of each log bucket: floor(per_decade * log10(s)) changes at s.
        if s < max(per_decade, 2):  # dense start; also keeps log10(s - 1) defined at s = 1
            return True
        return math.floor(per_decade * math.log10(s)) != math.floor(per_decade * math.log10(s - 1))

    return _Described(fn, f"log_spaced({per_decade})")


def never() -> Schedule:
    """No step."""
    return _Described(lambda s: False, "never()")


def any_of(*schedules: Schedule) -> Schedule:
    """Steps that any of ``schedules`` selects, e.g. ``any_of(first(100), every(50))``."""
    for s in schedules:
        if not callable(s):
            raise ConfigError(f"any_of() takes schedules (step -> bool), got {s!r}")
    names = ", ".join(describe(s) for s in schedules)
    return _Described(lambda s: any(f(s) for f in schedules), f"any_of({names})")


def describe(schedule: Schedule) -> str:
    """A readable description of a schedule (its repr for gradlog's own, else its name)."""
    if isinstance(schedule, _Described):
        return schedule.description
    return getattr(schedule, "__name__", repr(schedule))


def as_schedule(value: Schedule | int | bool | None, what: str) -> Schedule:
    """Accept a schedule, an int n (every n steps), True (every step) or False/None (never)."""
    if value is None or value is False:
        return never()
    if value is True:
        return every(1)
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(
                f"{what} must be a schedule (step -> bool), a positive int, True or False; "
                f"got {value!r}"
            )
        return every(value)
    if callable(value):
        return value
    raise ConfigError(
        f"{what} must be a schedule (step -> bool), a positive int, True or False; got {value!r}"
    )
