"""Schedules: plain ``step -> bool`` callables that say which steps record a statistic."""

from __future__ import annotations

import math
from collections.abc import Callable

from gradlog.errors import ConfigError

Schedule = Callable[[int], bool]


class _Described:
    """A schedule with a readable description (stored in meta.json). Subclasses hold plain data,
    so schedules pickle (Lightning's ddp_spawn, Ray) and compare by value."""

    description: str

    def __call__(self, step: int) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.description

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.description))


def _positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


class _Every(_Described):
    def __init__(self, n: int, offset: int) -> None:
        self.n, self.offset = n, offset
        self.description = f"every({n})" if offset == 0 else f"every({n}, offset={offset})"

    def __call__(self, step: int) -> bool:
        return step >= self.offset and (step - self.offset) % self.n == 0


class _First(_Described):
    def __init__(self, k: int) -> None:
        self.k = k
        self.description = f"first({k})"

    def __call__(self, step: int) -> bool:
        return step < self.k


class _LogSpaced(_Described):
    def __init__(self, per_decade: int) -> None:
        self.per_decade = per_decade
        self.description = f"log_spaced({per_decade})"

    def __call__(self, step: int) -> bool:
        # The first step of each log bucket: floor(per_decade * log10(s)) changes at s.
        k = self.per_decade
        if step < max(k, 2):  # dense start; also keeps log10(s - 1) defined at s = 1
            return True
        return math.floor(k * math.log10(step)) != math.floor(k * math.log10(step - 1))


class _Never(_Described):
    def __init__(self) -> None:
        self.description = "never()"

    def __call__(self, step: int) -> bool:
        return False


class _AnyOf(_Described):
    def __init__(self, schedules: tuple[Schedule, ...]) -> None:
        self.schedules = schedules
        self.description = f"any_of({', '.join(describe(s) for s in schedules)})"

    def __call__(self, step: int) -> bool:
        return any(f(step) for f in self.schedules)


def every(n: int, *, offset: int = 0) -> Schedule:
    """Steps ``offset, offset + n, offset + 2n, ...``."""
    _positive_int("every(n)", n)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ConfigError(f"every(offset=...) must be a non-negative integer, got {offset!r}")
    return _Every(n, offset)


def first(k: int) -> Schedule:
    """The first ``k`` steps."""
    return _First(_positive_int("first(k)", k))


def log_spaced(per_decade: int = 10) -> Schedule:
    """About ``per_decade`` steps per power of ten: dense early, sparse late (step 0 included)."""
    return _LogSpaced(_positive_int("log_spaced(per_decade)", per_decade))


def never() -> Schedule:
    """No step."""
    return _Never()


def any_of(*schedules: Schedule) -> Schedule:
    """Steps that any of ``schedules`` selects, e.g. ``any_of(first(100), every(50))``."""
    for s in schedules:
        if not callable(s):
            raise ConfigError(f"any_of() takes schedules (step -> bool), got {s!r}")
    return _AnyOf(tuple(schedules))


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
