"""The statistics kernels against float64 numpy references, for the per-tensor CPU method, the
flattened method used on accelerators (which also runs on CPU) and the one-pass numba kernel."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from gradlog.recorder import kernel, stats
from gradlog.recorder.stats import (
    EMPTY_ROW,
    exponent_histogram,
    merge_stats,
    negate_stats,
    tensor_stats,
)
from gradlog.schema import EXP_BINS, EXP_MIN, HIST_BINS, HIST_NONFINITE_BIN, HIST_ZERO_BIN
from tests.recorder.helpers import (
    EXACT,
    STAT_NAMES,
    assert_stats_match,
    reference_hist,
    reference_stats,
)

HAVE_NUMBA = kernel.start_loading(wait=True)  # compiled here once, not in the middle of a test
METHODS = ("cpu", "flat", "fused") if HAVE_NUMBA else ("cpu", "flat")
SUBNORMAL = 1e-40  # a float32 subnormal (the smallest normal float32 is about 1.18e-38)
INF, NAN = math.inf, math.nan


def _special_values(dtype: torch.dtype) -> torch.Tensor:
    """Normal, zero (+0 and -0), subnormal, NaN and +-Inf values in one tensor."""
    values = [1.5, -2.25, 0.0, -0.0, 3.0, 0.75, -1e-3, INF, -INF, NAN, 7.0, 0.0]
    if dtype in (torch.float32, torch.float64):
        values += [SUBNORMAL, -SUBNORMAL, 2.0**-149]
    return torch.tensor(values, dtype=dtype)


def _cases() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 48, generator=g)
    cases = {
        "randn": torch.randn(1000, generator=g),
        "randn_shifted": torch.randn(37, 11, generator=g) * 5 + 3,
        "specials_f32": _special_values(torch.float32),
        "specials_f64": _special_values(torch.float64),
        "specials_f16": _special_values(torch.float16),
        "specials_bf16": _special_values(torch.bfloat16),
        "subnormals": torch.full((100,), SUBNORMAL) * torch.randn(100, generator=g).sign(),
        "empty": torch.empty(0),
        "empty_2d": torch.empty(3, 0),
        "all_nan": torch.full((7,), NAN),
        "all_inf": torch.tensor([INF, -INF, INF]),
        "all_zero": torch.tensor([0.0, -0.0, 0.0]),
        "scalar_0d": torch.tensor(-4.5),
        "scalar_0d_nan": torch.tensor(NAN),
        "f16": (torch.randn(513, generator=g) * 100).to(torch.float16),
        "bf16": (torch.randn(300, 7, generator=g) * 1e-3).to(torch.bfloat16),
        "f64": torch.randn(2048, generator=g, dtype=torch.float64) * 1e100,
        "f64_tiny": torch.randn(64, generator=g, dtype=torch.float64) * 1e-300,
        "transposed": base.t(),
        "strided": base[:, ::3],
        "strided_1d": torch.randn(1001, generator=g)[::2],
        "expanded": torch.randn(1, 5, generator=g).expand(9, 5),
        "big_values": torch.tensor([3e38, -3e38, 1e30, 2.0]),
        "requires_grad": torch.randn(10, generator=g, requires_grad=True),
    }
    with_nan = torch.randn(200, generator=g)
    with_nan[::17] = NAN
    with_nan[5] = INF
    cases["randn_with_nan"] = with_nan
    assert not cases["transposed"].is_contiguous()
    assert not cases["strided"].is_contiguous()
    return cases


CASES = _cases()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_tensor_stats_match_float64_reference(name: str, method: str) -> None:
    t = CASES[name]
    out = tensor_stats([t], method=method)
    assert out.shape == (1, len(STAT_NAMES))
    assert out.dtype == torch.float64
    assert_stats_match(out[0].tolist(), t)


@pytest.mark.parametrize("method", METHODS)
def test_tensor_stats_of_many_tensors_keep_their_order(method: str) -> None:
    tensors = [CASES[k] for k in sorted(CASES)]
    out = tensor_stats(tensors, method=method)
    assert out.shape == (len(tensors), len(STAT_NAMES))
    for row, t in zip(out.tolist(), tensors, strict=True):
        assert_stats_match(row, t)


def test_hand_computed_stats() -> None:
    # [1, -2, 0, -0, NaN, Inf, 3]: 7 elements, finite sum 2, sumsq 14, absmax 3, two zeros,
    # two non-finite values.
    t = torch.tensor([1.0, -2.0, 0.0, -0.0, NAN, INF, 3.0])
    for method in METHODS:
        row = tensor_stats([t], method=method)[0].tolist()
        assert row == [7.0, 2.0, 14.0, 3.0, 2.0, 2.0]


@pytest.mark.parametrize("method", METHODS)
def test_stats_of_tensors_without_finite_values(method: str) -> None:
    out = tensor_stats([torch.empty(0), torch.full((4,), NAN), torch.tensor([-INF])], method=method)
    assert out[0].tolist() == list(EMPTY_ROW)
    # No finite value: sums 0, absmax 0; every element counted as non-finite.
    assert out[1].tolist() == [4.0, 0.0, 0.0, 0.0, 0.0, 4.0]
    assert out[2].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("method", METHODS)
def test_all_empty_list_and_mixed_empty(method: str) -> None:
    assert tensor_stats([], method=method).shape == (0, len(STAT_NAMES))
    out = tensor_stats([torch.empty(0), torch.empty(2, 0)], method=method)
    assert out.tolist() == [list(EMPTY_ROW)] * 2


def test_methods_agree_on_random_data() -> None:
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(int(n), generator=g) * s for n, s in [(1, 1), (99, 1e-20), (4097, 3e3)]]
    tensors.append(torch.randn(50, generator=g).to(torch.bfloat16))
    cpu = tensor_stats(tensors, method="cpu")
    flat = tensor_stats(tensors, method="flat")
    exact = EXACT
    assert torch.equal(cpu[:, exact], flat[:, exact])
    torch.testing.assert_close(cpu[:, 1:3], flat[:, 1:3], rtol=3e-5, atol=1e-30)


def test_auto_uses_a_method_that_matches_the_reference() -> None:
    g = torch.Generator().manual_seed(2)
    few = [torch.randn(5, generator=g) for _ in range(3)]
    many = [torch.randn(3, generator=g) for _ in range(stats.CPU_FLAT_MIN_TENSORS + 1)]
    for tensors in (few, many):
        out = tensor_stats(tensors)
        for row, t in zip(out.tolist(), tensors, strict=True):
            assert_stats_match(row, t)


def test_flat_method_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny chunks: tensors straddle chunk limits, one is larger than a whole chunk.
    monkeypatch.setattr(stats, "FLAT_CHUNK_NUMEL", 7)
    tensors = [CASES["specials_f32"], torch.arange(5.0), torch.empty(0), torch.randn(30)]
    out = tensor_stats(tensors, method="flat")
    for row, t in zip(out.tolist(), tensors, strict=True):
        assert_stats_match(row, t)
    hist = exponent_histogram(tensors, method="flat")
    for h, t in zip(hist.numpy(), tensors, strict=True):
        np.testing.assert_array_equal(h, reference_hist(t))


@pytest.mark.parametrize("fn", [tensor_stats, exponent_histogram])
def test_unknown_method_is_rejected(fn: object) -> None:
    assert callable(fn)
    with pytest.raises(
        ValueError, match="method must be 'auto', 'cpu', 'flat' or 'fused', got 'gpu'"
    ):
        fn([torch.ones(2)], method="gpu")


# ----------------------------------------------------------------------------- merge
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["randn", "randn_with_nan", "specials_f32", "f16", "all_nan"])
def test_merge_of_halves_equals_stats_of_whole(name: str, method: str) -> None:
    whole = CASES[name].reshape(-1)
    for cut in (0, 1, whole.numel() // 2, whole.numel()):
        a, b = whole[:cut], whole[cut:]
        merged = merge_stats(tensor_stats([a], method=method), tensor_stats([b], method=method))
        direct = tensor_stats([whole], method=method)
        exact = EXACT
        assert torch.equal(merged[:, exact], direct[:, exact]), (cut, merged, direct)
        assert_stats_match(merged[0].tolist(), whole)


def test_merge_is_row_wise_and_empty_is_its_identity() -> None:
    xs = [CASES["randn"], CASES["randn_with_nan"], CASES["all_nan"]]
    ys = [CASES["f16"], torch.empty(0), CASES["subnormals"]]
    merged = merge_stats(tensor_stats(xs), tensor_stats(ys))
    for row, x, y in zip(merged.tolist(), xs, ys, strict=True):
        assert_stats_match(row, torch.cat([x.reshape(-1).float(), y.reshape(-1).float()]))
    empty = torch.tensor([EMPTY_ROW] * 3, dtype=torch.float64)
    assert torch.equal(merge_stats(tensor_stats(xs), empty), tensor_stats(xs))
    assert torch.equal(merge_stats(empty, tensor_stats(xs)), tensor_stats(xs))


def test_merge_does_not_modify_its_inputs() -> None:
    a, b = tensor_stats([CASES["randn"]]), tensor_stats([CASES["f16"]])
    a0, b0 = a.clone(), b.clone()
    merge_stats(a, b)
    assert torch.equal(a, a0)
    assert torch.equal(b, b0)


# ----------------------------------------------------------------------------- histogram
def _bin(k: int) -> int:
    """The histogram bin of 2**k <= |x| < 2**(k+1), from the schema's documented layout."""
    return 1 + k - EXP_MIN


