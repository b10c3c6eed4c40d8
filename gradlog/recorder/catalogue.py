"""The tensor catalogue: every parameter of the model (and of the optimizer), named once."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

_COMPILE_PREFIX = "_orig_mod."


@dataclass
class Entry:
    """One parameter: how it is named and where it lives."""

    name: str
    param: torch.Tensor
    module_type: str
    in_optimizer: bool
    depth: int
    backward_order: int | None = None
    activation: str | None = None
    """The activation that follows the parameter's module in the first forward pass (e.g.
    ``relu``, ``gelu``), ``""`` when another parameterised module or nothing follows first, None
    when not observed."""

    @property
    def not_recorded(self) -> str | None:
        """Why this tensor's statistics are not recorded (None: they are)."""
        if self.param.is_complex():
            return f"complex ({str(self.param.dtype).removeprefix('torch.')})"
        return None

    @property
    def recorded(self) -> bool:
        return self.not_recorded is None

    def to_json(self) -> dict[str, Any]:
        p = self.param
        return {
            "name": self.name,
            "shape": list(p.shape),
            "numel": p.numel(),
            "dtype": str(p.dtype).removeprefix("torch."),
            "module_type": self.module_type,
            "requires_grad": bool(p.requires_grad),
            "in_optimizer": self.in_optimizer,
            "depth": self.depth,
            "backward_order": self.backward_order,
            "activation": self.activation,
            "not_recorded": self.not_recorded,
        }


@dataclass
class Catalogue:
    """Parameters in model definition order, then optimizer-only parameters."""

    entries: list[Entry] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def to_json(self) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.entries]


def _clean(name: str) -> str:
    return name.replace(_COMPILE_PREFIX, "")


def _module_type(module: torch.nn.Module) -> str:
    """The user's class name; FSDP2 swaps in a generated ``FSDP<Name>(FSDPModule, <Name>)``."""
    cls = type(module)
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch built without distributed
        return cls.__name__
    if isinstance(module, FSDPModule):
        cls = next((b for b in cls.__bases__ if b is not FSDPModule), cls)
    return cls.__name__


def build_catalogue(
    model: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    *,
    only_optimizer: bool = False,
) -> Catalogue:
    """Name every parameter once (tied weights once), mark which ones the optimizer updates.

    Without an optimizer (a loop that updates parameters by hand) every parameter that requires
    a gradient counts as updated. ``only_optimizer`` leaves out the model's parameters that the
    optimizer does not update (one run per optimizer of a model with several).
    """
    in_opt: dict[int, tuple[int, int]] = {}
    groups = optimizer.param_groups if optimizer is not None else []
    for g, group in enumerate(groups):
        for i, p in enumerate(group["params"]):
            in_opt.setdefault(id(p), (g, i))
    cat = Catalogue()
    seen: set[int] = set()
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(model, wrappers):  # name parameters as in the plain model ('module.' off)
        model = model.module
    if model is not None:
        for module_name, module in model.named_modules(remove_duplicate=True):
            for pname, p in module.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                updated = id(p) in in_opt if optimizer is not None else bool(p.requires_grad)
                if only_optimizer and not updated:
                    continue
                full = f"{module_name}.{pname}" if module_name else pname
                cat.entries.append(
                    Entry(_clean(full), p, _module_type(module), updated, len(cat.entries))
                )
    for pid, (g, i) in in_opt.items():
        if pid in seen:
            continue
        p = groups[g]["params"][i]
        seen.add(pid)
        cat.entries.append(Entry(f"optimizer.group{g}.param{i}", p, "", True, len(cat.entries)))
    return cat


ACTIVATIONS = {
    "relu": "relu",
    "relu_": "relu",
    "relu6": "relu6",
    "threshold": "relu",
    "hardtanh": "hardtanh",
    "leaky_relu": "leaky_relu",
    "prelu": "prelu",
    "rrelu": "rrelu",
    "elu": "elu",
    "selu": "selu",
    "celu": "celu",
    "gelu": "gelu",
    "silu": "silu",
    "mish": "mish",
    "softplus": "softplus",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "hardswish": "hardswish",
    "hardsigmoid": "hardsigmoid",
    "glu": "glu",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
}
"""Activation functions (torch/functional names and module classes, lower-cased) by label."""

ZERO_GRADIENT_ACTIVATIONS = frozenset({"relu", "relu6", "hardtanh"})
"""Activations with a flat zero-gradient region, whose units can die (the ReLU family)."""


class _Trace(TorchFunctionMode):
    """Records, in order, the activation functions called during one forward pass."""

    def __init__(self, events: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.events = events

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in ACTIVATIONS:
            self.events.append(("act", ACTIVATIONS[name]))
        return func(*args, **(kwargs or {}))


def watch_activations(model: torch.nn.Module | None, catalogue: Catalogue) -> list[RemovableHandle]:
    """Hooks that, during the model's first forward pass, note for each catalogued parameter the
    activation its module's output meets next (``Entry.activation``), then remove themselves.

    Module completions and activation calls (modules, or functions seen through a
    TorchFunctionMode) are logged in order; a module's activation is the first activation after
    it, unless a parameterised module completes first (then ``""``). Compiled models are left
    alone.
    """
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    if model is None or type(model).__name__ == "OptimizedModule":
        return []
    root = model
    by_param = {id(e.param): e for e in catalogue.entries}
    events: list[tuple[str, Any]] = []
    trace = _Trace(events)
    handles: list[RemovableHandle] = []

    def done(module: torch.nn.Module, _inp: Any, _out: Any) -> None:
        label = ACTIVATIONS.get(type(module).__name__.lower())
        if label is not None and not any(True for _ in module.parameters(recurse=False)):
            events.append(("act", label))
        else:
            events.append(("mod", module))

    def start(_module: torch.nn.Module, _inp: Any) -> None:
        trace.__enter__()  # type: ignore[no-untyped-call]

    def finish(_module: torch.nn.Module, _inp: Any, _out: Any) -> None:
        trace.__exit__(None, None, None)  # type: ignore[no-untyped-call]
        for h in handles:
            h.remove()
        with contextlib.suppress(Exception):  # a probe must never break training
            _assign(events, by_param)
        events.clear()

    try:
        for m in root.modules():
            if m is not root:
                handles.append(m.register_forward_hook(done))
        handles.append(root.register_forward_pre_hook(start))
        handles.append(root.register_forward_hook(finish, always_call=True))
    except Exception:  # e.g. modules that refuse hooks: no activation info
        for h in handles:
            h.remove()
        return []
    return handles


def _assign(events: list[tuple[str, Any]], by_param: dict[int, Entry]) -> None:
    """Fill each entry's activation from the ordered events (see :func:`watch_activations`)."""
    for i, (what, module) in enumerate(events):
        if what != "mod":
            continue
        own = [by_param[id(p)] for p in module.parameters(recurse=False) if id(p) in by_param]
        if not own or any(e.activation is not None for e in own):
            continue
        label = ""
        for what2, obj in events[i + 1 :]:
            if what2 == "act":
                label = str(obj)
                break
            if any(True for _ in obj.parameters(recurse=False)):
                break
        for e in own:
            e.activation = label
