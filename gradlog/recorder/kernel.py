"""The one-pass CPU statistics kernel (numba), loaded off the training thread.

:func:`fused_stats` reads each tensor once and returns the statistics of
:data:`gradlog.schema.RECORDED_STATS` and, when asked, the exponent histogram; :func:`diff_stats`
returns the statistics of ``after - before`` without writing the difference; :func:`copy_stats`
copies tensors into buffers and takes their statistics in the same pass. All need the
compiled kernels, which :func:`start_loading` prepares in a daemon thread: a low-priority child
process compiles them into numba's on-disk cache (first run on a machine, some seconds of one
core), then the thread loads them from there. Until :func:`ready` is True, and for good when
numba is missing or anything fails, callers use the torch/numpy kernels of
:mod:`gradlog.recorder.stats`. ``GRADLOG_KERNEL=torch`` in the environment disables this module.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType

import numpy as np
import torch

from gradlog.schema import HIST_BINS, RECORDED_STATS

_MODULE = "gradlog.recorder._numba_kernels"
_COMPILE_TIMEOUT_S = 600.0
_EXIT_WAIT_S = 120.0  # at interpreter exit, the longest wait for a load in progress
# The child imports the kernels' file alone (not the gradlog.recorder package, which imports
# torch): numba, numpy and gradlog.schema only, so that it starts fast even at low priority.
_WARM_UP = """
import importlib.util, os, sys
if hasattr(os, "nice"):
    os.nice(19)
spec = importlib.util.spec_from_file_location(sys.argv[1], sys.argv[2])
module = importlib.util.module_from_spec(spec)
sys.modules[sys.argv[1]] = module
spec.loader.exec_module(module)
module.warm_up()
"""


class _Loader:
    """The kernels' loading state, shared by all recorders of the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state = "idle"  # idle | loading | ready | unavailable
        self.kernels: ModuleType | None = None
        self.why: str | None = None
        self.done = threading.Event()

    def load(self, in_child: bool) -> None:
        try:
            if importlib.util.find_spec("numba") is None:
                raise ImportError("numba is not installed (pip install 'torch-gradlog[fast]')")
            if in_child:
                # Compile in a child process at the lowest priority: the compiler holds the GIL
                # and a core for seconds, which the training process must not feel. Later runs
                # find the kernels in numba's cache: about a second of the child's CPU.
                spec = importlib.util.find_spec(_MODULE)
                if spec is None or spec.origin is None:
                    raise ImportError(f"{_MODULE} is missing")
                subprocess.run(
                    [sys.executable, "-c", _WARM_UP, _MODULE, spec.origin],
                    check=True,
                    capture_output=True,
                    timeout=_COMPILE_TIMEOUT_S,
                )
            module = import_kernels()
            warm_up(module)
        except Exception as exc:  # any failure: the torch kernels stay in use, silently
            with self.lock:
                self.why = f"{type(exc).__name__}: {exc}"
                self.state = "unavailable"
        else:
            with self.lock:
                self.kernels = module
                self.state = "ready"
        finally:
            self.done.set()


_LOADER = _Loader()
_SUSPENDED = threading.local()


def disabled() -> bool:
    """True when the environment asks for the torch kernels only (``GRADLOG_KERNEL=torch``)."""
    return os.environ.get("GRADLOG_KERNEL", "").strip().lower() == "torch"


def ready() -> bool:
    """True once the compiled kernels can be called (never blocks), unless :func:`suspended`."""
    return _LOADER.state == "ready" and not getattr(_SUSPENDED, "on", False)


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Within the block, in this thread, ``"auto"`` uses the torch kernels (for benchmarks that
    compare the kernels side by side in one process)."""
    before = getattr(_SUSPENDED, "on", False)
    _SUSPENDED.on = True
    try:
        yield
    finally:
        _SUSPENDED.on = before


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used (numba missing, a failure), or None."""
    return _LOADER.why


def import_kernels() -> ModuleType:
    """Import (and so compile, or load from numba's cache) the kernels in this process."""
    return importlib.import_module(_MODULE)


