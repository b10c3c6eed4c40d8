"""Statistics kernels: tensors in, one tensor of statistics out. No hooks, no I/O.

:func:`tensor_stats` returns, for each input tensor, the mergeable sufficient statistics declared
in :data:`gradlog.schema.RECORDED_STATS` (count, sum, sumsq, absmax, zeros, nonfinite) as one
``float64`` tensor of shape ``[n, 6]`` on the inputs' device. :func:`exponent_histogram`
returns ``[n, HIST_BINS]`` counts; :func:`stats_and_histogram` returns both from one pass, and
:func:`update_stats` the statistics of ``after - before``; :func:`copy_and_stats` copies
tensors (a snapshot) and returns their statistics from the same pass.

Methods: on CPU the default is the one-pass numba kernel of :mod:`gradlog.recorder.kernel`
(``"fused"``) once it is compiled, which happens off the training thread; until then, or
without numba, the per-tensor ``"cpu"`` path (the fastest CPU kernels: BLAS dot for sums of
squares, one pass for the extremes, masking only when a tensor holds NaN/Inf). CUDA tensors go
through the ``"flat"`` path of a few batched ops per chunk, without host synchronisation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from gradlog.recorder import kernel
from gradlog.schema import EXP_BINS, EXP_MIN, HIST_BINS, HIST_NONFINITE_BIN, RECORDED_STATS

NSTATS = len(RECORDED_STATS)
COUNT, SUM, SUMSQ, ABSMAX, ZEROS, NONFINITE = range(NSTATS)
EMPTY_ROW = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
"""The statistics of an empty tensor; also the identity element of :func:`merge_stats`."""

FLAT_CHUNK_NUMEL = 1 << 23
"""The flattened path concatenates at most this many elements at a time (bounds extra memory)."""
CPU_SMALL_NUMEL = 1 << 14
"""On CPU, tensors up to this size are batched together into one set of numpy reductions."""
CPU_FLAT_MIN_TENSORS = 1024
"""On CPU, lists with more tensors than this use the flattened path (less Python per tensor)."""
METHODS = ("auto", "cpu", "flat", "fused")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be 'auto', 'cpu', 'flat' or 'fused', got {method!r}")


def _use_fused(tensors: Sequence[torch.Tensor], method: str) -> bool:
    """Whether ``method`` resolves to the numba kernel for ``tensors`` (all CPU, strided).

    ``"auto"`` starts loading the kernel in the background the first time and uses it only
    once it is ready; ``"fused"`` compiles it here if need be and fails when it cannot run.
    """
    if method == "fused":
        if not kernel.start_loading(wait=True):
            raise RuntimeError(
                f"method 'fused' needs the numba kernel: {kernel.unavailable_reason()}"
            )
    elif method != "auto":
        return False
    elif not kernel.ready():
        if tensors and tensors[0].device.type == "cpu":
            kernel.start_loading()
        return False
    strided = torch.strided
    fits = all(t.is_cpu and t.layout == strided for t in tensors)
    if not fits and method == "fused":
        raise ValueError("method 'fused' takes CPU tensors with the strided layout only")
    return fits


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _chunk_dtype(chunk: Sequence[torch.Tensor]) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in chunk) else torch.float32


def _cpu_row(t: torch.Tensor) -> tuple[float, ...]:
    """Statistics of one CPU tensor: a fast path for all-finite data, exact masking otherwise."""
    n = t.numel()
    if n == 0:
        return EMPTY_ROW
    flat = t.detach().reshape(-1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.to(_compute_dtype(t))
    a = flat.numpy()
    # BLAS dot is the fastest single pass; any NaN/Inf makes it non-finite, sending us below.
    sumsq = float(np.dot(a, a))
    if math.isfinite(sumsq):
        lo, hi = torch.aminmax(flat)
        mn, mx = float(lo), float(hi)
        zeros = int(np.count_nonzero(a == 0))  # faster than counting non-zeros of a float array
        return (float(n), float(flat.sum()), sumsq, max(-mn, mx), float(zeros), 0.0)
    # Slow path: non-finite values present (or the sum of squares overflowed); mask in float64.
    finite_mask = np.isfinite(a)
    fin = a[finite_mask].astype(np.float64)
    nonfinite = n - fin.size
    zeros = int(fin.size - np.count_nonzero(fin))
    if fin.size == 0:
        return (float(n), 0.0, 0.0, 0.0, float(zeros), float(nonfinite))
    mn, mx = float(fin.min()), float(fin.max())
    return (
        float(n),
        float(fin.sum()),
        float(np.dot(fin, fin)),
        max(-mn, mx),
        float(zeros),
        float(nonfinite),
    )


def _cpu_rows(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """Statistics of CPU tensors: small ones batched into a few numpy reductions, large ones
    one by one (per-op overhead dominates small tensors, memory passes dominate large ones)."""
    out = np.empty((len(tensors), NSTATS))
    small: list[int] = []
    for i, t in enumerate(tensors):
        if 0 < t.numel() <= CPU_SMALL_NUMEL and t.dtype != torch.float64:
            small.append(i)
        else:
            out[i] = _cpu_row(t)
    if not small:
        return out
    arrays = [tensors[i].detach().reshape(-1).to(torch.float32).numpy() for i in small]
    flat = np.concatenate(arrays).astype(np.float64)  # small, so float64 sums cost nothing
    starts = np.cumsum([0] + [a.size for a in arrays[:-1]])
    sumsq = np.add.reduceat(flat * flat, starts)
    mn = np.minimum.reduceat(flat, starts)
    mx = np.maximum.reduceat(flat, starts)
    block = np.column_stack(
        [
            [a.size for a in arrays],
            np.add.reduceat(flat, starts),
            sumsq,
            np.maximum(-mn, mx),
            np.add.reduceat((flat == 0).astype(np.float64), starts),
            np.zeros(len(arrays)),
        ]
    )
    out[small] = block
    for j in np.flatnonzero(~np.isfinite(sumsq)):  # NaN/Inf (or overflow): exact masked path
        out[small[j]] = _cpu_row(tensors[small[j]])
    return out


@functools.lru_cache(maxsize=64)
def _index_tensor(device: torch.device, values: tuple[int, ...]) -> torch.Tensor:
    """A cached int64 tensor on ``device``: built once per layout, so steady-state steps make no
    host-to-device copy (which would synchronise a CUDA stream)."""
    return torch.tensor(values, dtype=torch.int64, device=device)


def _chunks(tensors: Sequence[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """Split ``tensors`` into consecutive groups of at most ``limit`` elements (or one tensor)."""
    groups: list[list[torch.Tensor]] = []
    current: list[torch.Tensor] = []
    size = 0
    for t in tensors:
        if current and size + t.numel() > limit:
            groups.append(current)
            current, size = [], 0
        current.append(t)
        size += t.numel()
    if current:
        groups.append(current)
    return groups


def _flat_chunk_stats(chunk: Sequence[torch.Tensor]) -> torch.Tensor:
    """Statistics of a group of same-device tensors in a fixed number of batched ops (no sync)."""
    device = chunk[0].device
    dtype = _chunk_dtype(chunk)
    numels = [t.numel() for t in chunk]
    lengths = _index_tensor(device, tuple(numels))
    if sum(numels) == 0:
        return torch.tensor([EMPTY_ROW] * len(chunk), dtype=torch.float64, device=device)
    flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in chunk])
    finite = torch.isfinite(flat)
    clean = torch.where(finite, flat, 0.0).to(torch.float64)  # sums accumulate in float64 here

    def seg(values: torch.Tensor, reduce: str, initial: float) -> torch.Tensor:
        return torch.segment_reduce(values, reduce, lengths=lengths, initial=initial).to(
            torch.float64
        )

    absmax = seg(clean.abs(), "max", 0.0)  # NaN/Inf are 0 in clean: the identity
    count = lengths.to(torch.float64)
    # Counts go through float64 so that they stay exact up to 2**53 elements per tensor.
    nonfinite = seg((~finite).to(torch.float64), "sum", 0.0)
    zeros = seg((flat == 0).to(torch.float64), "sum", 0.0)
    return torch.stack(
        [
            count,
            seg(clean, "sum", 0.0),
            seg(clean * clean, "sum", 0.0),
            absmax,
            zeros,
            nonfinite,
        ],
        dim=1,
    )


def tensor_stats(tensors: Sequence[torch.Tensor], *, method: str = "auto") -> torch.Tensor:
    """Sufficient statistics of each tensor as a ``[len(tensors), 6]`` float64 tensor.

    All tensors must be on one device. ``method`` is ``"auto"`` (the numba kernel on CPU once
    it is ready, else per-tensor on CPU; flattened on accelerators), ``"cpu"``, ``"flat"`` or
    ``"fused"``; the methods agree up to float rounding. Sums are accumulated in float64 by
    ``"fused"``, in float32 by the others (float64 for float64 tensors); absmax and the counts
    are exact.
    """
    return stats_and_histogram(tensors, hist=False, method=method)[0]


def stats_and_histogram(
    tensors: Sequence[torch.Tensor], *, hist: bool, method: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`tensor_stats` and, with ``hist``, :func:`exponent_histogram` of ``tensors``; the
    numba kernel computes both in one pass over each tensor."""
    stats, hists = stats_and_histogram_arrays(tensors, hist=hist, method=method)
    if isinstance(hists, np.ndarray):
        hists = torch.from_numpy(hists)
    return torch.from_numpy(stats) if isinstance(stats, np.ndarray) else stats, hists