@pytest.mark.parametrize("method", METHODS)
def test_histogram_hand_checked_bins(method: str) -> None:
    values = [1.0, 0.75, 3.0, -3.0, 2.0**-149, 0.0, -0.0, NAN, INF, -INF, 1.999, 2.0]
    h = exponent_histogram([torch.tensor(values)], method=method)[0]
    assert h.dtype == torch.int64
    assert h.shape == (HIST_BINS,)
    expected = torch.zeros(HIST_BINS, dtype=torch.int64)
    expected[_bin(0)] += 2  # 1.0 and 1.999
    expected[_bin(-1)] += 1  # 0.75
    expected[_bin(1)] += 3  # 3.0, -3.0 and 2.0
    expected[1] += 1  # 2**-149, the smallest subnormal, in the first exponent bin
    expected[HIST_ZERO_BIN] += 2  # +0 and -0
    expected[HIST_NONFINITE_BIN] += 3  # NaN, +Inf, -Inf
    assert torch.equal(h, expected)
    assert HIST_ZERO_BIN == 0
    assert HIST_NONFINITE_BIN == HIST_BINS - 1
    assert _bin(-149) == 1


@pytest.mark.parametrize("method", METHODS)
def test_histogram_float32_extremes(method: str) -> None:
    f32 = torch.finfo(torch.float32)
    t = torch.tensor([f32.max, -f32.max, f32.tiny, f32.tiny / 2, SUBNORMAL])
    h = exponent_histogram([t], method=method)[0]
    assert h[EXP_BINS] == 2  # the last exponent bin holds 2**127 <= |x| < 2**128
    assert h[_bin(-126)] == 1  # smallest normal
    assert h[_bin(-127)] == 1  # the largest subnormal power of two
    assert h[_bin(math.frexp(SUBNORMAL)[1] - 1)] == 1  # 1e-40 = m * 2**e, m in [0.5, 1)
    assert int(h.sum()) == t.numel()