def warm_up(module: ModuleType) -> None:
    """Run every kernel once on tiny inputs, so that each is compiled (or loaded)."""
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor([1.0, -0.0, float("nan"), 1e-40], dtype=dtype)
        fused_stats([x], hist=True, module=module)
        diff_stats([x], [x], module=module)
        copy_stats([x], [torch.empty_like(x)], stats=True, module=module)


def start_loading(*, wait: bool = False) -> bool:
    """Start loading the kernels in the background (once per process); True when ready.

    With ``wait`` the kernels are compiled here, in this thread, if need be (tests, benchmarks).
    """
    loader = _LOADER
    with loader.lock:
        start = loader.state == "idle"
        if start and disabled():
            loader.state = "unavailable"
            loader.why = "disabled by GRADLOG_KERNEL=torch"
            loader.done.set()
            start = False
        elif start:
            loader.state = "loading"
    if start and wait:
        loader.load(in_child=False)
    elif start:
        threading.Thread(
            target=loader.load, args=(True,), name="gradlog-kernel-loader", daemon=True
        ).start()
        # A short process may end while the thread is inside numba/LLVM: finalizing the
        # interpreter under it aborts the process ("terminate called ..."). Let it finish first.
        atexit.register(loader.done.wait, _EXIT_WAIT_S)
    if wait:
        loader.done.wait()
    return loader.state == "ready"


def _module(module: ModuleType | None) -> ModuleType:
    if module is not None:
        return module
    if _LOADER.kernels is None:
        raise RuntimeError(f"the numba kernels are not loaded ({_LOADER.why or _LOADER.state})")
    return _LOADER.kernels


def _prepared(tensors: Sequence[torch.Tensor]) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """Indices of the narrow (float32) and wide (float64) tensors, and contiguous float32/64
    versions of all of them (float16/bfloat16 are widened to float32 exactly)."""
    narrow: list[int] = []
    wide: list[int] = []
    flat: list[torch.Tensor] = []
    f32, f64 = torch.float32, torch.float64
    for i, tensor in enumerate(tensors):  # only addresses are read: detach only to convert
        t = tensor
        if t.dtype == f64:
            wide.append(i)
        else:
            narrow.append(i)
            if t.dtype != f32:
                t = t.detach().to(f32)
        flat.append(t if t.is_contiguous() else t.detach().contiguous())
    return narrow, wide, flat


_NO_HISTS = np.zeros((1, HIST_BINS), dtype=np.int64)
"""The histogram argument when none is wanted (never written)."""


def _plain_float32(tensors: Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray] | None:
    """Addresses and sizes when every tensor is a contiguous float32 CPU tensor (gradients of
    a float32 model: no conversion, one group), else None. One loop: it runs every step."""
    addresses: list[int] = []
    sizes: list[int] = []
    f32 = torch.float32
    strided = torch.strided
    for t in tensors:
        if t.dtype != f32 or t.layout != strided or not t.is_cpu or not t.is_contiguous():
            return None
        addresses.append(t.data_ptr())
        sizes.append(t.numel())
    return np.array(addresses, dtype=np.int64), np.array(sizes, dtype=np.int64)


