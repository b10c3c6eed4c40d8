"""One rank of a 2-process Hugging Face Trainer run on CPU (DDP over gloo), recorded by gradlog.

``python hf_ddp_worker.py ROOT``, launched with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in the environment as torchrun would set them. Writes the Trainer's logs of this rank
to ``ROOT/../logs-rank<r>.json`` and prints the run directory.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from gradlog.integrations.transformers import GradlogCallback
from tests.integrations.hf_helpers import TinyRegressor, regression_data


class Logs(TrainerCallback):
    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.logs.append({"global_step": state.global_step, **(logs or {})})


def main() -> None:
    root = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)  # same initial weights on every rank
    args = TrainingArguments(
        output_dir=str(root.parent / "out"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=4,
        logging_steps=1,
        learning_rate=0.05,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        ddp_backend="gloo",
    )
    logs, cb = Logs(), GradlogCallback(root, name="hf-ddp")
    trainer = Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=regression_data(128),
        callbacks=[cb, logs],
    )
    assert args.world_size == 2, args.world_size
    trainer.train()
    (root.parent / f"logs-rank{rank}.json").write_text(json.dumps(logs.logs))
    assert cb.recorder is not None
    print(cb.recorder.run_dir)


if __name__ == "__main__":
    main()