def stats_and_histogram_arrays(
    tensors: Sequence[torch.Tensor], *, hist: bool, method: str = "auto"
) -> tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray | None]:
    """:func:`stats_and_histogram`, with the numba kernel's results left as the numpy arrays
    it filled (for the recorder's hot path: no conversion to tensors and back)."""
    _check_method(method)
    if not tensors:
        empty = torch.empty((0, NSTATS), dtype=torch.float64)
        return empty, torch.empty((0, HIST_BINS), dtype=torch.int64) if hist else None
    # float32 CPU tensors: checked and addressed in one loop (the common case, every step).
    done = kernel.plain_stats(tensors, hist=hist) if method == "auto" else None
    if done is not None:
        return done
    if _use_fused(tensors, method):
        return kernel.fused_stats(tensors, hist=hist)
    stats_t = _torch_stats(tensors, method)
    return stats_t, exponent_histogram(tensors, method=method) if hist else None


def update_stats(
    before: Sequence[torch.Tensor], after: Sequence[torch.Tensor], *, method: str = "auto"
) -> torch.Tensor:
    """Statistics of the updates ``after[i] - before[i]``, ``[n, 6]`` float64.

    ``before`` is a snapshot the caller owns: the torch methods overwrite it with
    ``before - after`` (no new buffers); the numba kernel reads both and writes nothing.
    float16/bfloat16 updates always take the torch path (their difference rounds in their dtype).
    """
    _check_method(method)
    if not before:
        return torch.empty((0, NSTATS), dtype=torch.float64)
    exact = all(t.dtype in (torch.float32, torch.float64) for t in before)
    if exact and _use_fused([*before, *after], method):
        return torch.from_numpy(kernel.diff_stats(before, after))
    with torch.no_grad():
        torch._foreach_sub_(list(before), list(after))  # before - after = -update, exactly
    return negate_stats(_torch_stats(before, "auto" if method == "fused" else method))


