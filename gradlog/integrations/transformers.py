"""Hugging Face ``Trainer`` callback: ``Trainer(..., callbacks=[GradlogCallback(root="runs")])``.

One gradlog run per ``Trainer.train()``. The callback only forwards the Trainer's events to a
:class:`~gradlog.recorder.Recorder`, which does all the measuring:

- ``on_train_begin`` creates the Recorder on the Trainer's model and (accelerate-wrapped)
  optimizer. The optimizer's step hooks record one step per optimizer step, with the gradients
  accumulated over ``gradient_accumulation_steps``. The Trainer clips through accelerate, which
  calls ``torch.nn.utils.clip_grad_norm_``, so the Recorder's clipping watch takes the
  statistics before the clip: scalars ``grad_norm_preclip`` (what the Trainer logs as
  ``grad_norm``) and ``grad_clip_limit`` (``max_grad_norm``), and ``steps.grad_norm`` after
  the clip. With ``max_grad_norm=0`` the Trainer only measures the norm (a clip with an
  infinite limit): ``steps.grad_norm`` is that norm and no pre-clip scalars are written.
- ``on_log`` records the numeric entries of the Trainer's logs (``loss``, ``learning_rate``,
  ``epoch``, ``eval_*``, ``train_runtime``, ...) under their own names at the last optimizer
  step, each name once per step (the first value: the final metrics repeat ``epoch``). The
  Trainer's ``grad_norm`` is not copied: the Recorder measures it itself. The Trainer's ``loss``
  is the mean over its logging window (the last ``logging_steps`` optimizer steps, averaged
  over ranks), so it is the step's own loss only with ``logging_steps=1``.
- ``on_train_end`` closes the run as finished.

The Trainer has no event for a failed ``train()``. When ``Trainer.__init__`` or ``train()``
first calls the callback, it finds its Trainer up the call stack (and fails with ConfigError
when that Trainer has a second GradlogCallback), then wraps that Trainer's ``train`` (an
instance attribute holding the Trainer weakly, which pickles), so an exception closes the run
as crashed, with the error, before it propagates. A callback added with ``add_callback`` is
first seen inside its first ``train()``: if that call fails, the Recorder's exit handler marks
the run crashed when the exception ends the process, and the next ``train()`` with this
callback closes the dangling run as crashed.

Recorder step ``s`` is the Trainer's ``global_step`` ``s + 1``, also in a ``train()`` resumed
from a checkpoint: its run's first step is the checkpoint's ``global_step`` (also kept in the
run's config as ``initial_global_step``), so the steps of a resumed run line up with those of
the run it continues.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import warnings
import weakref
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:
    raise ImportError(
        "gradlog.integrations.transformers needs the transformers package: "
        "pip install 'torch-gradlog[transformers]'"
    ) from exc

import torch

from gradlog.errors import ConfigError, GradlogWarning
from gradlog.integrations import run_options
from gradlog.recorder import schedules as sched
from gradlog.recorder.meta import jsonable
from gradlog.recorder.recorder import MAX_SCALAR_NAME, Recorder, exit_status

__all__ = ["GradlogCallback"]

SKIPPED_LOGS = frozenset({"grad_norm"})
"""Trainer log entries not copied: the Recorder measures the gradient norm itself."""

_MAX_FRAMES = 12  # how far up the call stack the callback looks for its Trainer


class GradlogCallback(TrainerCallback):
    """Record the gradients of every ``Trainer.train()`` into a gradlog run under ``root``.

    ``name`` defaults to the model's class name; ``grads``, ``params``, ``updates``, ``hists``,
    ``strict`` and ``only_optimizer_params`` are the Recorder's. The run's config is
    ``TrainingArguments.to_dict()``, the model's config under ``model_config``, then
    ``config`` (the user's keys win). Under DDP every rank writes its own parts into one run.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "runs",
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        grads: sched.Schedule | int | bool = True,
        params: sched.Schedule | int | bool = 10,
        updates: sched.Schedule | int | bool = 10,
        hists: sched.Schedule | int | bool = 50,
        strict: bool = False,
        only_optimizer_params: bool = False,
    ) -> None:
        self.root, self.name, self.config = run_options(root, name, config)
        for what, flag in (("strict", strict), ("only_optimizer_params", only_optimizer_params)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{what} must be True or False, got {flag!r}")
        schedules = {"grads": grads, "params": params, "updates": updates, "hists": hists}
        for what, value in schedules.items():
            sched.as_schedule(value, what)  # validated now, used when training starts
        self.strict = strict
        self._recorder_kwargs: dict[str, Any] = {
            **schedules,
            "strict": strict,
            "only_optimizer_params": only_optimizer_params,
        }
        self._recorder: Recorder | None = None
        self._state: weakref.ref[TrainerState] | None = None  # of the train() being recorded
        self._logged: tuple[int, set[str]] = (-1, set())  # names logged at a step: once each
        self._broken = False  # the callback's own logging failed once: it stopped

    @property
    def recorder(self) -> Recorder | None:
        """The Recorder of the current (or last) ``train()``, e.g. to log more scalars."""
        return self._recorder

    # ----------------------------------------------------------------- Trainer events
    def on_init_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Fail if the Trainer has another GradlogCallback; guard its ``train()``."""
        self._attach(sys._getframe(1))

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Create the Recorder on the Trainer's model and optimizer."""
        previous = self._recorder
        if previous is not None and not previous.closed:
            if self._state is not None and self._state() is state:
                raise ConfigError(  # the handler called this instance twice for one event
                    "the Trainer has the same GradlogCallback 2 times in its callbacks; "
                    "attach exactly one"
                )
            self._close(  # the last train() raised without a guard (see the module docs)
                "crashed", "train() ended without on_train_end (an exception?)"
            )
        self._attach(sys._getframe(1))
        if model is None or optimizer is None:
            raise ConfigError(
                "GradlogCallback needs the Trainer's model and optimizer at on_train_begin; got "
                f"model={type(model).__name__}, optimizer={type(optimizer).__name__}"
            )
        self._state, self._logged, self._broken = weakref.ref(state), (-1, set()), False
        try:
            self._recorder = Recorder(
                model,
                optimizer,
                root=self.root,
                name=self.name if self.name is not None else type(model).__name__,
                config=self._run_config(args, state, model),
                first_step=int(state.global_step or 0),
                **self._recorder_kwargs,
            )
        except ConfigError:
            raise  # a usage error (e.g. another Recorder on this optimizer): before training
        except Exception as exc:
            if self.strict:
                raise
            self._recorder = None
            self._warn(f"gradlog: could not start recording: {exc!r}")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Record the numeric log entries (but ``grad_norm``) at the last optimizer step."""
        rec = self._recorder
        if rec is None or rec.closed or self._broken or not logs:
            return
        try:
            self._log(rec, logs)
        except Exception as exc:
            if self.strict:
                raise
            self._broken = True
            self._warn(f"gradlog: stopped copying the Trainer's logs after an error: {exc!r}")

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the run as finished."""
        self._close("finished")

    # ----------------------------------------------------------------- work
    def _log(self, rec: Recorder, logs: Mapping[str, Any]) -> None:
        step = max(rec.last_step, 0)  # where Recorder.log puts them
        if self._logged[0] != step:
            self._logged = (step, set())
        seen = self._logged[1]
        scalars = {
            key: value
            for key, value in logs.items()
            if isinstance(key, str)
            and 0 < len(key) <= MAX_SCALAR_NAME
            and key not in SKIPPED_LOGS
            and key not in seen
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        }
        if scalars:
            seen.update(scalars)
            rec.log(**scalars)

    def _run_config(
        self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module
    ) -> dict[str, Any]:
        """TrainingArguments, the model's config and the user's config, JSON-safe."""
        args_to_dict: Callable[[], dict[str, Any]] = args.to_dict  # untyped upstream
        config: dict[str, Any] = dict(jsonable(args_to_dict()))
        to_dict = getattr(getattr(model, "config", None), "to_dict", None)
        if callable(to_dict):
            with contextlib.suppress(Exception):  # a custom model config must not stop training
                config["model_config"] = jsonable(to_dict())
        if state.global_step:
            config["initial_global_step"] = int(state.global_step)  # resumed from a checkpoint
        config.update(jsonable(self.config))
        return config

    def _close(self, status: str, error: str | None = None) -> None:
        rec = self._recorder
        if rec is None or rec.closed:
            return
        try:
            rec.close(status=status, error=error)
        except Exception as exc:
            if self.strict and status == "finished":
                raise
            self._warn(f"gradlog: could not close run {rec.run_id}: {exc!r}")

    def _crashed(self, exc: BaseException) -> None:
        """Close the open run as crashed with ``exc`` (never raises: ``exc`` must propagate)."""
        with contextlib.suppress(Exception):
            self._close(*exit_status(exc))  # Ctrl-C is 'interrupted', not 'crashed'

    # ----------------------------------------------------------------- finding the Trainer
    def _attach(self, frame: FrameType | None) -> None:
        """Check that the calling Trainer has one GradlogCallback and guard its ``train()``."""
        trainer = self._find_trainer(frame)
        if trainer is None:
            return  # not called by a Trainer: the Recorder still refuses a second recorder
        mine = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GradlogCallback)]
        if len(mine) > 1:
            what = (
                f"the same GradlogCallback {len(mine)} times"
                if len({id(cb) for cb in mine}) == 1
                else f"{len(mine)} GradlogCallbacks"
            )
            raise ConfigError(f"the Trainer has {what} in its callbacks; attach exactly one")
        self._guard(trainer)

    def _find_trainer(self, frame: FrameType | None) -> Any:
        """The Trainer calling this callback: a ``self`` up the stack whose callback handler
        holds this callback; None when there is none."""
        for _ in range(_MAX_FRAMES):
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            callbacks = getattr(getattr(owner, "callback_handler", None), "callbacks", None)
            if isinstance(callbacks, list) and any(cb is self for cb in callbacks):
                return owner
            frame = frame.f_back
        return None

    def _guard(self, trainer: Any) -> None:
        """Wrap ``trainer.train`` (once) so that an exception closes the run as crashed."""
        current = trainer.train
        if isinstance(current, _GuardedTrain) and current.callback is self:
            return
        # The Trainer's own method is called through its class; anything else (another
        # wrapper set on the instance) is kept and called as it is.
        own = getattr(current, "__self__", None) is trainer and getattr(
            current, "__func__", None
        ) is getattr(type(trainer), "train", None)
        trainer.train = _GuardedTrain(trainer, self, None if own else current)

    def __getstate__(self) -> dict[str, Any]:
        # A run belongs to the process recording it: a pickled copy (Ray Tune ships the
        # Trainer to its workers) starts without one.
        state = dict(self.__dict__)
        state.update(_recorder=None, _state=None, _logged=(-1, set()))
        return state

    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(message, GradlogWarning, stacklevel=3)


