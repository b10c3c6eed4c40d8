"""The numba statistics kernels (compiled code; imported only by :mod:`gradlog.recorder.kernel`).

One call covers every tensor of a step: the caller passes the tensors' data addresses and sizes,
and each tensor is read once, in blocks small enough to stay in the L1 cache while a few simple
loops (each of which LLVM vectorises) go over the block: float64 sums and sums of squares; the
minimum and maximum through four integer reductions of the raw bits; zeros only in blocks that
hold one; the exponent histogram by the biased-exponent bit field. A block holding NaN or +-Inf
(its float64 sum is then not finite) is redone by an exact scalar loop that masks them.

Importing this module compiles the kernels (or loads them from numba's on-disk cache): it is
imported off the training thread.
"""

# Functions compiled by numba are typed by its inference, per call: no annotations here.
# ruff: noqa: ANN001, ANN202, PLR0917
# mypy: ignore-errors

from __future__ import annotations

import math

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from gradlog.schema import EXP_BINS, EXP_MIN, HIST_BINS, HIST_NONFINITE_BIN

BLOCK = 4096
"""Elements per block (16 KiB of float32): small enough for L1, large enough to vectorise."""

# Reassociation lets LLVM vectorise the float64 sums; no nnan/ninf: NaN and Inf are real inputs.
_FAST = {"reassoc", "contract"}
_OPTS = {"nogil": True, "cache": True, "fastmath": _FAST, "boundscheck": False}

_F32_LO = 1 + (1 - 127) - EXP_MIN  # bin of the smallest normal float32 exponent field (1)


@intrinsic
def _address(typingctx, addr):
    """A void pointer from an integer address (a tensor's ``data_ptr()``)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


@njit(**_OPTS)
def _sums(x):
    s = 0.0
    ss = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        s += v
        ss += v * v
    return s, ss


@njit(**_OPTS)
def _extremes(b, u):
    """Max/min of the bits as signed and as unsigned integers (compares only: stays 32-bit)."""
    smax = b[0]
    smin = b[0]
    umax = u[0]
    umin = u[0]
    for i in range(b.size):
        v = b[i]
        w = u[i]
        smax = v if v > smax else smax
        smin = v if v < smin else smin
        umax = w if w > umax else umax
        umin = w if w < umin else umin
    return smax, smin, umax, umin


@njit(**_OPTS)
def _zeros(x):
    """Zeros (+0 and -0) of a block, counted in float32 lanes (exact: a block holds far fewer
    than 2**24 elements), which vectorise twice as wide as integer counts here."""
    z = np.float32(0)
    one = np.float32(1)
    nil = np.float32(0)
    for i in range(x.size):
        z += one if x[i] == 0 else nil
    return np.int64(z)


@njit(**_OPTS)
def _bits_as_float(bits, like):
    cell = np.empty(1, dtype=like.dtype)
    cell.view(bits.dtype)[0] = bits[0]
    return np.float64(cell[0])


@njit(**_OPTS)
def _exact_block(x, acc):
    """The block's statistics, NaN/Inf masked, one element at a time (rare: non-finite data)."""
    s = 0.0
    ss = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        if math.isfinite(v):
            s += v
            ss += v * v
            acc[3] = min(acc[3], v)
            acc[4] = max(acc[4], v)
            if v == 0:
                acc[6] += 1
        else:
            acc[7] += 1
    acc[1] += s
    acc[2] += ss


@njit(**_OPTS)
def _block_stats(x, b, u, acc, smallest, scratch_b, scratch_u):
    """Add the statistics of block ``x`` (with its bits as signed ``b`` and unsigned ``u``)."""
    s, ss = _sums(x)
    if not (math.isfinite(s) and math.isfinite(ss)):  # NaN/Inf inside (or float64 overflow)
        _exact_block(x, acc)
        return
    acc[1] += s
    acc[2] += ss
    smax, smin, umax, umin = _extremes(b, u)
    # Positive floats order as their bits; negative ones as their unsigned bits, reversed:
    # the minimum is the negative with the largest unsigned bits, else the smallest
    # non-negative; the maximum is the largest non-negative, else the smallest negative.
    scratch_b[0] = smin
    scratch_u[0] = umax
    lo = _bits_as_float(scratch_u, x) if smin < 0 else _bits_as_float(scratch_b, x)
    scratch_b[0] = smax
    scratch_u[0] = umin
    hi = _bits_as_float(scratch_b, x) if smax >= 0 else _bits_as_float(scratch_u, x)
    acc[3] = min(acc[3], lo)
    acc[4] = max(acc[4], hi)
    if umin == 0 or smin == smallest:  # +0 (all bits clear) or -0 (only the sign bit) present
        acc[6] += _zeros(x)


