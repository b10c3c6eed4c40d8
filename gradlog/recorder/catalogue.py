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


def build_catalogue(model: torch.nn.Module | None, optimizer: torch.optim.Optimizer) -> Catalogue:
    """Name every parameter once (tied weights once), mark which ones the optimizer updates."""
    in_opt: dict[int, tuple[int, int]] = {}
    for g, group in enumerate(optimizer.param_groups):
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
                full = f"{module_name}.{pname}" if module_name else pname
                cat.entries.append(
                    Entry(_clean(full), p, type(module).__name__, id(p) in in_opt, len(cat.entries))
                )
    for pid, (g, i) in in_opt.items():
        if pid in seen:
            continue
        p = optimizer.param_groups[g]["params"][i]
        seen.add(pid)
        cat.entries.append(Entry(f"optimizer.group{g}.param{i}", p, "", True, len(cat.entries)))
    return cat