class _GuardedTrain:
    """A Trainer's ``train`` that closes its callback's run as crashed when it raises.

    It holds the Trainer and the callback weakly (no reference cycle keeps a Trainer alive),
    and pickles as a fresh guard of the unpickled Trainer.
    """

    def __init__(
        self, trainer: Any, callback: GradlogCallback, inner: Callable[..., Any] | None
    ) -> None:
        self._trainer = weakref.ref(trainer)
        self._callback = weakref.ref(callback)
        self._inner = inner  # None: the Trainer class's own train
        self.__doc__ = getattr(getattr(type(trainer), "train", None), "__doc__", None)

    @property
    def callback(self) -> GradlogCallback | None:
        """The callback whose run this guard closes."""
        return self._callback()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trainer = self._trainer()
        if trainer is None:  # pragma: no cover - a Trainer is alive while its train() is called
            raise RuntimeError("the Trainer of this train() was garbage-collected")
        try:
            if self._inner is not None:
                return self._inner(*args, **kwargs)
            return type(trainer).train(trainer, *args, **kwargs)
        except BaseException as exc:
            callback = self._callback()
            if callback is not None:
                callback._crashed(exc)
            raise

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (self._trainer(), self._callback(), self._inner))


def _restore(
    trainer: Any, callback: GradlogCallback | None, inner: Callable[..., Any] | None
) -> Callable[..., Any]:
    """Unpickling: the guarded ``train`` of ``trainer``, or the unguarded one without a callback
    (the Trainer's state is not restored yet: only its type is used)."""
    if callback is not None:
        return _GuardedTrain(trainer, callback, inner)
    return inner if inner is not None else types.MethodType(type(trainer).train, trainer)
