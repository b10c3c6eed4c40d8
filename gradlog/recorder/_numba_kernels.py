"""The numba statistics kernels (compiled code; imported only by :mod:`gradlog.recorder.kernel`).

One call covers every tensor of a step: the caller passes the tensors' data addresses and sizes,
and each tensor is read once, in blocks small enough to stay in the L1 cache. One loop (which
LLVM vectorises) goes over each block and takes every statistic of
:data:`gradlog.schema.RECORDED_STATS` at once: float64 sums and sums of squares, the largest
magnitude as the integer maximum of the bits with the sign cleared, and the zeros (magnitude
bits 0). A block holding NaN or +-Inf (its float64 sum is then not finite) is redone by an exact
scalar loop that masks them. On histogram steps a second loop over the block, still in L1,
counts the biased-exponent bit fields.

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

from gradlog.schema import EXP_BINS, EXP_MIN, HIST_BINS, HIST_NONFINITE_BIN, RECORDED_STATS

BLOCK = 4096
"""Elements per block (16 KiB of float32): small enough for L1, large enough to vectorise."""

# Reassociation lets LLVM vectorise the float64 sums; no nnan/ninf: NaN and Inf are real inputs.
_FAST = {"reassoc", "contract"}
_OPTS = {"nogil": True, "cache": True, "fastmath": _FAST, "boundscheck": False}

_F32_LO = 1 + (1 - 127) - EXP_MIN  # bin of the smallest normal float32 exponent field (1)

NSTATS = len(RECORDED_STATS)
_COUNT, _SUM, _SUMSQ, _ABSMAX, _ZEROS, _NONFINITE = (
    RECORDED_STATS.index(k) for k in ("count", "sum", "sumsq", "absmax", "zeros", "nonfinite")
)
# Dtype carriers for the bit views, and the masks that clear the sign bit (magnitude bits).
_I32 = np.zeros(1, np.int32)
_U32 = np.zeros(1, np.uint32)
_I64 = np.zeros(1, np.int64)
_U64 = np.zeros(1, np.uint64)
_MAG32 = np.array([0x7FFFFFFF], np.int32)
_MAG64 = np.array([0x7FFFFFFFFFFFFFFF], np.int64)


@intrinsic
def _address(typingctx, addr):
    """A void pointer from an integer address (a tensor's ``data_ptr()``)."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


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
            acc[_ABSMAX] = max(acc[_ABSMAX], abs(v))
            if v == 0:
                acc[_ZEROS] += 1
        else:
            acc[_NONFINITE] += 1
    acc[_SUM] += s
    acc[_SUMSQ] += ss


@njit(**_OPTS)
def _block_stats(x, b, acc, magnitude):
    """Add the statistics of block ``x`` (its bits as signed integers ``b``) to ``acc`` in one
    loop: float64 sum and sum of squares, the largest magnitude as bits (``b & magnitude[0]``:
    non-negative, ordered as the absolute values) and the zeros (magnitude bits 0: +0 and -0),
    counted in float32 lanes (exact: a block holds far fewer than 2**24 elements). Returns the
    block's largest magnitude bits, or 0 when a NaN/Inf sent the block to the exact loop."""
    s = 0.0
    ss = 0.0
    mag = magnitude[0]
    top = b[0] ^ b[0]  # 0 in the bits' integer type
    z = np.float32(0)
    one = np.float32(1)
    nil = np.float32(0)
    for i in range(x.size):
        v = np.float64(x[i])
        s += v
        ss += v * v
        a = b[i] & mag
        top = a if a > top else top
        z += one if a == 0 else nil
    if not (math.isfinite(s) and math.isfinite(ss)):  # NaN/Inf inside (or float64 overflow)
        _exact_block(x, acc)
        return top ^ top
    acc[_SUM] += s
    acc[_SUMSQ] += ss
    acc[_ZEROS] += np.int64(z)
    return top


@njit(**_OPTS)
def _finish(acc, top, like, signed):
    """absmax from the largest magnitude bits ``top`` of the finite blocks and the exact
    blocks' float maximum already in ``acc``."""
    cell = np.empty(1, dtype=like.dtype)
    cell.view(signed.dtype)[0] = top
    acc[_ABSMAX] = max(acc[_ABSMAX], np.float64(cell[0]))


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
def _tensor(x, acc, hist, want_hist, fields, signed, unsigned, magnitude):
    n = x.size
    acc[_COUNT] = n
    b = x.view(signed.dtype)
    u = x.view(unsigned.dtype)
    wide = x.itemsize == 8
    shift = 52 if wide else 23
    mask = 2047 if wide else 255
    if want_hist:
        fields[:] = 0
    top = signed[0]  # 0 in the bits' integer type (the carrier holds 0)
    for start in range(0, n, BLOCK):
        end = min(n, start + BLOCK)
        top = max(top, _block_stats(x[start:end], b[start:end], acc, magnitude))
        if want_hist:
            _block_fields(u[start:end], fields, shift, mask)
    _finish(acc, top, x, signed)
    if want_hist:
        if wide:
            small = _f64_hist(fields, hist)
            zeros = np.int64(acc[_ZEROS])  # field 0: zeros, and float64 subnormals (first bin)
            hist[0] += zeros
            hist[1] += small - zeros
        else:
            _f32_hist(u, fields, hist, np.int64(acc[_ZEROS]))


@njit(**_OPTS)
def fused(addresses, sizes, wide, stats, hists, want_hist):
    """Statistics (and histograms) of the tensors at ``addresses``: float64 if ``wide``, else
    float32, contiguous, ``sizes`` elements each. Fills ``stats`` [n, NSTATS] (zeroed by the
    caller) and, if ``want_hist``, ``hists`` [n, HIST_BINS] (zeroed; else [1, HIST_BINS],
    unused)."""
    fields = np.zeros((4, 2048 if wide else 256), dtype=np.int64)
    for t in range(addresses.size):
        row = stats[t]
        into = hists[t if want_hist else 0]
        if wide:
            x = carray(_address(addresses[t]), (sizes[t],), np.float64)
            _tensor(x, row, into, want_hist, fields, _I64, _U64, _MAG64)
        else:
            x32 = carray(_address(addresses[t]), (sizes[t],), np.float32)
            _tensor(x32, row, into, want_hist, fields, _I32, _U32, _MAG32)


@njit(**_OPTS)
def _diff_tensor(x0, x1, acc, scratch, signed, magnitude):
    n = x0.size
    acc[_COUNT] = n
    top = signed[0]  # 0 in the bits' integer type (the carrier holds 0)
    for start in range(0, n, BLOCK):
        end = min(n, start + BLOCK)
        d = scratch[: end - start]
        a0 = x0[start:end]
        a1 = x1[start:end]
        for i in range(d.size):
            d[i] = a1[i] - a0[i]  # in the tensors' dtype, as torch computes after - before
        top = max(top, _block_stats(d, d.view(signed.dtype), acc, magnitude))
    _finish(acc, top, scratch, signed)


@njit(**_OPTS)
def difference(before, after, sizes, wide, stats):
    """Statistics of ``after - before`` per tensor pair (addresses as in :func:`fused`),
    without writing the difference anywhere but an L1-sized scratch block."""
    for t in range(before.size):
        if wide:
            x0 = carray(_address(before[t]), (sizes[t],), np.float64)
            x1 = carray(_address(after[t]), (sizes[t],), np.float64)
            _diff_tensor(x0, x1, stats[t], np.empty(BLOCK, np.float64), _I64, _MAG64)
        else:
            y0 = carray(_address(before[t]), (sizes[t],), np.float32)
            y1 = carray(_address(after[t]), (sizes[t],), np.float32)
            _diff_tensor(y0, y1, stats[t], np.empty(BLOCK, np.float32), _I32, _MAG32)


@njit(**_OPTS)
def _copy_tensor(x, y, acc, want_stats, signed, magnitude):
    """Copy ``x`` into ``y`` block by block; with ``want_stats`` take the statistics of each
    block from the copy while it is still in L1 (the source is read once)."""
    n = x.size
    acc[_COUNT] = n
    top = signed[0]  # 0 in the bits' integer type (the carrier holds 0)
    for start in range(0, n, BLOCK):
        end = min(n, start + BLOCK)
        xb = x[start:end]
        yb = y[start:end]
        for i in range(yb.size):
            yb[i] = xb[i]
        if want_stats:
            top = max(top, _block_stats(yb, yb.view(signed.dtype), acc, magnitude))
    _finish(acc, top, x, signed)


@njit(**_OPTS)
def copy(sources, targets, sizes, wide, stats, want_stats):
    """Copy each tensor at ``sources`` to the buffer at ``targets`` (addresses and dtype as in
    :func:`fused`) and, with ``want_stats``, fill ``stats`` [n, NSTATS] (zeroed by the caller)
    with the statistics of the copied values in the same pass."""
    for t in range(sources.size):
        row = stats[t if want_stats else 0]
        if wide:
            x = carray(_address(sources[t]), (sizes[t],), np.float64)
            y = carray(_address(targets[t]), (sizes[t],), np.float64)
            _copy_tensor(x, y, row, want_stats, _I64, _MAG64)
        else:
            x32 = carray(_address(sources[t]), (sizes[t],), np.float32)
            y32 = carray(_address(targets[t]), (sizes[t],), np.float32)
            _copy_tensor(x32, y32, row, want_stats, _I32, _MAG32)


def warm_up() -> None:
    """Run each kernel once on tiny numpy inputs (compiles it, or loads it from the cache)."""
    for dtype in (np.float32, np.float64):
        x = np.array([1.0, -0.0, np.nan, 1e-40], dtype=dtype)
        addresses = np.array([x.ctypes.data], dtype=np.int64)
        sizes = np.array([x.size], dtype=np.int64)
        wide = dtype == np.float64
        stats = np.zeros((1, NSTATS))
        fused(addresses, sizes, wide, stats, np.zeros((1, HIST_BINS), dtype=np.int64), True)
        difference(addresses, addresses, sizes, wide, stats)
        y = np.empty_like(x)
        copy(addresses, np.array([y.ctypes.data], dtype=np.int64), sizes, wide, stats, True)
