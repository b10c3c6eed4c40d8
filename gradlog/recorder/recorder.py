"""The Recorder: attaches to an optimizer with one line and records every step's gradients.

Hook points: the optimizer's step pre-hook (gradients after accumulation and AMP unscaling;
parameters before the update) and step post-hook (updates). When ``optimizer.step(closure)`` is
called with a closure, the gradients are recorded when the closure's first evaluation returns
(the gradients that step applies). When the gradients are clipped (torch's
``clip_grad_norm_``/``clip_grad_value_``, :meth:`Recorder.clip_grad_norm_`, or a framework
callback calling :meth:`Recorder.capture_grads`), the statistics are taken before the clip and
the step's norm after it. Loops without an optimizer call :meth:`Recorder.step`.

Statistics are computed on the device by :mod:`gradlog.recorder.stats`; each step's results
are concatenated and moved to the host with one copy (non-blocking into pinned memory on CUDA),
then handed to the background :class:`~gradlog.recorder.writer.Writer`.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from gradlog.errors import ConfigError, GradlogWarning, WriterError
from gradlog.recorder import clipping, norms
from gradlog.recorder import schedules as sched
from gradlog.recorder.catalogue import Catalogue, build_catalogue, watch_activations
from gradlog.recorder.meta import (
    base_meta,
    jsonable,
    meta_path,
    previous_meta,
    resume_record,
    write_json_atomic,
)
from gradlog.recorder.naming import create_run_dir, validate_name
from gradlog.recorder.stats import (
    copy_and_stats,
    exponent_histogram,
    stats_and_histogram_arrays,
    tensor_stats,
    update_stats,
)
from gradlog.recorder.writer import Packet, Segment, Writer

MAX_SCALAR_NAME = 256
_KIND = {"grad": 0, "param": 1, "update": 2}
_CPU = torch.device("cpu")


@dataclass
class _PendingStep:
    """A step whose device results wait for the scalars logged after it, then one copy."""

    step: int
    time: float
    parts: list[tuple[Segment, torch.Tensor | np.ndarray]] = field(default_factory=list)
    scalar_tensors: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    scalars: list[tuple[int, str, float]] = field(default_factory=list)
    grads_none: int = 0
    tensor_stats: bool = False
    skipped: bool | None = None
    step_row: bool = False  # True once the optimizer step itself was seen (not only log() calls)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2, tensor parallel); the tensor itself otherwise."""
    if type(t) is torch.Tensor:  # the common case, without a failed attribute lookup
        return t
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


