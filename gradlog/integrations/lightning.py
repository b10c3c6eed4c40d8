"""Lightning callback: one gradlog run per ``Trainer.fit``, fed from Lightning's own hooks.

Works with ``lightning.pytorch`` and ``pytorch_lightning`` (>= 2.0). The framework is imported
only when a callback is created; the callback then subclasses the ``Callback`` class of each
Lightning package already imported (the one the Trainer comes from), else of the first one
installed. All measuring is done by the :class:`~gradlog.recorder.Recorder`; this module only
forwards hooks to it.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from gradlog.errors import ConfigError, GradlogWarning
from gradlog.integrations import run_options
from gradlog.recorder import Recorder
from gradlog.recorder import schedules as sched
from gradlog.recorder.recorder import exit_status, unwrap_optimizer

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.types import STEP_OUTPUT

# The real base, lightning.pytorch's or pytorch_lightning's Callback (or both), is added when a
# callback is created (see _concrete). Typed as Any, the callback type-checks in either
# package's Trainer; a class cannot statically subclass both (their hook signatures differ).
_CallbackBase: Any = object

_FRAMEWORKS = ("lightning.pytorch", "pytorch_lightning")
# Scalars the Recorder writes itself on clipped steps: a Lightning metric of the same name is
# not copied. A metric named `loss` is copied only on steps where the callback has no loss.
_RESERVED = frozenset({"grad_norm_preclip", "grad_clip_limit"})

_T = TypeVar("_T", bound="GradlogCallback")


def _major(version: object) -> int:
    head = str(version).split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def _callback_bases() -> tuple[type, ...]:
    """The ``Callback`` classes of the Lightning packages (>= 2.0) already imported; when none
    is, of the first one that imports."""
    loaded = [sys.modules[m] for m in _FRAMEWORKS if m in sys.modules]
    if not loaded:
        for name in _FRAMEWORKS:
            try:
                loaded = [importlib.import_module(name)]
            except ImportError:
                continue
            break
    bases = tuple(
        m.Callback
        for m in loaded
        if hasattr(m, "Callback") and _major(getattr(m, "__version__", "")) >= 2
    )
    if not bases:
        found = ", ".join(f"{m.__name__} {getattr(m, '__version__', '?')}" for m in loaded)
        found = found or "none"
        raise ImportError(
            "GradlogCallback needs lightning >= 2.0 (lightning.pytorch or pytorch_lightning); "
            f"found: {found}. Install it with `pip install 'torch-gradlog[lightning]'`"
        )
    return bases


_CONCRETE: dict[tuple[type, tuple[type, ...]], type] = {}


def _concrete(cls: type[_T]) -> type[_T]:
    """``cls`` combined with the Lightning ``Callback`` base(s) in use (cached)."""
    if "_gradlog_public" in cls.__dict__:  # already a combined class
        return cls
    bases = tuple(b for b in _callback_bases() if not issubclass(cls, b))
    if not bases:
        return cls
    key = (cls, bases)
    made = _CONCRETE.get(key)
    if made is None:
        attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        made = type(cls.__name__, (cls, *bases), {**attrs, "_gradlog_public": cls})
        _CONCRETE[key] = made
    return cast("type[_T]", made)


def _rebuild(cls: type[_T]) -> _T:
    """Unpickling helper: a bare instance of ``cls`` combined with the local Lightning."""
    return object.__new__(_concrete(cls))


@dataclass
class _Run:
    """One optimizer's Recorder and what the callback logs into it."""

    recorder: Recorder
    logged_step: int = -1  # the last step the loss and metrics went to
    loss_sum: torch.Tensor | None = None  # sum of the micro-batch losses since then
    loss_count: int = 0
    seen: dict[str, torch.Tensor] = field(default_factory=dict)  # last metric tensor per name
    metric_steps: dict[str, int] = field(default_factory=dict)  # name -> step it was logged at


