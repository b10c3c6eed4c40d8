"""The per-step global norm has one definition: the recorder's device path and the writer's
path from sums of squares give the same number (tests/recorder belongs to the recorder's suite;
this checks only the shared rule)."""

from __future__ import annotations

import math

import numpy as np
import torch

from gradlog.recorder.norms import device_norm, norm_from_sumsq


def test_device_and_sumsq_paths_agree() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(17, 3), torch.randn(5), torch.randn(2, 2, 2)]
    ref = float(np.sqrt(sum(float((g.double() ** 2).sum()) for g in grads)))
    dev = device_norm(grads)
    assert dev is not None
    sumsq = [float((g.float() ** 2).sum()) for g in grads]
    assert math.isclose(float(dev), ref, rel_tol=1e-6)
    assert math.isclose(norm_from_sumsq(sumsq, [0, 0, 0]), ref, rel_tol=1e-6)


def test_any_nonfinite_element_makes_both_nan() -> None:
    grads = [torch.ones(4), torch.tensor([1.0, float("inf")])]
    dev = device_norm(grads)
    assert dev is not None
    assert math.isnan(float(dev))
    assert math.isnan(norm_from_sumsq([4.0, 1.0], [0, 1]))


def test_no_gradients_no_norm() -> None:
    assert device_norm([]) is None