def copy_and_stats(
    sources: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    *,
    stats: bool,
    method: str = "auto",
) -> torch.Tensor | None:
    """Copy ``sources[i]`` into ``targets[i]`` (same shapes and dtypes) and, with ``stats``,
    return :func:`tensor_stats` of the sources.

    The numba kernel reads each source once, writing the copy and taking the statistics from
    it in the same pass (float32/float64, contiguous, CPU); otherwise ``torch._foreach_copy_``
    then :func:`tensor_stats`.
    """
    _check_method(method)
    if not sources:
        return torch.empty((0, NSTATS), dtype=torch.float64) if stats else None
    if _use_fused(sources, method) and kernel.copyable(sources, targets):
        rows = kernel.copy_stats(sources, targets, stats=stats)
        return None if rows is None else torch.from_numpy(rows)
    if method == "fused":
        raise ValueError(
            "method 'fused' copies contiguous float32/float64 CPU tensors into buffers of "
            "their dtype and size only"
        )
    with torch.no_grad():
        torch._foreach_copy_(list(targets), list(sources))
    return tensor_stats(sources, method=method) if stats else None


def _torch_stats(tensors: Sequence[torch.Tensor], method: str) -> torch.Tensor:
    """The torch/numpy kernels: per-tensor on CPU, flattened otherwise."""
    device = tensors[0].device
    use_cpu = method == "cpu" or (
        method in ("auto", "fused")
        and device.type == "cpu"
        and len(tensors) <= CPU_FLAT_MIN_TENSORS
    )
    if use_cpu:
        # NaN/Inf and overflow are expected inputs (they are counted): no numpy warnings.
        with np.errstate(all="ignore"):
            rows = _cpu_rows([t if t.device.type == "cpu" else t.cpu() for t in tensors])
        return torch.from_numpy(rows)
    parts = [_flat_chunk_stats(c) for c in _chunks(tensors, FLAT_CHUNK_NUMEL)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _cpu_histogram_f64(a: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """Histogram of float64 values by their exact exponent (rounding them to float32 first would
    move values near a power of two to the next bin, and out-of-range ones to 0 or Inf)."""
    a = np.abs(a)
    finite = np.isfinite(a)
    nonzero = a[finite & (a != 0)]
    hist[HIST_NONFINITE_BIN] = a.size - np.count_nonzero(finite)
    hist[0] = np.count_nonzero(finite) - nonzero.size
    _, exponent = np.frexp(nonzero)  # |x| = m * 2**e with m in [0.5, 1): k = e - 1
    bins = np.clip(exponent.astype(np.int64) - EXP_MIN, 1, EXP_BINS)
    hist += np.bincount(bins, minlength=HIST_BINS)
    return hist


def _cpu_histogram(t: torch.Tensor) -> np.ndarray:
    """Histogram of one CPU tensor through float32 bit fields (exact, incl. subnormals)."""
    hist = np.zeros(HIST_BINS, dtype=np.int64)
    if t.dtype == torch.float64:
        return _cpu_histogram_f64(t.detach().reshape(-1).numpy(), hist)
    a = t.detach().reshape(-1).to(torch.float32).numpy()
    if a.size == 0:
        return hist
    field = (a.view(np.uint32) >> 23).astype(np.uint8)  # the 8 exponent bits (sign shifted out)
    by_field = np.bincount(field, minlength=256)
    # Biased exponent f in 1..254 holds 2**(f-127) <= |x| < 2**(f-126): bin 1 + (f - 127) - EXP_MIN.
    lo = 1 + (1 - 127) - EXP_MIN
    hist[lo : lo + 254] = by_field[1:255]
    hist[HIST_NONFINITE_BIN] = by_field[255]
    if by_field[0]:  # zeros and subnormals share field 0; place subnormals by their exact exponent
        small = a[field == 0]
        sub = small[small != 0]
        hist[0] = small.size - sub.size
        if sub.size:
            _, exponent = np.frexp(np.abs(sub).astype(np.float64))
            hist += np.bincount(exponent.astype(np.int64) - EXP_MIN, minlength=HIST_BINS)
    return hist


def _flat_histogram(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Histograms of same-device tensors in a few batched ops per chunk (no host sync)."""
    device = tensors[0].device
    out = torch.zeros(len(tensors) * HIST_BINS, dtype=torch.int64, device=device)
    first = 0
    for chunk in _chunks(tensors, FLAT_CHUNK_NUMEL):
        numels = [t.numel() for t in chunk]
        total = sum(numels)
        if total:
            dtype = _chunk_dtype(chunk)  # once per chunk: per tensor it is quadratic in len(chunk)
            flat = torch.cat([t.detach().reshape(-1).to(dtype) for t in chunk]).abs_()
            _, exponent = torch.frexp(flat)  # |x| = m * 2**e with m in [0.5, 1): k = e - 1
            bins = (exponent.to(torch.int64) - EXP_MIN).clamp_(1, EXP_BINS)
            bins = torch.where(flat == 0, 0, bins)
            bins = torch.where(torch.isfinite(flat), bins, HIST_NONFINITE_BIN)
            owner = torch.repeat_interleave(
                _index_tensor(device, tuple(range(first, first + len(chunk)))),
                _index_tensor(device, tuple(numels)),
                output_size=total,
            )
            out.scatter_add_(0, owner * HIST_BINS + bins, torch.ones_like(bins))
        first += len(chunk)
    return out.view(len(tensors), HIST_BINS)


def exponent_histogram(tensors: Sequence[torch.Tensor], *, method: str = "auto") -> torch.Tensor:
    """Log2-exponent histograms of ``|x|``, ``[len(tensors), HIST_BINS]`` int64 (no host sync).

    Bin 0 counts zeros; bin ``1 + k - EXP_MIN`` counts ``2**k <= |x| < 2**(k+1)``; the last bin
    counts NaN and +-Inf. float64 values outside the float32 exponent range land in the edge bins.
    ``method`` is as for :func:`tensor_stats`.
    """
    _check_method(method)
    if not tensors:
        return torch.empty((0, HIST_BINS), dtype=torch.int64)
    if _use_fused(tensors, method):
        hists = kernel.fused_stats(tensors, hist=True)[1]
        assert hists is not None  # hist=True
        return torch.from_numpy(hists)
    device = tensors[0].device
    cpu_ok = device.type == "cpu" and all(t.dtype != torch.float64 for t in tensors)
    auto = method in ("auto", "fused")
    if method == "cpu" or (auto and cpu_ok and len(tensors) <= CPU_FLAT_MIN_TENSORS):
        return torch.from_numpy(np.stack([_cpu_histogram(t.cpu()) for t in tensors]))
    return _flat_histogram(tensors)


def merge_stats(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Merge two ``[n, 6]`` statistics tensors of disjoint element sets (exact up to rounding)."""
    out = a + b
    out[:, ABSMAX] = torch.maximum(a[:, ABSMAX], b[:, ABSMAX])
    return out


def negate_stats(stats: torch.Tensor) -> torch.Tensor:
    """The statistics of ``-x`` from those of ``x`` (exact: negation only flips signs)."""
    out = stats.clone()
    out[:, SUM] = -stats[:, SUM]
    return out