@pytest.mark.parametrize("method", METHODS)
def test_histogram_float64_values_are_binned_exactly_and_clamped(method: str) -> None:
    # Beyond the float32 range, float64 values land in the first/last exponent bin (not in the
    # zero or non-finite bins); within it, they are binned by their exact float64 exponent.
    t = torch.tensor([1e300, -1e-300, 2.0 - 2.0**-40, 0.5, 0.0, NAN], dtype=torch.float64)
    h = exponent_histogram([t], method=method)[0]
    expected = torch.zeros(HIST_BINS, dtype=torch.int64)
    expected[EXP_BINS] = 1
    expected[1] = 1
    expected[_bin(0)] = 1  # just below 2: rounding it to float32 would give 2.0 (k=1)
    expected[_bin(-1)] = 1
    expected[HIST_ZERO_BIN] = 1
    expected[HIST_NONFINITE_BIN] = 1
    assert torch.equal(h, expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_histogram_matches_reference(name: str, method: str) -> None:
    t = CASES[name]
    h = exponent_histogram([t], method=method)[0].numpy()
    np.testing.assert_array_equal(h, reference_hist(t))
    assert int(h.sum()) == t.numel()


def test_histogram_methods_agree_on_random_data_with_subnormals() -> None:
    g = torch.Generator().manual_seed(3)
    tensors = []
    for scale in (1.0, 1e-30, 1e-39, 1e-44, 1e30):  # 1e-39 and 1e-44: float32 subnormals
        t = torch.randn(2000, generator=g) * scale
        t[::97] = 0.0
        tensors.append(t)
    tensors.append(torch.randn(333, generator=g).to(torch.bfloat16))
    tensors.append(torch.randn(333, generator=g).to(torch.float16) * 1e-5)  # fp16 subnormals
    cpu = exponent_histogram(tensors, method="cpu")
    flat = exponent_histogram(tensors, method="flat")
    assert torch.equal(cpu, flat)
    assert cpu[1:4].sum(dim=1).gt(0).all()  # subnormal tensors really populate low bins
    for h, t in zip(cpu.numpy(), tensors, strict=True):
        np.testing.assert_array_equal(h, reference_hist(t))
        assert h.sum() == t.numel()
    auto = exponent_histogram(tensors)
    assert torch.equal(auto, cpu)


def test_histogram_of_empty_inputs() -> None:
    for method in METHODS:
        assert exponent_histogram([], method=method).shape == (0, HIST_BINS)
        h = exponent_histogram([torch.empty(0), torch.ones(3)], method=method)
        assert h[0].sum() == 0
        assert h[1, _bin(0)] == 3


def test_reference_stats_helper_is_itself_correct() -> None:
    # The reference used above, checked by hand on a small case.
    ref = reference_stats(torch.tensor([2.0, NAN, -0.0, -4.0]))
    assert ref == {
        "count": 4.0,
        "sum": -2.0,
        "sumsq": 20.0,
        "absmax": 4.0,
        "zeros": 1.0,
        "nonfinite": 1.0,
    }
    assert reference_hist(torch.tensor([0.75]))[_bin(-1)] == 1


@pytest.mark.parametrize("method", METHODS)
def test_kernels_do_not_warn_on_non_finite_or_overflowing_values(method: str) -> None:
    # The kernels run inside the training loop: a NaN gradient must not print numpy warnings.
    tensors = [
        CASES["specials_f32"],
        CASES["all_inf"],
        CASES["randn_with_nan"],
        torch.tensor([1e300, -1e300], dtype=torch.float64),  # sumsq overflows float64
        torch.tensor([3e38, 3e38]),  # sumsq overflows float32
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor_stats(tensors, method=method)
        exponent_histogram(tensors, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_negated_statistics_are_those_of_the_negated_tensor(method: str) -> None:
    """The recorder gets update statistics from (before - after) and negates them."""
    t = torch.cat([_special_values(torch.float32), torch.randn(100)])
    got = negate_stats(tensor_stats([t, torch.zeros(0)], method=method))
    assert_stats_match(got[0].tolist(), -t)
    assert got[1].tolist() == list(EMPTY_ROW)  # the identity element stays the identity