class GradlogCallback(_CallbackBase):  # type: ignore[misc]  # base added at runtime
    """Record gradient statistics of every ``Trainer.fit`` into a gradlog run under ``root``.

    ``Trainer(callbacks=[GradlogCallback(root="runs")])``. The gradients are recorded at
    ``on_before_optimizer_step``: after accumulation and AMP unscaling, before Lightning clips
    them (a clipped step records ``grad_norm_preclip`` and ``grad_clip_limit``). The loss of
    each optimizer step (the mean of its micro-batch losses) is logged as ``loss``, and every
    scalar of ``trainer.callback_metrics`` under its Lightning name when it changes, once per
    step (not ``grad_norm_preclip``/``grad_clip_limit``, which the Recorder writes; a metric
    named ``loss`` only on steps without the callback's own ``loss``).
    ``config`` is added to the LightningModule's ``hparams`` as the run's config, with the
    Trainer settings under ``"lightning"``.

    A LightningModule with several optimizers (manual optimization) gets one run per optimizer,
    named ``<name>-opt<i>``; each records only the parameters its optimizer updates
    (``Recorder(only_optimizer_params=True)``), and the loss and metrics go to each optimizer
    that stepped in the batch. ``name`` defaults to the LightningModule's class name;
    ``grads``, ``params``, ``updates``, ``hists`` and ``strict`` are the Recorder's. Under DDP
    every rank writes its own parts into one shared run directory. Recorder step ``s`` is
    ``trainer.global_step`` ``s + 1``, also in a fit resumed from a checkpoint (its run starts at
    the checkpoint's step); with several optimizers each run counts its own steps from 0.
    """

    def __new__(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        return object.__new__(_concrete(cls))

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
    ) -> None:
        super().__init__()
        self.root, self.name, self.config = run_options(root, name, config)
        if not isinstance(strict, bool):
            raise ConfigError(f"strict must be True or False, got {strict!r}")
        self.strict = strict
        # Kept as given (ints and bools pickle, for ddp_spawn); validated now.
        self.schedules: dict[str, sched.Schedule | int | bool] = {
            "grads": grads,
            "params": params,
            "updates": updates,
            "hists": hists,
        }
        for what, value in self.schedules.items():
            sched.as_schedule(value, what)
        self.run_dirs: list[Path] = []
        """The run directories of the current (or last) fit, one per optimizer."""
        self._runs: list[_Run] = []
        self._by_optimizer: dict[int, _Run] = {}
        self._broken = False

    def __reduce__(self) -> tuple[Any, ...]:
        # The combined class is made at runtime: pickle (ddp_spawn) rebuilds it from the public one.
        public = type(self).__dict__.get("_gradlog_public", type(self))
        return (_rebuild, (public,), dict(self.__dict__))

    @property
    def recorders(self) -> list[Recorder]:
        """The live Recorders of the current fit (one per optimizer), e.g. to log more scalars."""
        return [run.recorder for run in self._runs]

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._check_attached_once(trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The strategy has set up the optimizers (and torch.distributed) before this hook.
        self._close("finished")
        self._broken = False
        self.run_dirs = []
        optimizers = list(trainer.optimizers)
        several = len(optimizers) > 1
        base = self.name if self.name is not None else type(pl_module).__name__
        config = _run_config(trainer, pl_module, self.config)
        scaler = _grad_scaler(trainer)
        for i, optimizer in enumerate(optimizers):
            try:
                recorder = Recorder(
                    pl_module,
                    optimizer,
                    root=self.root,
                    name=f"{base}-opt{i}" if several else base,
                    config=config,
                    scaler=scaler,
                    strict=self.strict,
                    only_optimizer_params=several,
                    grads=self.schedules["grads"],
                    params=self.schedules["params"],
                    updates=self.schedules["updates"],
                    hists=self.schedules["hists"],
                )
            except ConfigError:
                raise  # a usage error (e.g. a second Recorder on this optimizer): before training
            except Exception as exc:
                if self.strict:
                    raise
                self._warn(f"gradlog: could not start recording optimizer {i}: {exc!r}")
                continue
            run = _Run(recorder)
            self._runs.append(run)
            self._by_optimizer[id(recorder.optimizer)] = run
            self.run_dirs.append(recorder.run_dir)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning restores global_step from a checkpoint after on_fit_start: a resumed fit's
        # run continues the steps of the run it resumes (step s is global_step s + 1). With
        # several optimizers global_step counts the steps of all of them: each run counts its
        # own from 0.
        step = int(trainer.global_step)
        if len(self._runs) == 1 and step > 0:
            recorder = self._runs[0].recorder
            try:
                recorder.start_at(step)
            except Exception as exc:
                if self.strict:
                    raise
                self._warn(f"gradlog: the resumed run's steps start at 0, not {step}: {exc!r}")

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        run = self._run_of(optimizer)
        if run is not None:
            run.recorder.capture_grads()  # guarded by the Recorder; before Lightning clips

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: STEP_OUTPUT,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._runs:
            self._guard(self._batch_end, trainer, pl_module, outputs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._runs:
            self._guard(self._metrics_end, trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._runs and not trainer.sanity_checking:
            self._guard(self._metrics_end, trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._runs:
            self._guard(self._metrics_end, trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("finished")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close(*exit_status(exception))  # Ctrl-C is 'interrupted', not 'crashed'

    # ----------------------------------------------------------------- work
    def _check_attached_once(self, trainer: pl.Trainer) -> None:
        callbacks: list[Any] = getattr(trainer, "callbacks", [])  # set in Trainer.__init__
        mine = [cb for cb in callbacks if isinstance(cb, GradlogCallback)]
        if len(mine) > 1:
            what = (
                f"the same GradlogCallback {len(mine)} times"
                if len({id(cb) for cb in mine}) == 1
                else f"{len(mine)} GradlogCallbacks"
            )
            raise ConfigError(
                f"the Trainer has {what} in its callbacks; attach exactly one "
                "(it records every optimizer of the LightningModule)"
            )

    def _run_of(self, optimizer: Any) -> _Run | None:
        run = self._by_optimizer.get(id(optimizer))
        if run is None and self._by_optimizer:
            try:
                run = self._by_optimizer.get(id(unwrap_optimizer(optimizer)))
            except ConfigError:
                return None
        return run

    def _batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT
    ) -> None:
        loss = _loss_of(outputs)
        if loss is not None and pl_module.automatic_optimization:
            # Lightning divided the loss by accumulate_grad_batches for the backward pass.
            loss = loss * trainer.accumulate_grad_batches
        metrics: dict[str, torch.Tensor] | None = None
        for run in self._runs:
            if loss is not None:
                run.loss_sum = loss if run.loss_sum is None else run.loss_sum + loss
                run.loss_count += 1
            step = run.recorder.last_step
            if step == run.logged_step:
                continue  # accumulating, or this optimizer did not step in this batch
            run.logged_step = step
            if run.loss_sum is not None:
                # The mean of the step's micro-batch losses, on the device: no host sync.
                run.recorder.log(loss=run.loss_sum / run.loss_count)
                run.loss_sum, run.loss_count = None, 0
                run.metric_steps["loss"] = step  # a metric named `loss` must not repeat it
            if metrics is None:
                metrics = _scalar_metrics(trainer)
            _log_metrics(run, metrics, step)

    def _metrics_end(self, trainer: pl.Trainer) -> None:
        metrics = _scalar_metrics(trainer)
        for run in self._runs:
            step = run.recorder.last_step
            if step >= 0:  # before the first step there is no step to attach them to
                _log_metrics(run, metrics, step)

    def _close(self, status: str, error: str | None = None) -> None:
        runs, self._runs, self._by_optimizer = self._runs, [], {}
        for run in runs:
            try:
                run.recorder.close(status=status, error=error)
            except Exception as exc:
                if self.strict and status == "finished":
                    raise
                self._warn(f"gradlog: could not close run {run.recorder.run_id}: {exc!r}")

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run the callback's own logging; an error there stops it (not the recording, not
        training) with one warning, unless ``strict``."""
        if self._broken:
            return
        try:
            fn(*args)
        except Exception as exc:
            if self.strict:
                raise
            self._broken = True
            self._warn(f"gradlog: stopped logging losses and metrics after an error: {exc!r}")

    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(message, GradlogWarning, stacklevel=3)


def _loss_of(outputs: Any) -> torch.Tensor | None:
    """The batch's loss from ``training_step``'s output (a tensor or a mapping with 'loss')."""
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        return None
    loss = loss.detach().reshape(())
    return loss.to(torch.promote_types(loss.dtype, torch.float32))


def _scalar_metrics(trainer: pl.Trainer) -> dict[str, torch.Tensor]:
    return {
        key: value
        for key, value in trainer.callback_metrics.items()
        if isinstance(value, torch.Tensor) and value.numel() == 1 and key not in _RESERVED
    }


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``b`` is the value ``a`` was (same storage, unmodified). Holding ``a`` keeps its
    memory from being reused, so a new value never has its address."""
    return a.device == b.device and a.data_ptr() == b.data_ptr() and a._version == b._version


def _log_metrics(run: _Run, metrics: dict[str, torch.Tensor], step: int) -> None:
    """Log the metrics that changed since they were last seen, once per name and step."""
    fresh: dict[str, torch.Tensor] = {}
    for key, value in metrics.items():
        seen = run.seen.get(key)
        if seen is not None and _same(seen, value):
            continue
        run.seen[key] = value
        if run.metric_steps.get(key) == step:
            continue  # e.g. the epoch value of a metric also logged on this step
        run.metric_steps[key] = step
        fresh[key] = value
    if fresh:
        run.recorder.log(**fresh)


def _grad_scaler(trainer: pl.Trainer) -> Any:
    """The AMP GradScaler of the precision plugin ('16-mixed'), else None."""
    plugin = getattr(trainer.strategy, "precision_plugin", None)
    scaler = getattr(plugin, "scaler", None)
    return scaler if scaler is not None and hasattr(scaler, "step") else None


def _run_config(
    trainer: pl.Trainer, pl_module: pl.LightningModule, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The module's hyperparameters, ``extra``, and the Trainer settings under 'lightning'."""
    config: dict[str, Any] = dict(getattr(pl_module, "hparams", None) or {})
    config.update(extra)
    algorithm = trainer.gradient_clip_algorithm
    config["lightning"] = {
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": (
            str(algorithm.value)
            if algorithm is not None
            else ("norm" if trainer.gradient_clip_val else None)  # Lightning's default
        ),
        "precision": str(trainer.precision),
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "world_size": trainer.world_size,
        "strategy": type(trainer.strategy).__name__,
        "automatic_optimization": pl_module.automatic_optimization,
        "package": type(trainer).__module__.split(".trainer", 1)[0],
    }
    return config
