"""How far a quantised model's logits are from the float model's, on the same tokens.

max_abs, mean_abs   |logits_q - logits_ref| over every position and vocabulary entry
top1                fraction of positions whose argmax agrees
kl                  mean over positions of KL(p_ref || p_q), in nats (float64)
"""

from __future__ import annotations

import torch


def fixed_tokens(vocab_size: int, n_seqs: int = 2, length: int = 64, seed: int = 0) -> torch.Tensor:
    """A fixed token set [n_seqs, length]: seeded uniform ids (no tokenizer needed), skipping ids 0-1."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab_size, (n_seqs, length), generator=g)


def logit_error(ref: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    """ref, test: logits [..., V] -> {max_abs, mean_abs, top1, kl}."""
    if ref.shape != test.shape:
        raise ValueError(f"logit_error: shapes differ, {list(ref.shape)} vs {list(test.shape)}")
    r, t = ref.double().flatten(0, -2), test.double().flatten(0, -2)  # [P, V]
    diff = (t - r).abs()
    lr, lt = r.log_softmax(-1), t.log_softmax(-1)
    kl = (lr.exp() * (lr - lt)).sum(-1)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "top1": float((r.argmax(-1) == t.argmax(-1)).double().mean()),
        "kl": float(kl.mean()),
    }