@njit(**_OPTS)
def _block_fields(u, fields, shift, mask):
    """Count the biased-exponent fields of block ``u`` (four counters against store stalls)."""
    n = u.size
    i = 0
    while i + 4 <= n:
        fields[0, (u[i] >> shift) & mask] += 1
        fields[1, (u[i + 1] >> shift) & mask] += 1
        fields[2, (u[i + 2] >> shift) & mask] += 1
        fields[3, (u[i + 3] >> shift) & mask] += 1
        i += 4
    while i < n:
        fields[0, (u[i] >> shift) & mask] += 1
        i += 1


@njit(**_OPTS)
def _f32_hist(u, fields, hist, zeros):
    """Bins from float32 exponent fields; field 0 holds the ``zeros`` and the subnormals,
    which are binned exactly by their mantissa (only when there are any)."""
    by_field = fields.sum(axis=0)
    for f in range(1, 255):  # 2**(f-127) <= |x| < 2**(f-126)
        hist[_F32_LO + f - 1] += by_field[f]
    hist[HIST_NONFINITE_BIN] += by_field[255]
    hist[0] += zeros
    if by_field[0] > zeros:
        for i in range(u.size):
            mag = u[i] & 0x7FFFFFFF
            if 0 < mag < 0x800000:  # subnormal: mag * 2**-149, exponent from the mantissa
                _, e = math.frexp(np.float64(mag))  # mag = m * 2**e, m in [0.5, 1)
                hist[e] += 1  # bin 1 + (e - 1 - 149) - EXP_MIN = e


@njit(**_OPTS)
def _f64_hist(fields, hist):
    """Bins from float64 exponent fields, clamped into the float32 exponent range."""
    by_field = fields.sum(axis=0)
    hist[HIST_NONFINITE_BIN] += by_field[2047]
    for f in range(1, 2047):  # 2**(f-1023) <= |x| < 2**(f-1022)
        if by_field[f]:
            k = f - 1023
            hist[min(max(1 + k - EXP_MIN, 1), EXP_BINS)] += by_field[f]
    return by_field[0]  # zeros and float64 subnormals, resolved by the caller


@njit(**_OPTS)
def _tensor(x, acc, hist, want_hist, fields, smallest, scratch_b, scratch_u):
    n = x.size
    acc[0] = n
    acc[3] = math.inf
    acc[4] = -math.inf
    b = x.view(scratch_b.dtype)
    u = x.view(scratch_u.dtype)
    wide = x.itemsize == 8
    shift = 52 if wide else 23
    mask = 2047 if wide else 255
    if want_hist:
        fields[:] = 0
    for start in range(0, n, BLOCK):
        end = min(n, start + BLOCK)
        xb = x[start:end]
        ub = u[start:end]
        _block_stats(xb, b[start:end], ub, acc, smallest, scratch_b, scratch_u)
        if want_hist:
            _block_fields(ub, fields, shift, mask)
    if acc[3] > acc[4]:  # no finite element: the identities
        acc[5] = 0.0
    else:
        acc[5] = max(-acc[3], acc[4])
    if want_hist:
        if wide:
            small = _f64_hist(fields, hist)
            zeros = np.int64(acc[6])  # field 0: zeros, and float64 subnormals (first bin)
            hist[0] += zeros
            hist[1] += small - zeros
        else:
            _f32_hist(u, fields, hist, np.int64(acc[6]))


@njit(**_OPTS)
def fused(addresses, sizes, wide, stats, hists, want_hist):
    """Statistics (and histograms) of the tensors at ``addresses``: float64 if ``wide``, else
    float32, contiguous, ``sizes`` elements each. Fills ``stats`` [n, 8] (zeroed by the caller)
    and, if ``want_hist``, ``hists`` [n, HIST_BINS] (zeroed; else [1, HIST_BINS], unused)."""
    fields = np.zeros((4, 2048 if wide else 256), dtype=np.int64)
    for t in range(addresses.size):
        if wide:
            x = carray(_address(addresses[t]), (sizes[t],), np.float64)
            _tensor(
                x,
                stats[t],
                hists[t if want_hist else 0],
                want_hist,
                fields,
                np.int64(-(2**63)),
                np.empty(1, np.int64),
                np.empty(1, np.uint64),
            )
        else:
            x32 = carray(_address(addresses[t]), (sizes[t],), np.float32)
            _tensor(
                x32,
                stats[t],
                hists[t if want_hist else 0],
                want_hist,
                fields,
                np.int32(-(2**31)),
                np.empty(1, np.int32),
                np.empty(1, np.uint32),
            )


