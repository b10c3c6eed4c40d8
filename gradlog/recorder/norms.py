"""The per-step global gradient norm, defined once for the recorder and its writer.

The rule: the L2 norm over every element of the gradients the optimizer applies, i.e. the square
root of the sum of the per-tensor sums of squares; NaN when any element is NaN or +-Inf (as
torch's own norm would be); computed in float32 at least (float64 when any gradient is float64).
The recorder computes it on the device where it has no statistics rows (:func:`device_norm`), the
writer from the rows' ``sumsq``/``nonfinite`` columns (:func:`norm_from_sumsq`): the same number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch


def norm_from_sumsq(sumsq: npt.ArrayLike, nonfinite: npt.ArrayLike) -> float:
    """The global norm from per-tensor sums of squares and non-finite counts."""
    if np.asarray(nonfinite).sum() != 0:
        return float("nan")
    total = float(np.sqrt(np.asarray(sumsq, dtype=np.float64).sum()))
    return total if np.isfinite(total) else float("nan")


def device_norm(grads: list[torch.Tensor]) -> torch.Tensor | None:
    """The global norm of ``grads`` as a one-element tensor on their device (no host sync);
    None without gradients."""
    import torch

    if not grads:
        return None
    wide = any(g.dtype == torch.float64 for g in grads)
    norms = torch._foreach_norm(grads, 2, dtype=torch.float64 if wide else torch.float32)
    total = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    total = torch.where(torch.isfinite(total), total, torch.nan)
    return total.reshape(1)
