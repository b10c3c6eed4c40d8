"""Gradient clipping seen by the recorder: statistics before the clip, the clip recorded.

Frameworks clip with ``torch.nn.utils.clip_grad_norm_`` (accelerate's and so the Hugging Face
Trainer's ``clip_grad_norm_``, Lightning's precision plugins, hand-written loops). While a
:class:`~gradlog.recorder.Recorder` is alive, these torch functions are wrapped so that a
recorder whose parameters are clipped first records the gradient statistics as they are before
the clip; the clip itself then runs unchanged and its result is returned untouched. The wrapper
is removed when the last recorder closes. A name imported before the first recorder existed
(``from torch.nn.utils import clip_grad_norm_``) is not wrapped: use ``Recorder.clip_grad_norm_``
or ``Recorder.capture_grads()`` there.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch


class Watcher(Protocol):
    """What a recorder offers to the clipping wrapper."""

    def _owns_any(self, ids: set[int]) -> bool: ...
    def _before_clip(self) -> None: ...
    def _after_clip(self, max_norm: float | None) -> None: ...


_FUNCTIONS = ("clip_grad_norm_", "clip_grad_value_")
_lock = threading.Lock()
_watchers: weakref.WeakSet[Any] = weakref.WeakSet()
_originals: dict[str, Callable[..., Any]] = {}
_wrappers: dict[str, Callable[..., Any]] = {}


def _params(parameters: Any) -> list[torch.Tensor]:
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    return list(parameters)


def _limit(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
    """The clip threshold (max_norm or clip_value) when it is a finite number, else None."""
    key = "max_norm" if name == "clip_grad_norm_" else "clip_value"
    value: Any = args[0] if args else kwargs.get(key)
    try:
        limit = float(value)
    except (TypeError, ValueError):
        return None
    return limit if math.isfinite(limit) else None


def _wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def clip(parameters: Iterable[torch.Tensor] | torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        params = _params(parameters)  # a generator can be consumed only once: pass the list on
        watching: list[Watcher] = []
        if _watchers:
            ids = {id(p) for p in params}
            watching = [w for w in list(_watchers) if w._owns_any(ids)]
        for w in watching:
            w._before_clip()  # never raises: the recorder guards its own work
        result = original(params, *args, **kwargs)
        limit = _limit(name, args, kwargs)
        for w in watching:
            w._after_clip(limit)
        return result

    clip.__gradlog_wrapper__ = True  # type: ignore[attr-defined]
    return clip


def _modules() -> list[Any]:
    from torch.nn.utils import clip_grad

    return [torch.nn.utils, clip_grad]


def watch(recorder: Watcher) -> None:
    """Start seeing clips of ``recorder``'s parameters (wraps torch's functions on first use)."""
    with _lock:
        _watchers.add(recorder)
        if _wrappers:
            return
        for name in _FUNCTIONS:
            original = getattr(torch.nn.utils, name)
            if getattr(original, "__gradlog_wrapper__", False):  # left by a forked parent
                continue
            _originals[name] = original
            _wrappers[name] = _wrap(name, original)
            for module in _modules():
                if getattr(module, name, None) is original:
                    setattr(module, name, _wrappers[name])


def unwatch(recorder: Watcher) -> None:
    """Stop seeing ``recorder``'s clips; the last one out puts torch's functions back."""
    with _lock:
        _watchers.discard(recorder)
        if _watchers or not _wrappers:
            return
        for name, wrapper in _wrappers.items():
            for module in _modules():
                if getattr(module, name, None) is wrapper:  # unless someone wrapped it since
                    setattr(module, name, _originals[name])
        _wrappers.clear()
        _originals.clear()


def original(name: str) -> Callable[..., Any]:
    """torch's own function ``name``, unwrapped."""
    fn: Callable[..., Any] = _originals.get(name) or getattr(torch.nn.utils, name)
    return fn