@njit(**_OPTS)
def _diff_tensor(x0, x1, acc, scratch, smallest, scratch_b, scratch_u):
    n = x0.size
    acc[0] = n
    acc[3] = math.inf
    acc[4] = -math.inf
    for start in range(0, n, BLOCK):
        end = min(n, start + BLOCK)
        d = scratch[: end - start]
        a0 = x0[start:end]
        a1 = x1[start:end]
        for i in range(d.size):
            d[i] = a1[i] - a0[i]  # in the tensors' dtype, as torch computes after - before
        _block_stats(
            d, d.view(scratch_b.dtype), d.view(scratch_u.dtype), acc, smallest, scratch_b, scratch_u
        )
    acc[5] = 0.0 if acc[3] > acc[4] else max(-acc[3], acc[4])


@njit(**_OPTS)
def difference(before, after, sizes, wide, stats):
    """Statistics of ``after - before`` per tensor pair (addresses as in :func:`fused`),
    without writing the difference anywhere but an L1-sized scratch block."""
    for t in range(before.size):
        if wide:
            s64 = np.empty(BLOCK, np.float64)
            x0 = carray(_address(before[t]), (sizes[t],), np.float64)
            x1 = carray(_address(after[t]), (sizes[t],), np.float64)
            _diff_tensor(
                x0,
                x1,
                stats[t],
                s64,
                np.int64(-(2**63)),
                np.empty(1, np.int64),
                np.empty(1, np.uint64),
            )
        else:
            s32 = np.empty(BLOCK, np.float32)
            y0 = carray(_address(before[t]), (sizes[t],), np.float32)
            y1 = carray(_address(after[t]), (sizes[t],), np.float32)
            _diff_tensor(
                y0,
                y1,
                stats[t],
                s32,
                np.int32(-(2**31)),
                np.empty(1, np.int32),
                np.empty(1, np.uint32),
            )


@njit(**_OPTS)
def _copy_tensor(x, y, acc, want_stats, smallest, scratch_b, scratch_u):
    """Copy ``x`` into ``y`` block by block; with ``want_stats`` take the statistics of each
    block from the copy while it is still in L1 (the source is read once)."""
    n = x.size
    acc[0] = n
    acc[3] = math.inf
    acc[4] = -math.inf
    for start in range(0, n, BLOCK):
        end = min(n, start + BLOCK)
        xb = x[start:end]
        yb = y[start:end]
        for i in range(yb.size):
            yb[i] = xb[i]
        if want_stats:
            b = yb.view(scratch_b.dtype)
            u = yb.view(scratch_u.dtype)
            _block_stats(yb, b, u, acc, smallest, scratch_b, scratch_u)
    acc[5] = 0.0 if acc[3] > acc[4] else max(-acc[3], acc[4])


@njit(**_OPTS)
def copy(sources, targets, sizes, wide, stats, want_stats):
    """Copy each tensor at ``sources`` to the buffer at ``targets`` (addresses and dtype as in
    :func:`fused`) and, with ``want_stats``, fill ``stats`` [n, 8] (zeroed by the caller) with
    the statistics of the copied values in the same pass."""
    for t in range(sources.size):
        row = stats[t if want_stats else 0]
        if wide:
            x = carray(_address(sources[t]), (sizes[t],), np.float64)
            y = carray(_address(targets[t]), (sizes[t],), np.float64)
            _copy_tensor(
                x,
                y,
                row,
                want_stats,
                np.int64(-(2**63)),
                np.empty(1, np.int64),
                np.empty(1, np.uint64),
            )
        else:
            x32 = carray(_address(sources[t]), (sizes[t],), np.float32)
            y32 = carray(_address(targets[t]), (sizes[t],), np.float32)
            _copy_tensor(
                x32,
                y32,
                row,
                want_stats,
                np.int32(-(2**31)),
                np.empty(1, np.int32),
                np.empty(1, np.uint32),
            )


def warm_up() -> None:
    """Run each kernel once on tiny numpy inputs (compiles it, or loads it from the cache)."""
    for dtype in (np.float32, np.float64):
        x = np.array([1.0, -0.0, np.nan, 1e-40], dtype=dtype)
        addresses = np.array([x.ctypes.data], dtype=np.int64)
        sizes = np.array([x.size], dtype=np.int64)
        wide = dtype == np.float64
        stats = np.zeros((1, 8))
        fused(addresses, sizes, wide, stats, np.zeros((1, HIST_BINS), dtype=np.int64), True)
        difference(addresses, addresses, sizes, wide, stats)
        y = np.empty_like(x)
        copy(addresses, np.array([y.ctypes.data], dtype=np.int64), sizes, wide, stats, True)
