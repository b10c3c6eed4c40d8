"""A generated character corpus and the small language models of the text scenarios.

The corpus is built from a small seeded grammar (no download): sentences such as "the quick
fox sees a red hill." joined into one text, so a character model has real structure to learn.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

_WORDS = {
    "det": ["the", "a", "every", "one", "that"],
    "adj": ["quick", "red", "old", "small", "bright", "quiet", "green", "heavy"],
    "noun": ["fox", "hill", "river", "stone", "bird", "house", "tree", "road", "cloud"],
    "verb": ["sees", "finds", "crosses", "follows", "makes", "holds", "keeps", "leaves"],
}


def corpus(chars: int = 20_000, seed: int = 0) -> str:
    """About ``chars`` characters of generated sentences."""
    gen = torch.Generator().manual_seed(seed)

    def pick(kind: str) -> str:
        words = _WORDS[kind]
        return words[int(torch.randint(len(words), (1,), generator=gen))]

    out: list[str] = []
    size = 0
    while size < chars:
        s = f"{pick('det')} {pick('adj')} {pick('noun')} {pick('verb')} {pick('det')} "
        s += f"{pick('noun')}. "
        out.append(s)
        size += len(s)
    return "".join(out)


def encode(text: str) -> tuple[torch.Tensor, list[str]]:
    """The text as character ids, and the vocabulary."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in text], dtype=torch.long), vocab


def windows(
    data: torch.Tensor, batch: int, ctx: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of (input, next-character target) windows of ``ctx`` characters."""
    i = torch.randint(len(data) - ctx - 1, (batch,), generator=gen)
    x = torch.stack([data[j : j + ctx] for j in i.tolist()])
    y = torch.stack([data[j + 1 : j + ctx + 1] for j in i.tolist()])
    return x, y


class _NaNGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward (as a sqrt or a division at 0 would give)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


class MLP(nn.Module):
    """nanoGPT's MLP: c_fc, GELU, c_proj; ``armed`` makes the backward of c_fc's output NaN."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.armed:
            h = _NaNGrad.apply(h)  # type: ignore[no-untyped-call]
        out: torch.Tensor = self.c_proj(nn.functional.gelu(h))
        return out


class Block(nn.Module):
    """Pre-norm transformer block with causal self-attention (nanoGPT layout)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = MLP(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class GPT(nn.Module):
    """A small GPT-style character model (token and position embeddings, blocks, tied head)."""

    def __init__(self, vocab: int, ctx: int, d: int = 32, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as in GPT-2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1])
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        out: torch.Tensor = self.lm_head(self.ln_f(x))
        return out


def cosine(warmup: int, total: int, floor: float = 0.1) -> Any:
    """A warmup-then-cosine multiplier of the peak learning rate (for LambdaLR)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


class LSTMLM(nn.Module):
    """The word_language_model recipe's LSTM LM (embedding, 2-layer LSTM, linear decoder)."""

    def __init__(self, vocab: int, d: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, d)
        self.rnn = nn.LSTM(d, d, layers, batch_first=True)
        self.decoder = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.encoder(idx))
        out: torch.Tensor = self.decoder(h)
        return out
