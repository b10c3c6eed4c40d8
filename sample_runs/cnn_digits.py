"""A small CNN on scikit-learn's bundled 8x8 digits, trained with Adam and recorded by gradlog.

Real images, no download. ``python -m sample_runs.cnn_digits --root runs`` writes one run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """4 conv + BatchNorm layers and 2 linear layers, ~0.6M parameters, for 1x8x8 inputs."""

    def __init__(self, hidden: int = 176, classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 128), *block(128, 128)
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digits as float tensors scaled to [0, 1] (``[N, 1, 8, 8]``) and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    return x, y


def train(
    root: str | Path = "runs",
    *,
    name: str = "cnn-digits-adam",
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Train the CNN with the recorder attached; returns the run directory."""
    from gradlog import Recorder

    torch.manual_seed(seed)
    x, y = load_digits_tensors()
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    config = {
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "optimizer": "Adam",
        "seed": seed,
    }
    steps_per_epoch = (len(x) + batch_size - 1) // batch_size
    with Recorder(model, optimizer, root=root, name=name, config=config) as rec:
        for epoch in range(epochs):
            order = torch.randperm(len(x))
            correct = 0
            for i in range(steps_per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                logits = model(x[idx])
                loss = loss_fn(logits, y[idx])
                loss.backward()
                optimizer.step()
                rec.log(loss=loss)
                optimizer.zero_grad()
                correct += int((logits.argmax(1) == y[idx]).sum())
            rec.log(train_accuracy=correct / len(x))
            if progress:
                acc = correct / len(x)
                print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, accuracy {acc:.3f}")
    return rec.run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default="runs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--name", default="cnn-digits-adam")
    args = parser.parse_args()
    print(train(args.root, name=args.name, epochs=args.epochs, progress=True))


if __name__ == "__main__":
    main()