# Live recorders by the id of what they watch (an optimizer, or a model without one).
_LIVE: dict[int, weakref.ref[Recorder]] = {}
_LIVE_LOCK = threading.Lock()


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside a framework's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``, anything exposing ``.optimizer``), or ``optimizer``."""
    seen: set[int] = set()
    current = optimizer
    while id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "optimizer", None)
        if inner is None:
            inner = getattr(current, "_optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            current = inner  # a wrapper, even one that subclasses Optimizer without its hooks
            continue
        break
    if not isinstance(current, torch.optim.Optimizer):
        raise ConfigError(
            f"optimizer must be a torch.optim.Optimizer (or a wrapper exposing one as "
            f".optimizer), got {type(optimizer).__name__}"
        )
    if not hasattr(current, "_optimizer_step_pre_hooks"):
        raise ConfigError(
            f"optimizer {type(optimizer).__name__} is a wrapper gradlog does not know (it has no "
            "step hooks); pass the torch.optim.Optimizer it wraps"
        )
    return current


def _optimizer_hparams(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"class": type(optimizer).__name__, "param_groups": jsonable(groups)}


class Recorder:
    """Record gradient statistics of ``model`` at every ``optimizer`` step into ``root``.

    Use as a context manager or call :meth:`close`. ``grads``, ``params``, ``updates`` and
    ``hists`` are schedules (``step -> bool``), an int n (every n steps), True or False.
    ``optimizer`` may be a framework's wrapper (accelerate's ``AcceleratedOptimizer``): the
    torch optimizer inside is hooked. With ``optimizer=None`` (loops that update parameters by
    hand) call :meth:`step` once per step, after the update.
    ``scaler`` is an AMP GradScaler whose loss scale and skipped steps are recorded (found on
    the wrapper when it has one). ``only_optimizer_params`` catalogues only the parameters the
    optimizer updates (one run per optimizer when a model has several). ``watch_clipping``
    records the gradients before torch's ``clip_grad_norm_``/``clip_grad_value_`` clips them
    (see :mod:`gradlog.recorder.clipping`).
    With ``strict=True`` a full queue blocks and writer errors raise; by default the recorder
    drops data with a counter and a single warning instead of disturbing training.
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer | Any | None,
        *,
        root: str | Path = "runs",
        name: str | None = None,
        config: dict[str, Any] | None = None,
        scaler: Any = None,
        grads: sched.Schedule | int | bool = True,
        params: sched.Schedule | int | bool = 10,
        updates: sched.Schedule | int | bool = 10,
        hists: sched.Schedule | int | bool = 50,
        flush_every_steps: int = 1000,
        flush_every_secs: float = 10.0,
        max_queue_bytes: int = 64 << 20,
        strict: bool = False,
        run_id: str | None = None,
        watch_clipping: bool = True,
        only_optimizer_params: bool = False,
        first_step: int | None = None,
    ) -> None:
        if model is not None and not isinstance(model, torch.nn.Module):
            raise ConfigError(
                f"model must be a torch.nn.Module or None, got {type(model).__name__}"
            )
        if optimizer is None and model is None:
            raise ConfigError(
                "Recorder needs a model, an optimizer or both; got neither (model=None, "
                "optimizer=None)"
            )
        wrapper = optimizer
        optimizer = None if optimizer is None else unwrap_optimizer(optimizer)
        if scaler is None and wrapper is not optimizer:
            found = getattr(wrapper, "scaler", None)  # accelerate keeps its GradScaler here
            scaler = found if found is not None and hasattr(found, "unscale_") else None
        if config is not None and not isinstance(config, dict):
            raise ConfigError(
                f"config must be a dict of hyperparameters, got {type(config).__name__}"
            )
        if scaler is not None and not hasattr(scaler, "step"):
            raise ConfigError("scaler must be a torch.amp.GradScaler (an object with .step())")
        if not isinstance(flush_every_steps, int) or flush_every_steps < 1:
            raise ConfigError(
                f"flush_every_steps must be a positive int, got {flush_every_steps!r}"
            )
        if not (isinstance(flush_every_secs, (int, float)) and flush_every_secs > 0):
            raise ConfigError(
                f"flush_every_secs must be a positive number, got {flush_every_secs!r}"
            )
        if first_step is not None and (
            not isinstance(first_step, int) or isinstance(first_step, bool) or first_step < 0
        ):
            raise ConfigError(f"first_step must be a non-negative int or None, got {first_step!r}")
        if not isinstance(max_queue_bytes, int) or max_queue_bytes < 1 << 16:
            raise ConfigError(f"max_queue_bytes must be an int >= 65536, got {max_queue_bytes!r}")
        if name is None:
            model_name = type(model).__name__ if model is not None else "model"
            opt_name = type(optimizer).__name__ if optimizer is not None else "manual"
            name = f"{model_name}-{opt_name}"
        self.name = validate_name(name)
        watched = optimizer if optimizer is not None else model
        with _LIVE_LOCK:
            live = _LIVE.get(id(watched))
            other = live() if live is not None else None
            if other is not None and not other.closed:
                what = "optimizer" if optimizer is not None else "model"
                raise ConfigError(
                    f"this {what} already has a live gradlog Recorder (run {other.run_id}); "
                    "record with that one, or close() it before attaching another"
                )
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.strict = strict
        self._schedules = {
            "grads": sched.as_schedule(grads, "grads"),
            "params": sched.as_schedule(params, "params"),
            "updates": sched.as_schedule(updates, "updates"),
            "hists": sched.as_schedule(hists, "hists"),
        }
        self.rank, self.world_size = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.rank = torch.distributed.get_rank()
            self.world_size = torch.distributed.get_world_size()
            if run_id is None:  # one collective at start-up so that all ranks share one directory
                holder: list[str | None] = [None, None]  # run id, or rank 0's error
                if self.rank == 0:
                    try:
                        holder[0] = create_run_dir(Path(root), self.name).name
                    except ConfigError as exc:
                        holder[1] = str(exc)
                torch.distributed.broadcast_object_list(holder, src=0)
                if holder[1] is not None:  # every rank fails alike: none waits for the others
                    raise ConfigError(holder[1])
                run_id = holder[0]
        self.catalogue: Catalogue = build_catalogue(
            model, optimizer, only_optimizer=only_optimizer_params
        )
        self._opt_ids = {id(e.param) for e in self.catalogue.entries if e.in_optimizer}
        self._activation_hooks = watch_activations(model, self.catalogue)  # first forward only
        self.run_dir = create_run_dir(Path(root), self.name, run_id)
        self._pid = os.getpid()  # only this process closes the run or changes its status
        self._start = time.time()
        self._last_value_at_start = getattr(sys, "last_value", None)
        self._meta_lock = threading.Lock()
        self._meta: dict[str, Any] = base_meta(self.run_dir.name, self.name, self._start)
        earlier = previous_meta(meta_path(self.run_dir, self.rank))  # resuming this run?
        if earlier is not None:
            self._meta["start_time"] = earlier.get("start_time", self._start)
            self._meta["resumes"] = [*earlier.get("resumes", []), resume_record(earlier)]
        self._dropped_scalars = 0
        self._meta.update(
            world_size=self.world_size,
            rank=self.rank,
            config=jsonable(config or {}),
            optimizer=_optimizer_hparams(optimizer) if optimizer is not None else None,
            tensors=self.catalogue.to_json(),
            schedules={k: sched.describe(v) for k, v in self._schedules.items()},
            scaler=type(scaler).__name__ if scaler is not None else None,
        )
        self._step = first_step if first_step is not None else 0
        if first_step is None and earlier is not None:
            # Continue after the last step recorded before; pass first_step to align with the
            # training step of the checkpoint resumed from (repeated steps: last writer wins).
            last = earlier.get("last_step")
            self._step = last + 1 if isinstance(last, int) and last >= 0 else 0
        self._meta["first_step"] = self._step
        self._pending: _PendingStep | None = None
        self._snapshot: tuple[np.ndarray, list[torch.Tensor]] | None = None
        # Gradients recorded ahead of the step (before a clip): (step, its stats or norm segment)
        self._captured: tuple[int, Segment | None] | None = None
        self._clipped: int | None = None  # the step whose gradients were clipped
        self._phase = "idle"  # idle | closure (awaiting its first evaluation) | stepping
        self._manual_before: dict[int, torch.Tensor] | None = None  # optimizer=None: before
        self._recordable = [i for i, e in enumerate(self.catalogue.entries) if e.recorded]
        # Fixed for the recorder's life (the catalogue is): what each step would re-derive.
        self._slots = [
            (i, e.param, e.in_optimizer, e.recorded) for i, e in enumerate(self.catalogue.entries)
        ]
        self._updated = [i for i in self._recordable if self.catalogue.entries[i].in_optimizer]
        updated = set(self._updated)
        self._not_updated = [i for i in self._recordable if i not in updated]
        self._updated_idx = _frozen_array(self._updated, np.int32)
        self._recordable_idx = _frozen_array(self._recordable, np.int32)
        # Rows of [updated; not updated] parameter statistics put back in catalogue order.
        self._param_order = {
            _CPU: torch.from_numpy(
                np.argsort(np.array(self._updated + self._not_updated, dtype=np.int64))
            )
        }
        # The gradient rows of the last step: (indices, their index array, norm rows).
        self._grad_layout: tuple[tuple[int, ...], np.ndarray, np.ndarray] | None = None
        self._snapshot_buffers: list[torch.Tensor] = []  # CPU copies, reused (see _copies_of)
        self._closed = False
        self._disabled = False
        self._warned: set[str] = set()
        self._lock = threading.RLock()
        self._order: dict[str, int] = {}  # name -> arrival index (a list would be O(n**2))
        for e in self.catalogue.entries:
            if not e.recorded:
                self._warn("complex", f"gradlog: {e.name} is {e.not_recorded}; it is not recorded")
        self._write_meta()
        self.writer = Writer(
            self.run_dir,
            self.rank,
            self.catalogue.names,
            max_queue_bytes=max_queue_bytes,
            flush_every_steps=flush_every_steps,
            flush_every_secs=float(flush_every_secs),
            on_flush=self._write_meta,
        )
        self._handles = (
            []
            if optimizer is None
            else [
                optimizer.register_step_pre_hook(self._pre_hook),
                optimizer.register_step_post_hook(self._post_hook),
            ]
        )
        self._order_handles = self._watch_backward_order()
        self._scaler_step: Callable[..., Any] | None = None
        if scaler is not None and optimizer is not None:
            self._wrap_scaler(scaler)
        if optimizer is None:
            self._manual_snapshot(0)
        self._watching_clips = watch_clipping
        if watch_clipping:
            clipping.watch(self)
        with _LIVE_LOCK:
            self._watched_id = id(watched)
            _LIVE[self._watched_id] = weakref.ref(self)
        atexit.register(self._atexit)

    # ----------------------------------------------------------------- public API
    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def run_id(self) -> str:
        """The run directory's name."""
        return self.run_dir.name

    @property
    def last_step(self) -> int:
        """Index of the most recent step recorded (-1 before the first)."""
        return self._step - 1

    def start_at(self, step: int) -> None:
        """Number the first step ``step``, as ``Recorder(first_step=step)`` would: for a
        framework that learns where a resumed training continues only after the Recorder
        exists (Lightning restores ``global_step`` after ``on_fit_start``). Raises
        :class:`ConfigError` once a step, a log call or a clip has been seen."""
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ConfigError(f"start_at needs a non-negative int, got {step!r}")
        with self._lock:
            fresh = self._step == self._meta["first_step"] and self._pending is None
            if not fresh or self._captured is not None or self._clipped is not None:
                raise ConfigError(
                    f"start_at({step}) after step {self._meta['first_step']} was begun: "
                    "call it before the first step, log or clip"
                )
            self._step = step
            self._meta["first_step"] = step
        self._write_meta()

    def step(self, lr: float | torch.Tensor | None = None) -> None:
        """Record one step of a loop without an optimizer (``Recorder(model, None)``).

        Call it once per step, right after the loop updated the parameters (where
        ``optimizer.step()`` would be): it records the gradients present now and, on the
        params/updates schedules, the parameters before this update and the update itself
        (the parameters are copied after the previous step on those schedules only). ``lr`` is
        recorded as ``lr/0`` when given.
        """
        if self.optimizer is not None:
            raise ConfigError(
                "Recorder.step() is for loops without an optimizer (Recorder(model, None)); "
                "with an optimizer the recorder records at optimizer.step() by itself"
            )
        self._check_writer()
        if self._closed:
            raise ConfigError("Recorder.step() called after close(); record before closing")
        self._safely(self._manual_step, lr)

    def capture_grads(self) -> None:
        """Record this step's gradient statistics now, before something changes the gradients.

        For framework callbacks: call it where the gradients are final (after accumulation and
        AMP unscaling) but not yet clipped, e.g. Lightning's ``on_before_optimizer_step``. The
        optimizer step that follows records only the norm it applies (after any clipping).
        Calling it again before that step changes nothing.
        """
        if self._closed:
            return
        self._safely(self._capture)

    def log(self, **scalars: Any) -> None:
        """Record scalars for the current step (the last optimizer step; step 0 before any).

        Tensors are fine and are not synchronised: accelerator tensors travel with the step's
        single copy, CPU tensors are read at once (their value when logged, in both cases).
        A name logged again for the same step replaces its earlier value (last one wins).
        Numbers of any kind (bool, numpy, Decimal, single-element arrays) are converted to
        float; anything else (text, a tensor of several elements, complex, an empty or
        over-long name) is dropped with one warning and counted in meta.json
        ``counters.dropped_scalars``: logging never raises into training.
        """
        if self._closed or os.getpid() != self._pid:
            self._drop_scalars(len(scalars), "log() after close(): log before closing")
            return
        self._check_writer()
        with self._lock:
            pending = self._pending_for_log()
            for key, value in scalars.items():
                try:
                    converted = _scalar(key, value)
                except ValueError as exc:  # dropped and counted: logging never breaks training
                    self._drop_scalars(1, str(exc))
                    continue
                _forget(pending, key)
                if isinstance(converted, torch.Tensor):
                    pending.scalar_tensors.append((key, converted))
                else:
                    pending.scalars.append((pending.step, key, converted))

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over the recorded trainable parameters, with the
        gradient statistics taken before the clip (``grad_norm_preclip``; no host sync)."""
        params = [e.param for e in self.catalogue.entries if e.in_optimizer]
        self._before_clip()
        total: torch.Tensor = clipping.original("clip_grad_norm_")(
            params, max_norm, norm_type=norm_type
        )
        self._after_clip(float(max_norm))
        return total

    def flush(self, timeout: float | None = 30.0) -> None:
        """Write everything recorded so far to visible parts (and meta.json)."""
        with self._lock:
            if self._pending is not None and not self._closed:
                self._dispatch(self._pending)
                self._pending = None
        self.writer.flush(timeout)
        self._check_writer()

    def close(self, status: str = "finished", error: str | None = None) -> None:
        """Detach, write the last parts and finalise meta.json. Safe to call more than once.

        Only the process that created the recorder closes it: a forked child does nothing."""
        if os.getpid() != self._pid:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for h in self._handles + self._order_handles:
                h.remove()
            self._order_handles = []
            self._drop_activation_hooks()
            self._snapshot = self._manual_before = None
            self._snapshot_buffers = []
            if self._watching_clips:
                clipping.unwatch(self)
            with _LIVE_LOCK:
                live = _LIVE.get(self._watched_id)
                if live is not None and live() is self:
                    del _LIVE[self._watched_id]
            if self.scaler is not None and self._scaler_step is not None:
                with contextlib.suppress(AttributeError, TypeError):
                    self._unwrap_scaler()
            if self._pending is not None:
                try:
                    self._dispatch(self._pending)
                except Exception as exc:  # never lose the rest of the close
                    self._warn("dispatch", f"gradlog: could not record the last step: {exc}")
                self._pending = None
        self.writer.close()
        with self._meta_lock:
            self._meta["status"] = status
            self._meta["end_time"] = time.time()
            if error:
                self._meta["error"] = error[:2000]
        self._write_meta()
        atexit.unregister(self._atexit)
        if self.writer.pending_error is not None:
            self._check_writer()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        status, error = exit_status(exc)
        self.close(status=status, error=error)

    # ----------------------------------------------------------------- hooks
    def _pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> Any:
        closure = kwargs.get("closure") if kwargs else None
        # torch passes the optimizer itself as args[0]; a positional closure follows it.
        at = next((i for i, a in enumerate(args) if a is not optimizer and callable(a)), None)
        positional = closure is None and at is not None
        if positional and at is not None:
            closure = args[at]
        if closure is None or not callable(closure) or self._disabled or self._closed:
            self._phase = "stepping"
            self._safely(self._on_step_begin, False)
            return None
        # The closure computes this step's gradients: record them when it first returns.
        self._phase = "closure"
        wrapped = self._wrap_closure(closure)
        if positional and at is not None:
            return (*args[:at], wrapped, *args[at + 1 :]), kwargs
        return args, {**kwargs, "closure": wrapped}

    def _wrap_closure(self, closure: Callable[..., Any]) -> Callable[..., Any]:
        """``closure`` that records the step's gradients after its first evaluation (LBFGS
        evaluates it several times; the first evaluation is at the parameters being updated)."""

        def recorded_closure(*args: Any, **kwargs: Any) -> Any:
            result = closure(*args, **kwargs)
            if self._phase == "closure":
                self._phase = "stepping"
                self._safely(self._on_step_begin, False)
            return result

        return recorded_closure

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._phase == "closure":  # the optimizer never called its closure
            self._phase = "stepping"
            self._safely(self._on_step_begin, False, True)
        self._phase = "idle"
        self._safely(self._on_step_end)

    # ----------------------------------------------------------------- clipping
    def _owns_any(self, ids: set[int]) -> bool:
        return not self._closed and not self._opt_ids.isdisjoint(ids)

    def _before_clip(self) -> None:
        """Called by the clipping wrapper before torch clips some of our gradients."""
        self.capture_grads()

    def _after_clip(self, limit: float | None) -> None:
        """Called after the clip: the step's norm must now be taken again (after the clip)."""
        if limit is None or self._closed or self._disabled:
            return  # clip_grad_norm_(params, inf) only measures (the Hugging Face Trainer does)
        with self._lock:
            if self._captured is not None and self._captured[0] == self._step:
                self._clipped = self._step
                pending = self._pending_for_log(upcoming=True)
                _forget(pending, "grad_clip_limit")  # the last clip of the step counts
                pending.scalars.append((pending.step, "grad_clip_limit", limit))

    def _safely(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a hook body; a recorder bug disables recording with a warning (raises if strict)."""
        if self._disabled or self._closed or os.getpid() != self._pid:
            return
        self._check_writer()
        try:
            with self._lock:
                fn(*args)
        except Exception as exc:
            if self.strict:
                raise
            self._disabled = True
            self._warn("hook", f"gradlog: recording disabled after an internal error: {exc!r}")

    def _wrap_scaler(self, scaler: Any) -> None:
        """Record steps that the GradScaler skips (no optimizer hook fires for them)."""
        original = scaler.step
        # Another recorder's wrapper (two optimizers, one scaler) is an instance attribute.
        self._scaler_outer = vars(scaler).get("step") if hasattr(scaler, "__dict__") else None
        self._scaler_step = original
        if getattr(self.optimizer, "_step_supports_amp_scaling", False):
            self._warn(
                "fused",
                "gradlog: this optimizer unscales gradients inside step() (fused/capturable); "
                "recorded gradient statistics are of the scaled gradients",
            )

        def step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            before = self._step
            result = original(optimizer, *args, **kwargs)
            if self._closed:  # closed while a later wrapper still calls through this one
                return result
            if optimizer is self.optimizer and self._step == before:
                self._safely(self._on_step_begin, True)  # gradients are unscaled (and non-finite)
            return result

        step._gradlog_owner = self  # type: ignore[attr-defined]
        scaler.step = step
        self._scaler_wrapper = step

    def _unwrap_scaler(self) -> None:
        """Put back what ``scaler.step`` was, unless a later wrapper sits on top of ours (it
        then calls through ours, which passes everything on once we are closed)."""
        scaler = self.scaler
        if vars(scaler).get("step") is not self._scaler_wrapper:
            return
        outer = self._scaler_outer
        while outer is not None:  # skip wrappers of recorders closed meanwhile
            owner = getattr(outer, "_gradlog_owner", None)
            if owner is None or not owner.closed:
                break
            outer = owner._scaler_outer
        if outer is not None:
            scaler.step = outer
        else:
            del scaler.step  # drop the instance attribute: the class method is back

    def _watch_backward_order(self) -> list[Any]:
        """Note the order in which gradients arrive in the first backward pass, then unhook."""
        handles = []
        for entry in self.catalogue.entries:
            p = entry.param
            if not p.requires_grad or not hasattr(p, "register_post_accumulate_grad_hook"):
                continue

            def seen(_: torch.Tensor, name: str = entry.name) -> None:
                self._order.setdefault(name, len(self._order))

            handles.append(p.register_post_accumulate_grad_hook(seen))  # type: ignore[no-untyped-call]
        return handles

    # ----------------------------------------------------------------- step work
    def _pending_for_log(self, *, upcoming: bool = False) -> _PendingStep:
        """The step that scalars logged now belong to: the last optimizer step (step 0 before
        any), or with ``upcoming`` the next one (for values computed before optimizer.step())."""
        target = self._step if upcoming else max(self._step - 1, 0)
        if self._pending is not None and self._pending.step != target:
            self._dispatch(self._pending)
            self._pending = None
        if self._pending is None:
            self._pending = _PendingStep(step=target, time=time.time())
        return self._pending

    def _drop_activation_hooks(self) -> None:
        for h in self._activation_hooks:
            h.remove()
        self._activation_hooks = []

    def _capture(self) -> None:
        """Record the upcoming step's gradient statistics now (once per step, not mid-step)."""
        if self._phase == "stepping":
            return  # e.g. LBFGS re-evaluating its closure: the step's gradients are recorded
        step = self._step
        if self._captured is not None and self._captured[0] == step:
            return
        self._note_backward_order()
        pending = self._pending_for_log(upcoming=True)
        with torch.no_grad():
            seg = self._record_grads(pending, step)
        self._captured = (step, seg)

    def _note_backward_order(self) -> None:
        """Store the first backward pass's gradient order in the catalogue, then unhook (the
        activation probe too: a model whose root forward never runs must not keep it)."""
        self._drop_activation_hooks()
        if not self._order_handles:
            return
        for h in self._order_handles:
            h.remove()
        self._order_handles = []
        order = self._order
        for e in self.catalogue.entries:
            e.backward_order = order.get(e.name)
        with self._meta_lock:
            self._meta["tensors"] = self.catalogue.to_json()

    def _on_step_begin(self, skipped: bool, late: bool = False) -> None:
        with torch.no_grad():
            self._begin(skipped, late)

    def _begin(self, skipped: bool, late: bool) -> None:
        """The step's gradients (unless captured before a clip), parameters, update snapshot,
        loss scale and learning rates. ``late``: the parameters were already updated."""
        step = self._step
        self._note_backward_order()
        if self._pending is not None and self._pending.step != step:
            self._dispatch(self._pending)
            self._pending = None
        pending = self._pending or _PendingStep(step=step, time=time.time())
        self._pending = pending
        pending.time = time.time()
        pending.step_row = True
        pending.skipped = skipped if self.scaler is not None else None
        self._step += 1
        captured, self._captured = self._captured, None
        if captured is not None and captured[0] == step:
            seg = captured[1]
            if self._clipped == step and seg is not None:
                # The statistics are of the gradients before the clip; the step's own norm is
                # of what the optimizer applies.
                if seg.what == "grad_norm":
                    seg.what = "grad_norm_preclip"
                else:
                    seg.norm_name = "grad_norm_preclip"
                post = self._global_norm(self._optimizer_grads())
                if post is not None:
                    pending.parts.append((Segment("grad_norm", 0, 0), post))
        else:
            self._record_grads(pending, step)
        self._clipped = None
        if late:
            pass  # the parameters were already updated: neither they nor the update are known
        elif self.optimizer is None:
            self._manual_params(pending, step)
        else:
            self._params_and_snapshot(pending, step, skipped)
        if self.scaler is not None:
            scale = getattr(self.scaler, "_scale", None)
            if isinstance(scale, torch.Tensor):
                # A copy: scaler.update() changes the scale in place before the dispatch.
                scale = scale.detach().reshape(1).clone()
                pending.parts.append((Segment("loss_scale", 0, 0), scale))
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        for g_i, group in enumerate(groups):
            lr = group.get("lr")
            if isinstance(lr, torch.Tensor):
                pending.scalar_tensors.append((f"lr/{g_i}", lr.detach().reshape(1).clone()))
            elif isinstance(lr, (int, float)):
                pending.scalars.append((step, f"lr/{g_i}", float(lr)))

    def _optimizer_grads(self) -> list[torch.Tensor]:
        out = []
        for e in self.catalogue.entries:
            g = e.param.grad
            if e.in_optimizer and g is not None and not g.is_sparse:
                out.append(_local(g))
        return out

    @staticmethod
    def _global_norm(grads: list[torch.Tensor]) -> torch.Tensor | None:
        """The global norm by the rule of :mod:`gradlog.recorder.norms` (the writer's too)."""
        return norms.device_norm(grads)

    def _record_grads(self, pending: _PendingStep, step: int) -> Segment | None:
        """Gradient statistics (or only the global norm, off the grads schedule) and the
        exponent histogram of the gradients present now; returns the segment holding the norm."""
        none = 0
        with_grad: list[int] = []
        grads: list[torch.Tensor] = []
        for i, param, in_optimizer, recorded in self._slots:
            g = param.grad
            if g is None:
                if in_optimizer and param.requires_grad:
                    none += 1
                continue
            if g.is_sparse:
                name = self.catalogue.entries[i].name
                self._warn("sparse", f"gradlog: sparse gradient of {name} is not recorded")
                continue
            if not recorded:  # complex: see the catalogue's not_recorded
                continue
            with_grad.append(i)
            grads.append(_local(g))
        pending.grads_none = none
        key = tuple(with_grad)
        layout = self._grad_layout
        if layout is None or layout[0] != key:  # the same rows as last step, almost always
            entries = self.catalogue.entries
            in_opt = [entries[i].in_optimizer for i in with_grad]
            layout = (key, _frozen_array(with_grad, np.int32), _frozen_array(in_opt, np.bool_))
            self._grad_layout = layout
        _, idx, norm_rows = layout
        run = self._schedules
        seg: Segment | None = None
        hist: torch.Tensor | np.ndarray | None = None
        want_hist = bool(grads) and run["hists"](step)
        if grads and run["grads"](step):
            # One pass for both; the numba kernel's numpy arrays go to the writer as they are.
            stats, hist = stats_and_histogram_arrays(grads, hist=want_hist)
            # norm_rows: the rows from which the writer derives the global norm
            seg = Segment("stats", 0, 0, _KIND["grad"], idx, norm_rows=norm_rows)
            pending.parts.append((seg, stats))
            pending.tensor_stats = True
        else:
            # Global norm of what the optimizer sees, NaN when any element is non-finite.
            opt_grads = [g for g, o in zip(grads, norm_rows, strict=True) if o]
            total = self._global_norm(opt_grads)
            if total is not None:
                seg = Segment("grad_norm", 0, 0)
                pending.parts.append((seg, total))
        if want_hist:
            hist = exponent_histogram(grads) if hist is None else hist
            pending.parts.append((Segment("hist", 0, 0, _KIND["grad"], idx), hist))
        return seg

    def _params_and_snapshot(self, pending: _PendingStep, step: int, skipped: bool) -> None:
        """Parameter statistics before the update; a copy for the update (post-hook). When
        both are due, the statistics of the updated parameters come from the copying pass."""
        run = self._schedules
        want_params = run["params"](step) and bool(self._recordable)
        entries = self.catalogue.entries
        updated: torch.Tensor | None = None  # statistics of the updated parameters
        if run["updates"](step) and not skipped:
            params = [_local(entries[i].param.detach()) for i in self._updated]
            copies = self._copies_of(params)
            updated = copy_and_stats(params, copies, stats=want_params)  # one read of each
            self._snapshot = (self._updated_idx, copies)
        if not want_params:
            return
        if updated is None:
            stats = tensor_stats([_local(entries[i].param.detach()) for i in self._recordable])
        elif self._not_updated:  # frozen parameters too: their rows, then catalogue order
            rest = tensor_stats([_local(entries[i].param.detach()) for i in self._not_updated])
            device = updated.device
            order = self._param_order.get(device)
            if order is None:  # once per device: no host-to-device copy on later steps
                order = self._param_order[device] = self._param_order[_CPU].to(device)
            stats = torch.cat([updated, rest.to(device)])[order]
        else:
            stats = updated
        pending.parts.append((Segment("stats", 0, 0, _KIND["param"], self._recordable_idx), stats))

    def _copies_of(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Buffers for a copy of ``params``. CPU buffers are kept and reused at the next update
        step (the same memory as a fresh copy, without the page faults of allocating it anew
        every time); on accelerators a fresh copy returns its memory to the caching allocator
        between update steps, for the activations."""
        kept = self._snapshot_buffers
        if len(kept) == len(params) and all(
            b.shape == p.shape and b.dtype == p.dtype and b.device == p.device
            for b, p in zip(kept, params, strict=True)
        ):
            return kept
        copies = [torch.empty_like(p, memory_format=torch.contiguous_format) for p in params]
        if all(p.device.type == "cpu" for p in params):
            self._snapshot_buffers = copies
        else:
            self._snapshot_buffers = []
        return copies

    # ----------------------------------------------------------------- loops without optimizer
    def _manual_snapshot(self, step: int) -> None:
        """Copy the parameters when ``step`` records them or its update (optimizer=None)."""
        run = self._schedules
        self._manual_before = None
        if run["params"](step) or run["updates"](step):
            entries = self.catalogue.entries
            params = [_local(entries[i].param.detach()) for i in self._recordable]
            if params:
                with torch.no_grad():
                    copies = torch._foreach_mul(params, 1.0)
                self._manual_before = dict(zip(self._recordable, copies, strict=True))

    def _manual_step(self, lr: float | torch.Tensor | None) -> None:
        step = self._step
        self._on_step_begin(False)
        if lr is not None and self._pending is not None and self._pending.step == step:
            if isinstance(lr, torch.Tensor):
                self._pending.scalar_tensors.append(("lr/0", lr.detach().reshape(1).clone()))
            else:
                self._pending.scalars.append((step, "lr/0", float(lr)))
        self._manual_snapshot(step + 1)

    def _manual_params(self, pending: _PendingStep, step: int) -> None:
        """Parameters before this step's update and the update (after - before), from the copy
        taken after the previous step."""
        before, self._manual_before = self._manual_before, None
        if before is None:
            return
        run = self._schedules
        entries = self.catalogue.entries
        if run["params"](step):
            pidx = np.array(list(before), dtype=np.int32)
            stats = tensor_stats(list(before.values()))
            pending.parts.append((Segment("stats", 0, 0, _KIND["param"], pidx), stats))
        if run["updates"](step):
            chosen = [i for i in before if entries[i].in_optimizer]
            if chosen:
                mine = [before[i] for i in chosen]
                after = [_local(entries[i].param.detach()) for i in chosen]
                stats = update_stats(mine, after)  # may overwrite the copy: no new buffers
                uidx = np.array(chosen, dtype=np.int32)
                pending.parts.append((Segment("stats", 0, 0, _KIND["update"], uidx), stats))

    def _on_step_end(self) -> None:
        if self._snapshot is None or self._pending is None:
            return
        uidx, before = self._snapshot
        self._snapshot = None
        after = [_local(self.catalogue.entries[i].param.detach()) for i in uidx.tolist()]
        with torch.no_grad():
            stats = update_stats(before, after)  # may overwrite the snapshot: no new buffers
        self._pending.parts.append((Segment("stats", 0, 0, _KIND["update"], uidx), stats))

    def _dispatch(self, pending: _PendingStep) -> None:
        """Concatenate a step's results, start its one device-to-host copy, queue it."""
        parts: list[tuple[Segment, torch.Tensor | np.ndarray]] = list(pending.parts)
        if pending.scalar_tensors:
            names = [n for n, _ in pending.scalar_tensors]
            values = [t for _, t in pending.scalar_tensors]
            if all(v.device.type == "cpu" for v in values):  # no copy to wait for: floats
                scalars = np.array([float(v) for v in values], dtype=np.float64)
                parts.append((Segment("scalars", 0, 0, names=names), scalars))
            elif len({v.device for v in values}) == 1:
                parts.append(
                    (
                        Segment("scalars", 0, 0, names=names),
                        torch.cat([v.to(torch.float64) for v in values]),
                    )
                )
            else:
                for key, v in zip(names, values, strict=True):
                    parts.append((Segment("scalars", 0, 0, names=[key]), v.to(torch.float64)))
        host_parts: list[tuple[Segment, np.ndarray]] = []
        dev_parts: list[tuple[Segment, torch.Tensor]] = []
        for seg, t in parts:
            if isinstance(t, np.ndarray):
                host_parts.append((seg, t))
            elif t.device.type == "cpu":
                host_parts.append((seg, _as_numpy(t)))
            else:
                dev_parts.append((seg, t))
        offset = 0
        segments: list[Segment] = []
        for seg, t in host_parts:
            seg.offset, seg.length = offset, t.size
            offset += t.size
            segments.append(seg)
        for seg, d in dev_parts:
            n = d.numel()
            seg.offset, seg.length = offset, n
            offset += n
            segments.append(seg)
        # CPU results join with numpy: a dozen small torch calls per step cost more here.
        if len(host_parts) == 1 and host_parts[0][1].dtype == np.float64:
            host = host_parts[0][1].reshape(-1)  # the step's own array: nothing to join
        elif host_parts:
            host = np.concatenate([t.reshape(-1) for _, t in host_parts], dtype=np.float64)
        else:
            host = np.empty(0)
        ready: Callable[[], None] | None = None
        buffer: Any = host
        if dev_parts:
            device_flat = torch.cat(
                [t.reshape(-1).to(dev_parts[0][1].device, torch.float64) for _, t in dev_parts]
            )
            pinned = torch.empty(device_flat.shape, dtype=torch.float64, pin_memory=True)
            pinned.copy_(device_flat, non_blocking=True)  # the step's single device-to-host copy
            event = _record_event(device_flat.device)
            if event is not None:
                ready = event.synchronize  # waited on by the writer thread, not here
            buffer = _Concat(host, pinned)
        packet = Packet(
            step=pending.step,
            time=pending.time,
            segments=segments,
            buffer=buffer,
            ready=ready,
            scalars=pending.scalars,
            grads_none=pending.grads_none,
            tensor_stats=pending.tensor_stats,
            skipped=pending.skipped,
            step_row=pending.step_row,
        )
        if not self.writer.submit(packet, block=self.strict):
            self._warn(
                "queue",
                "gradlog: the writer queue is full (slow disk?); dropping steps, counted in "
                "meta.json counters.dropped_steps",
            )

    # ----------------------------------------------------------------- plumbing
    def _check_writer(self) -> None:
        err = self.writer.pending_error if hasattr(self, "writer") else None
        if err is None:
            return
        self.writer.pending_error = None
        if self.strict:
            raise WriterError(f"gradlog writer failed: {err!r}") from err
        self._warn(
            "writer",
            f"gradlog: writer error, some data was dropped (see meta.json counters): {err!r}",
        )

    def _drop_scalars(self, n: int, why: str) -> None:
        self._dropped_scalars += n
        self._warn(
            "scalar",
            f"gradlog: dropped a scalar passed to log() ({why}); counted in "
            "meta.json counters.dropped_scalars",
        )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, GradlogWarning, stacklevel=3)

    def _write_meta(self) -> None:
        with self._meta_lock:
            self._meta["heartbeat"] = time.time()
            if hasattr(self, "writer"):
                self._meta["counters"] = {
                    **self.writer.counters.to_json(),
                    "dropped_scalars": self._dropped_scalars,
                }
                self._meta["errors"] = list(self.writer.errors)
            self._meta["last_step"] = self._step - 1
            meta = dict(self._meta)
            # A full disk must not stop training; the parts already written stay valid.
            with contextlib.suppress(OSError):
                write_json_atomic(meta_path(self.run_dir, self.rank), meta)

    def _atexit(self) -> None:
        if not self._closed and os.getpid() == self._pid:
            # The interpreter sets sys.last_value when an uncaught exception ended the program
            # (IPython sets it for every error it shows: one from before this run is not ours).
            exc = getattr(sys, "last_value", None)
            if exc is self._last_value_at_start:
                exc = None
            self.close(*exit_status(exc))


def _scalar(key: str, value: Any) -> float | torch.Tensor:
    """``value`` as a float or a one-element tensor copy; ValueError says why it cannot be."""
    if not isinstance(key, str) or not key or len(key) > MAX_SCALAR_NAME:
        raise ValueError(f"scalar names must have 1..{MAX_SCALAR_NAME} characters")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{key}: a tensor of shape {tuple(value.shape)}, not one element")
        if value.is_complex():
            raise ValueError(f"{key}: a complex tensor")
        if value.is_cpu:  # read now: no device to wait for, and cheaper than a copy
            with contextlib.suppress(RuntimeError):  # e.g. a fake tensor: copied as before
                return float(value.item())
        # A copy: the tensor may change in place before this step is dispatched.
        return value.detach().reshape(1).clone()
    if isinstance(value, (complex, np.complexfloating, str, bytes)) or value is None:
        raise ValueError(f"{key}: {type(value).__name__} is not a real number")
    size = getattr(value, "size", None)
    if isinstance(value, np.ndarray) and size != 1:
        raise ValueError(f"{key}: an array of shape {value.shape}, not one element")
    try:
        out = float(value.item() if isinstance(value, np.ndarray) else value)
    except OverflowError:  # an int beyond the float range
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key}: {type(value).__name__} is not a number ({exc})") from None
    return out


