"""The one-pass numba kernel against the torch/numpy kernels it replaces (property-based), and
its loading: in the background, never blocking, degrading to the torch kernels."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlog.recorder import kernel, stats
from gradlog.recorder.stats import (
    copy_and_stats,
    exponent_histogram,
    stats_and_histogram,
    tensor_stats,
    update_stats,
)
from gradlog.schema import RECORDED_STATS
from tests.recorder.helpers import EXACT, assert_stats_match, reference_hist

pytestmark = pytest.mark.skipif(
    not kernel.start_loading(wait=True), reason="the numba kernel cannot run here"
)

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SPECIALS = (float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-40, -1e-45, 2.0**-149)


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    """A tensor of random shape (blocks straddled), dtype, scale and layout, with NaN, +-Inf,
    +-0 and subnormals injected at random places."""
    dtype = draw(st.sampled_from(DTYPES))
    numel = draw(st.sampled_from([0, 1, 7, 100, 4095, 4096, 4097, 9000]))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1.0, 1e-3, 1e-30, 1e-39, 1e30, 1e100]))  # no sumsq overflow
    g = np.random.default_rng(seed)
    values = g.standard_normal(numel) * scale
    for special in draw(st.lists(st.sampled_from(SPECIALS), max_size=6)):
        if numel:
            values[g.integers(numel)] = special
    t = torch.from_numpy(values).to(dtype)
    layout = draw(st.sampled_from(["flat", "2d", "transposed", "strided"]))
    if layout == "2d" and numel % 7 == 0 and numel:
        t = t.reshape(7, -1)
    elif layout == "transposed" and numel % 7 == 0 and numel:
        t = t.reshape(7, -1).t()
    elif layout == "strided":
        t = t[::2]
    return t


@settings(max_examples=150, deadline=None)
@given(st.lists(tensors(), min_size=1, max_size=5), st.booleans())
def test_fused_kernel_matches_the_old_kernels(ts: list[torch.Tensor], hist: bool) -> None:
    new, new_hist = stats_and_histogram(ts, hist=hist, method="fused")
    old = tensor_stats(ts, method="cpu")
    assert torch.equal(new[:, EXACT], old[:, EXACT])
    for row, t in zip(new.tolist(), ts, strict=True):
        assert_stats_match(row, t)  # sums within the float64 reference's tolerance
    if hist:
        assert new_hist is not None
        assert torch.equal(new_hist, exponent_histogram(ts, method="flat"))
        for h, t in zip(new_hist.numpy(), ts, strict=True):
            np.testing.assert_array_equal(h, reference_hist(t))
    else:
        assert new_hist is None


@settings(max_examples=60, deadline=None)
@given(st.lists(tensors(), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_fused_update_statistics_match_the_torch_difference(
    before: list[torch.Tensor], seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    after = [b + torch.randn(b.shape, generator=g).to(b.dtype) * 1e-3 for b in before]
    # float16/bfloat16 take the torch path, which overwrites its snapshot: pass copies.
    new = update_stats([b.clone() for b in before], after, method="fused")
    for row, b, a in zip(new.tolist(), before, after, strict=True):
        assert_stats_match(row, a - b)  # the update as torch computes it, in the dtype
    old = update_stats([b.clone() for b in before], after, method="cpu")
    assert torch.equal(new[:, EXACT], old[:, EXACT])


@settings(max_examples=80, deadline=None)
@given(st.lists(tensors(), min_size=1, max_size=5), st.booleans())
def test_copy_and_stats_copies_exactly_and_matches_tensor_stats(
    ts: list[torch.Tensor], want: bool
) -> None:
    for method in ("auto", "cpu"):
        targets = [torch.full(t.shape, 7.0, dtype=t.dtype) for t in ts]
        out = copy_and_stats(ts, targets, stats=want, method=method)
        for t, c in zip(ts, targets, strict=True):  # bit for bit, NaN, -0.0 and subnormals too
            assert torch.equal(c.view(-1).view(_bits(c)), t.reshape(-1).view(_bits(t)))
        if not want:
            assert out is None
            continue
        assert out is not None
        same = tensor_stats(ts, method="fused" if method == "auto" else method)
        assert torch.equal(out, same)  # the same kernel on the same values: identical


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_absmax_across_finite_and_masked_blocks(dtype: torch.dtype) -> None:
    # Three 4096-element blocks: absmax is taken from the magnitude bits in the finite blocks
    # and by the exact loop in a block holding NaN/Inf; the largest may be in either, and
    # negative. Each tensor also goes through the copy and difference kernels.
    n = 3 * 4096
    cases = []
    for largest_in_masked in (False, True):
        t = torch.linspace(-1.0, 1.0, n, dtype=dtype)
        t[4096 + 17] = float("nan")  # the middle block takes the exact loop
        t[4096 + 18] = -float("inf")
        t[4096 + 19] = 5.0 if largest_in_masked else 2.5
        t[2 * 4096 + 3] = -3.0  # a finite block: the largest magnitude there, negative
        t[5] = -0.0
        cases.append(t)
    stats = tensor_stats(cases, method="fused")
    for row, t in zip(stats.tolist(), cases, strict=True):
        assert_stats_match(row, t)
    assert stats[:, RECORDED_STATS.index("absmax")].tolist() == [3.0, 5.0]
    copies = [torch.empty_like(t) for t in cases]
    copied = copy_and_stats(cases, copies, stats=True, method="fused")
    assert copied is not None
    assert torch.equal(copied[:, EXACT], stats[:, EXACT])
    zeros = [torch.zeros_like(t) for t in cases]
    assert torch.equal(update_stats(zeros, cases, method="fused")[:, EXACT], stats[:, EXACT])


def test_copy_and_stats_fused_rejects_what_it_cannot_copy() -> None:
    half = [torch.ones(3, dtype=torch.float16)]
    with pytest.raises(ValueError, match="method 'fused' copies contiguous float32/float64"):
        copy_and_stats(half, [torch.empty_like(half[0])], stats=True, method="fused")
    into = [torch.empty_like(half[0])]
    out = copy_and_stats(half, into, stats=True)  # auto: the torch path
    assert out is not None
    assert out[0].tolist() == [3.0, 3.0, 3.0, 1.0, 0.0, 0.0]
    assert torch.equal(into[0], half[0])
    empty = copy_and_stats([], [], stats=True, method="fused")
    assert empty is not None
    assert empty.shape == (0, len(RECORDED_STATS))
    assert copy_and_stats([], [], stats=False) is None


def _bits(t: torch.Tensor) -> torch.dtype:
    return {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]


def test_update_stats_of_the_torch_path_overwrite_only_before() -> None:
    before = [torch.tensor([1.0, 2.0, 3.0])]
    after = [torch.tensor([1.5, 1.0, 3.0])]
    row = update_stats(before, after, method="cpu")[0].tolist()
    assert row == [3.0, -0.5, 1.25, 1.0, 1.0, 0.0]
    assert after[0].tolist() == [1.5, 1.0, 3.0]
    assert update_stats([], [], method="fused").shape == (0, len(RECORDED_STATS))


def test_fused_rejects_tensors_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="method 'fused' takes CPU tensors with the strided"):
        tensor_stats([torch.ones(2).to_sparse()], method="fused")


def test_auto_uses_the_old_kernel_until_the_new_one_is_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loading = kernel._Loader()
    loading.state = "loading"  # as while the background thread compiles
    monkeypatch.setattr(kernel, "_LOADER", loading)
    t = torch.tensor([1.0, float("nan"), -0.0, 1e-40])
    out, h = stats_and_histogram([t], hist=True)
    assert_stats_match(out[0].tolist(), t)
    assert h is not None
    np.testing.assert_array_equal(h[0].numpy(), reference_hist(t))
    assert loading.state == "loading"  # nothing waited for it, nothing restarted it


def test_loading_in_the_background_never_blocks_and_then_switches() -> None:
    script = textwrap.dedent(
        """
        import time, torch
        from gradlog.recorder import kernel, stats
        t0 = time.perf_counter()
        stats.tensor_stats([torch.randn(1000)])  # starts loading, answers with the old kernel
        first = time.perf_counter() - t0
        assert first < 1.0, first
        deadline = time.monotonic() + 300
        while not kernel.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kernel.ready(), kernel.unavailable_reason()
        print("ok", first)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=400, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_disabled_or_missing_numba_degrades_to_the_old_kernel() -> None:
    script = textwrap.dedent(
        """
        import sys, torch
        from gradlog.recorder import kernel, stats
        if sys.argv[1] == "missing":
            sys.modules["numba"] = None  # import numba now fails, as when it is not installed
        assert not kernel.start_loading(wait=True)
        print(kernel.unavailable_reason())
        out = stats.tensor_stats([torch.tensor([1.0, -2.0])])
        assert out[0].tolist() == [2.0, -1.0, 5.0, 2.0, 0.0, 0.0], out
        """
    )
    for case, env in (("disabled", {"GRADLOG_KERNEL": "torch"}), ("missing", {})):
        out = subprocess.run(
            [sys.executable, "-c", script, case],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**_env(), **env},
        )
        assert out.returncode == 0, out.stderr
        assert ("GRADLOG_KERNEL" if case == "disabled" else "numba") in out.stdout


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "GRADLOG_KERNEL"}


def test_methods_are_named_in_one_place() -> None:
    assert stats.METHODS == ("auto", "cpu", "flat", "fused")
