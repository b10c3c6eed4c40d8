"""The Recorder: attaches to an optimizer with one line and records every step's gradients.

Hook points: the optimizer's step pre-hook (gradients after accumulation, clipping and AMP
unscaling; parameters before the update) and step post-hook (updates). Statistics are computed
on the device by :mod:`gradlog.recorder.stats`; each step's results are concatenated and moved
to the host with one copy (non-blocking into pinned memory on CUDA), then handed to the
background :class:`~gradlog.recorder.writer.Writer`.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from gradlog.errors import ConfigError, GradlogWarning, WriterError
from gradlog.recorder import schedules as sched
from gradlog.recorder.catalogue import Catalogue, build_catalogue
from gradlog.recorder.meta import base_meta, jsonable, meta_path, write_json_atomic
from gradlog.recorder.naming import create_run_dir, validate_name
from gradlog.recorder.stats import exponent_histogram, negate_stats, tensor_stats
from gradlog.recorder.writer import Packet, Segment, Writer

MAX_SCALAR_NAME = 256
_KIND = {"grad": 0, "param": 1, "update": 2}


@dataclass
class _PendingStep:
    """A step whose device results wait for the scalars logged after it, then one copy."""

    step: int
    time: float
    parts: list[tuple[Segment, torch.Tensor]] = field(default_factory=list)
    scalar_tensors: list[tuple[str, torch.Tensor]] = field(default_factory=list)
    scalars: list[tuple[int, str, float]] = field(default_factory=list)
    grads_none: int = 0
    tensor_stats: bool = False
    skipped: bool | None = None
    step_row: bool = False  # True once the optimizer step itself was seen (not only log() calls)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2, tensor parallel); the tensor itself otherwise."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def _optimizer_hparams(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"class": type(optimizer).__name__, "param_groups": jsonable(groups)}


class Recorder:
    """Record gradient statistics of ``model`` at every ``optimizer`` step into ``root``.

    Use as a context manager or call :meth:`close`. ``grads``, ``params``, ``updates`` and
    ``hists`` are schedules (``step -> bool``), an int n (every n steps), True or False.
    ``scaler`` is an AMP GradScaler whose loss scale and skipped steps are recorded.
    With ``strict=True`` a full queue blocks and writer errors raise; by default the recorder
    drops data with a counter and a single warning instead of disturbing training.
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
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
    ) -> None:
        if model is not None and not isinstance(model, torch.nn.Module):
            raise ConfigError(
                f"model must be a torch.nn.Module or None, got {type(model).__name__}"
            )
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ConfigError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
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
        if not isinstance(max_queue_bytes, int) or max_queue_bytes < 1 << 16:
            raise ConfigError(f"max_queue_bytes must be an int >= 65536, got {max_queue_bytes!r}")
        if name is None:
            model_name = type(model).__name__ if model is not None else "model"
            name = f"{model_name}-{type(optimizer).__name__}"
        self.name = validate_name(name)
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
                holder = [create_run_dir(Path(root), self.name).name if self.rank == 0 else None]
                torch.distributed.broadcast_object_list(holder, src=0)
                run_id = holder[0]
        self.catalogue: Catalogue = build_catalogue(model, optimizer)
        self._opt_ids = {id(p) for g in optimizer.param_groups for p in g["params"]}
        self.run_dir = create_run_dir(Path(root), self.name, run_id)
        self._start = time.time()
        self._meta_lock = threading.Lock()
        self._meta: dict[str, Any] = base_meta(self.run_dir.name, self.name, self._start)
        self._meta.update(
            world_size=self.world_size,
            rank=self.rank,
            config=jsonable(config or {}),
            optimizer=_optimizer_hparams(optimizer),
            tensors=self.catalogue.to_json(),
            schedules={k: sched.describe(v) for k, v in self._schedules.items()},
            scaler=type(scaler).__name__ if scaler is not None else None,
        )
        self._step = 0
        self._pending: _PendingStep | None = None
        self._snapshot: tuple[np.ndarray, list[torch.Tensor]] | None = None
        self._closed = False
        self._disabled = False
        self._warned: set[str] = set()
        self._lock = threading.RLock()
        self._order: dict[str, int] = {}  # name -> arrival index (a list would be O(n**2))
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
        self._handles = [
            optimizer.register_step_pre_hook(self._pre_hook),
            optimizer.register_step_post_hook(self._post_hook),
        ]
        self._order_handles = self._watch_backward_order()
        self._scaler_step: Callable[..., Any] | None = None
        if scaler is not None:
            self._wrap_scaler(scaler)
        atexit.register(self._atexit)

    # ----------------------------------------------------------------- public API
    @property
    def step(self) -> int:
        """Index of the most recent optimizer step seen (-1 before the first)."""
        return self._step - 1

    def log(self, **scalars: float | int | torch.Tensor) -> None:
        """Record scalars for the current step (the last optimizer step; step 0 before any).

        Tensors are fine and are not synchronised: they travel with the step's single copy.
        """
        self._check_writer()
        if self._closed:
            raise ConfigError("Recorder.log() called after close(); log before closing")
        with self._lock:
            pending = self._pending_for_log()
            for key, value in scalars.items():
                if not key or len(key) > MAX_SCALAR_NAME:
                    raise ConfigError(f"scalar names must have 1..{MAX_SCALAR_NAME} characters")
                if isinstance(value, torch.Tensor):
                    if value.numel() != 1:
                        raise ConfigError(
                            f"log({key}=...) got a tensor of shape {tuple(value.shape)}; "
                            "pass a single-element tensor (e.g. loss, not the per-sample losses)"
                        )
                    # A copy: the tensor may change in place before this step is dispatched.
                    pending.scalar_tensors.append((key, value.detach().reshape(1).clone()))
                elif isinstance(value, (int, float, np.number)) and not isinstance(value, complex):
                    pending.scalars.append((pending.step, key, float(value)))
                else:
                    raise ConfigError(
                        f"log({key}=...) got {type(value).__name__}; pass a number or a "
                        "single-element tensor"
                    )

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` over the optimizer's parameters; logs the
        pre-clip norm as ``grad_norm_preclip`` (no host sync)."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
        with self._lock:
            pending = self._pending_for_log(upcoming=True)
            pending.scalar_tensors.append(("grad_norm_preclip", total.detach().reshape(1)))
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
        """Detach, write the last parts and finalise meta.json. Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for h in self._handles + self._order_handles:
                h.remove()
            self._order_handles = []
            if self.scaler is not None and self._scaler_step is not None:
                with contextlib.suppress(AttributeError):
                    del self.scaler.step  # drop the instance attribute: the class method is back
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
        if exc_type is None:
            self.close()
        else:
            self.close(status="crashed", error=f"{exc_type.__name__}: {exc}")

    # ----------------------------------------------------------------- hooks
    def _pre_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._safely(self._on_step_begin, False)

    def _post_hook(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._safely(self._on_step_end)

    def _safely(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a hook body; a recorder bug disables recording with a warning (raises if strict)."""
        if self._disabled or self._closed:
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
            if optimizer is self.optimizer and self._step == before:
                self._safely(self._on_step_begin, True)  # gradients are unscaled (and non-finite)
            return result

        scaler.step = step

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

    def _on_step_begin(self, skipped: bool) -> None:
        step = self._step
        if self._order_handles:
            for h in self._order_handles:
                h.remove()
            self._order_handles = []
            order = self._order
            for e in self.catalogue.entries:
                e.backward_order = order.get(e.name)
            with self._meta_lock:
                self._meta["tensors"] = self.catalogue.to_json()
        if self._pending is not None and self._pending.step != step:
            self._dispatch(self._pending)
            self._pending = None
        pending = self._pending or _PendingStep(step=step, time=time.time())
        self._pending = pending
        pending.time = time.time()
        pending.step_row = True
        pending.skipped = skipped if self.scaler is not None else None
        self._step += 1

        with_grad: list[int] = []
        grads: list[torch.Tensor] = []
        opt_grads: list[torch.Tensor] = []
        in_opt: list[bool] = []
        for i, e in enumerate(self.catalogue.entries):
            g = e.param.grad
            if g is None:
                if e.in_optimizer and e.param.requires_grad:
                    pending.grads_none += 1
                continue
            if g.is_sparse:
                self._warn("sparse", f"gradlog: sparse gradient of {e.name} is not recorded")
                continue
            g = _local(g)
            with_grad.append(i)
            grads.append(g)
            in_opt.append(e.in_optimizer)
            if e.in_optimizer:
                opt_grads.append(g)
        idx = np.array(with_grad, dtype=np.int32)
        run = self._schedules
        if grads and run["grads"](step):
            stats = tensor_stats(grads)
            norm_rows = np.array(in_opt, dtype=bool)  # the writer derives the global norm
            seg = Segment("stats", 0, 0, _KIND["grad"], idx, norm_rows=norm_rows)
            pending.parts.append((seg, stats))
            pending.tensor_stats = True
        elif opt_grads:
            # Global norm of what the optimizer sees, NaN/Inf when any element is non-finite.
            # Accumulated and returned in float32 at least (bf16/fp16 norms would be rounded).
            wide = any(g.dtype == torch.float64 for g in opt_grads)
            norms = torch._foreach_norm(
                opt_grads, 2, dtype=torch.float64 if wide else torch.float32
            )
            total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
            total = torch.where(torch.isfinite(total), total, torch.nan)  # as the writer does
            pending.parts.append((Segment("grad_norm", 0, 0), total.reshape(1)))
        if grads and run["hists"](step):
            hist = exponent_histogram(grads)
            pending.parts.append((Segment("hist", 0, 0, _KIND["grad"], idx), hist))
        if run["params"](step):
            entries = list(range(len(self.catalogue.entries)))
            params = [_local(self.catalogue.entries[i].param.detach()) for i in entries]
            if params:
                pidx = np.array(entries, dtype=np.int32)
                stats = tensor_stats(params)
                pending.parts.append((Segment("stats", 0, 0, _KIND["param"], pidx), stats))
        if run["updates"](step) and not skipped:
            chosen = [i for i, e in enumerate(self.catalogue.entries) if e.in_optimizer]
            params = [_local(self.catalogue.entries[i].param.detach()) for i in chosen]
            self._snapshot = (
                np.array(chosen, dtype=np.int32),
                list(torch._foreach_mul(params, 1.0)),
            )
        if self.scaler is not None:
            scale = getattr(self.scaler, "_scale", None)
            if isinstance(scale, torch.Tensor):
                # A copy: scaler.update() changes the scale in place before the dispatch.
                scale = scale.detach().reshape(1).clone()
                pending.parts.append((Segment("loss_scale", 0, 0), scale))
        for g_i, group in enumerate(self.optimizer.param_groups):
            lr = group.get("lr")
            if isinstance(lr, torch.Tensor):
                pending.scalar_tensors.append((f"lr/{g_i}", lr.detach().reshape(1).clone()))
            elif isinstance(lr, (int, float)):
                pending.scalars.append((step, f"lr/{g_i}", float(lr)))

    def _on_step_end(self) -> None:
        if self._snapshot is None or self._pending is None:
            return
        uidx, before = self._snapshot
        self._snapshot = None
        after = [_local(self.catalogue.entries[i].param.detach()) for i in uidx]
        torch._foreach_sub_(before, after)  # before - after = -update, exactly; no new buffers
        stats = negate_stats(tensor_stats(before))
        self._pending.parts.append((Segment("stats", 0, 0, _KIND["update"], uidx), stats))

    def _dispatch(self, pending: _PendingStep) -> None:
        """Concatenate a step's results, start its one device-to-host copy, queue it."""
        parts: list[tuple[Segment, torch.Tensor | np.ndarray]] = list(pending.parts)
        if pending.scalar_tensors:
            names = [n for n, _ in pending.scalar_tensors]
            values = [t for _, t in pending.scalar_tensors]
            devices = {v.device for v in values}
            if devices == {torch.device("cpu")}:  # no copy to wait for: plain floats
                scalars = np.array([float(v) for v in values], dtype=np.float64)
                parts.append((Segment("scalars", 0, 0, names=names), scalars))
            elif len(devices) == 1:
                parts.append(
                    (
                        Segment("scalars", 0, 0, names=names),
                        torch.cat([v.to(torch.float64) for v in values]),
                    )
                )
            else:
                for key, v in zip(names, values, strict=True):
                    parts.append((Segment("scalars", 0, 0, names=[key]), v.to(torch.float64)))
        host_parts = [(s, t) for s, t in parts if _on_host(t)]
        dev_parts = [(s, t) for s, t in parts if isinstance(t, torch.Tensor) and not _on_host(t)]
        offset = 0
        segments: list[Segment] = []
        for seg, t in host_parts + dev_parts:
            n = t.size if isinstance(t, np.ndarray) else t.numel()
            seg.offset, seg.length = offset, n
            offset += n
            segments.append(seg)
        # CPU results join with numpy: a dozen small torch calls per step cost more here.
        flat_host = [_as_numpy(t).reshape(-1) for _, t in host_parts]
        host = np.concatenate(flat_host).astype(np.float64) if flat_host else np.empty(0)
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

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, GradlogWarning, stacklevel=3)

    def _write_meta(self) -> None:
        with self._meta_lock:
            self._meta["heartbeat"] = time.time()
            if hasattr(self, "writer"):
                self._meta["counters"] = self.writer.counters.to_json()
                self._meta["errors"] = list(self.writer.errors)
            meta = dict(self._meta)
            # A full disk must not stop training; the parts already written stay valid.
            with contextlib.suppress(OSError):
                write_json_atomic(meta_path(self.run_dir, self.rank), meta)

    def _atexit(self) -> None:
        if not self._closed:
            # The interpreter sets sys.last_value when an uncaught exception ended the program.
            exc = getattr(sys, "last_value", None)
            if exc is not None:
                self.close(status="crashed", error=f"{type(exc).__name__}: {exc}")
            else:
                self.close(status="finished")


class _Concat:
    """A host buffer made of an immediate CPU part and a pinned part filled by an async copy."""

    def __init__(self, host: np.ndarray, pinned: torch.Tensor) -> None:
        self.host = host
        self.pinned = pinned
        self.nbytes = host.nbytes + pinned.numel() * 8

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([self.host, self.pinned.numpy()])
        return out if dtype is None else out.astype(dtype)


def _on_host(t: torch.Tensor | np.ndarray) -> bool:
    return isinstance(t, np.ndarray) or t.device.type == "cpu"


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