def exit_status(exc: BaseException | None) -> tuple[str, str | None]:
    """meta.json status and error for a run ended by ``exc`` (None: a normal end):
    ``SystemExit(0)`` finishes, ``KeyboardInterrupt`` interrupts, anything else crashes."""
    if exc is None:
        return "finished", None
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "finished", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt"
    return "crashed", f"{type(exc).__name__}: {exc}"


def _forget(pending: _PendingStep, key: str) -> None:
    """Drop an earlier value of scalar ``key`` from ``pending`` (one value per step and name)."""
    if any(k == key for k, _ in pending.scalar_tensors):
        pending.scalar_tensors = [(k, t) for k, t in pending.scalar_tensors if k != key]
    if any(k == key for _, k, _ in pending.scalars):
        pending.scalars = [row for row in pending.scalars if row[1] != key]


class _Concat:
    """A host buffer made of an immediate CPU part and a pinned part filled by an async copy."""

    def __init__(self, host: np.ndarray, pinned: torch.Tensor) -> None:
        self.host = host
        self.pinned = pinned
        self.nbytes = host.nbytes + pinned.numel() * 8

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([self.host, self.pinned.numpy()])
        return out if dtype is None else out.astype(dtype)


def _frozen_array(values: list[int] | list[bool], dtype: type[np.generic]) -> np.ndarray:
    """A read-only array (shared by the packets of many steps)."""
    out = np.array(values, dtype=dtype)
    out.flags.writeable = False
    return out


def _as_numpy(t: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    if t.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
        t = t.to(torch.float32)
    return t.numpy()


def _record_event(device: torch.device) -> Any:
    if device.type == "cuda":
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record(torch.cuda.current_stream(device))
        return event
    return None
