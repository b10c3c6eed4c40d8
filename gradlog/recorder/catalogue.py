"""The tensor catalogue: every parameter of the model (and of the optimizer), named once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

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
