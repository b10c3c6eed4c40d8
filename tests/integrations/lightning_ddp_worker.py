"""A 2-process Lightning DDP fit on CPU (gloo) recorded by GradlogCallback.

``python lightning_ddp_worker.py ROOT OUT STEPS``. Lightning's subprocess launcher starts rank 1
by running this script again; each rank writes ``OUT/rank<r>.json`` with its run directory and
the global gradient norm Lightning's ``grad_norm`` saw at each of its optimizer steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as lp
import torch

from gradlog.integrations.lightning import GradlogCallback
from tests.integrations.lightning_helpers import Regression, regression_data


def main() -> None:
    root, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights on both ranks (DDP also broadcasts them)
    module = Regression()
    callback = GradlogCallback(root, name="ddp")
    trainer = lp.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    # Lightning adds a DistributedSampler: each rank trains on its own half of the batches.
    trainer.fit(module, regression_data(2 * steps))
    report = {"run_dir": str(callback.run_dirs[0]), "reference": module.reference}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
