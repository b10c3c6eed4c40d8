"""The catalogue's activation of each parameter, found during the first forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from gradlog import Recorder


class Functional(nn.Module):
    """Activations called as functions, an LSTM without any ReLU, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, 8)
        self.mlp = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(x))
        h = h + torch.relu(self.fc(h))
        h = nn.functional.gelu(self.mlp(h))
        out: torch.Tensor = self.head(h)
        return out


def _activations(tmp_path: Path, model: nn.Module, x: torch.Tensor) -> dict[str, str | None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, opt, root=tmp_path) as rec:
        for _ in range(2):
            model(x).float().sum().backward()
            opt.step()
            opt.zero_grad()
    meta = json.loads((rec.run_dir / "meta.json").read_text())
    return {t["name"]: t["activation"] for t in meta["tensors"]}


def test_modules_and_functions(tmp_path: Path) -> None:
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 8), nn.Tanh())
    seq.append(nn.Linear(8, 2))
    acts = _activations(tmp_path / "a", seq, torch.randn(3, 4))
    assert acts == {
        "0.weight": "relu",
        "0.bias": "relu",
        "3.weight": "tanh",
        "3.bias": "tanh",
        "5.weight": "",
        "5.bias": "",
    }
    acts = _activations(tmp_path / "b", Functional(), torch.randint(0, 10, (2, 5)))
    assert acts["fc.weight"] == "relu"
    assert acts["mlp.weight"] == "gelu"
    assert acts["rnn.weight_hh_l0"] == ""  # the next module with weights comes first
    assert acts["emb.weight"] == ""
    assert acts["head.bias"] == ""