def plain_stats(
    tensors: Sequence[torch.Tensor], *, hist: bool
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """:func:`fused_stats` of contiguous float32 CPU tensors (the common case, checked and
    addressed in one loop), or None when the kernel is not ready or a tensor is not one."""
    if not ready():
        return None
    plain = _plain_float32(tensors)
    return None if plain is None else _plain_run(_module(None), plain, len(tensors), hist)


def _plain_run(
    k: ModuleType, plain: tuple[np.ndarray, np.ndarray], n: int, hist: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The kernel over ``n`` float32 tensors at the ``plain`` addresses and sizes."""
    stats = np.zeros((n, len(RECORDED_STATS)))
    hists = np.zeros((n, HIST_BINS), dtype=np.int64) if hist else None
    k.fused(*plain, False, stats, _NO_HISTS if hists is None else hists, hist)
    return stats, hists


def fused_stats(
    tensors: Sequence[torch.Tensor], *, hist: bool, module: ModuleType | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Statistics ``[n, 6]`` float64 and, with ``hist``, histograms ``[n, HIST_BINS]`` int64 of
    CPU tensors, each read once. Semantics as :func:`gradlog.recorder.stats.tensor_stats`."""
    k = _module(module)
    n = len(tensors)
    plain = _plain_float32(tensors)
    if plain is not None:  # the common case, in one loop over the tensors
        return _plain_run(k, plain, n, hist)
    stats = np.zeros((n, len(RECORDED_STATS)))
    hists = np.zeros((n, HIST_BINS), dtype=np.int64) if hist else None
    narrow, wide, flat = _prepared(tensors)
    for rows, is_wide in ((narrow, False), (wide, True)):
        if not rows:
            continue
        addresses = np.array([flat[i].data_ptr() for i in rows], dtype=np.int64)
        sizes = np.array([flat[i].numel() for i in rows], dtype=np.int64)
        part = stats if len(rows) == n else np.zeros((len(rows), len(RECORDED_STATS)))
        part_h = np.zeros((len(rows) if hist else 1, HIST_BINS), dtype=np.int64)
        if hist and hists is not None and len(rows) == n:
            part_h = hists
        k.fused(addresses, sizes, is_wide, part, part_h, hist)
        if len(rows) != n:
            stats[rows] = part
            if hists is not None:
                hists[rows] = part_h
    return stats, hists


def diff_stats(
    before: Sequence[torch.Tensor],
    after: Sequence[torch.Tensor],
    *,
    module: ModuleType | None = None,
) -> np.ndarray:
    """Statistics ``[n, 6]`` of ``after[i] - before[i]`` (computed in their dtype, as torch
    would), reading each pair once and writing nothing but the result."""
    k = _module(module)
    n = len(before)
    stats = np.zeros((n, len(RECORDED_STATS)))
    narrow, wide, flat0 = _prepared(before)
    _, _, flat1 = _prepared(after)
    for rows, is_wide in ((narrow, False), (wide, True)):
        if not rows:
            continue
        a0 = np.array([flat0[i].data_ptr() for i in rows], dtype=np.int64)
        a1 = np.array([flat1[i].data_ptr() for i in rows], dtype=np.int64)
        sizes = np.array([flat0[i].numel() for i in rows], dtype=np.int64)
        part = stats if len(rows) == n else np.zeros((len(rows), len(RECORDED_STATS)))
        k.difference(a0, a1, sizes, is_wide, part)
        if len(rows) != n:
            stats[rows] = part
    return stats


def copyable(sources: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`copy_stats` can copy ``sources`` into ``targets``: CPU, strided,
    contiguous, float32 or float64, each target of its source's dtype and size."""
    for x, y in zip(sources, targets, strict=True):
        if (
            x.device.type != "cpu"
            or y.device.type != "cpu"
            or x.layout != torch.strided
            or y.layout != torch.strided
            or x.dtype not in (torch.float32, torch.float64)
            or y.dtype != x.dtype
            or y.numel() != x.numel()
            or not x.is_contiguous()
            or not y.is_contiguous()
        ):
            return False
    return True


def copy_stats(
    sources: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    *,
    stats: bool,
    module: ModuleType | None = None,
) -> np.ndarray | None:
    """Copy ``sources[i]`` into ``targets[i]`` (see :func:`copyable`) and, with ``stats``,
    return their statistics ``[n, 6]`` (as :func:`fused_stats`) from the same pass: each
    source is read once and each target written once."""
    k = _module(module)
    n = len(sources)
    out = np.zeros((n if stats else 1, len(RECORDED_STATS)))
    for is_wide in (False, True):
        dtype = torch.float64 if is_wide else torch.float32
        rows = [i for i, x in enumerate(sources) if x.dtype == dtype]
        if not rows:
            continue
        src = np.array([sources[i].data_ptr() for i in rows], dtype=np.int64)
        dst = np.array([targets[i].data_ptr() for i in rows], dtype=np.int64)
        sizes = np.array([sources[i].numel() for i in rows], dtype=np.int64)
        part = out if len(rows) == n or not stats else np.zeros((len(rows), len(RECORDED_STATS)))
        k.copy(src, dst, sizes, is_wide, part, stats)
        if stats and len(rows) != n:
            out[rows] = part
    return out if stats else None
