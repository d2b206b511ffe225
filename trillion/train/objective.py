"""The training objective of one batch:

    loss = CE(main) + mtp_weight * CE(MTP) + balance_alpha * sum_layers L_bal + indexer_weight * KL(indexer)

1. the main model reads tokens 0..T-1 and predicts 1..T (cross-entropy, float32 logits);
2. the MTP block reads the final hidden streams at t and token t + 1 and predicts token t + 2
   (positions 0..T-2); its second-token accuracy is what speculative decoding will accept;
3. every score-routed gate recorded its scores and choices (balance.recording): the
   sequence-wise balance loss, and the per-expert counts that drive the bias update;
4. the CSA layers' indexers learn to imitate the main attention (indexer_loss.py).

Activation checkpointing wraps each block (main and MTP) in `torch.utils.checkpoint` by
replacing the block's bound `forward` on the instance: the model code stays as it is, and the
results are identical, only memory and time change.

Shapes: B batch, T seq_len, V vocab.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import balance, indexer_loss
from .config import TrainConfig


@dataclass
class StepResult:
    loss: torch.Tensor  # the total, with grad
    parts: dict[str, float] = field(default_factory=dict)  # ce, mtp_ce, mtp_acc, balance, indexer_kl
    counts: dict[str, torch.Tensor] = field(default_factory=dict)  # gate name -> tokens per expert [E]


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of storing them."""
    for block in [*model.layers, *model.mtp]:
        if "forward" not in block.__dict__:
            block.forward = functools.partial(
                checkpoint, type(block).forward.__get__(block), use_reentrant=False
            )


def compute(model: nn.Module, batch: torch.Tensor, cfg: TrainConfig) -> StepResult:
    """Forward one batch [B, T + 1] and build the loss (see the module docstring)."""
    x, y = batch[:, :-1], batch[:, 1:]
    b, t = x.shape
    parts: dict[str, float] = {}
    use_indexer = cfg.indexer_weight > 0
    with balance.recording(model), indexer_loss.capture(model) as seen:
        logits, hidden = model(x, return_hidden=True)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss = ce
        parts["ce"] = ce.item()
        if len(model.mtp) and cfg.mtp_weight > 0 and t >= 2:
            mtp_logits = model.mtp_logits(hidden[:, :-1], y[:, :-1])  # predicts y[:, 1:]
            mtp_ce = F.cross_entropy(mtp_logits.flatten(0, 1), y[:, 1:].flatten())
            loss = loss + cfg.mtp_weight * mtp_ce
            parts["mtp_ce"] = mtp_ce.item()
            parts["mtp_acc"] = (mtp_logits.argmax(-1) == y[:, 1:]).float().mean().item()
        counts, bal = {}, []
        for name, gate in balance.gates(model):
            if gate.last_routing is None:
                continue
            counts[name] = balance.expert_counts(gate)
            if not gate.hashed and cfg.balance_alpha > 0:
                scores, idx = gate.last_routing
                bal.append(balance.sequence_balance_loss(scores, idx, b, gate.cfg.n_activated_experts))
        if bal:
            bal_loss = torch.stack(bal).sum()
            loss = loss + cfg.balance_alpha * bal_loss
            parts["balance"] = bal_loss.item()
        if use_indexer:
            kl = indexer_loss.indexer_loss(seen)
            if kl is not None:
                loss = loss + cfg.indexer_weight * kl
                parts["indexer_kl"] = kl.item()
    parts["loss"] = loss.item()
    return StepResult(loss, parts, counts)


def spread(seqs: torch.Tensor, n: int) -> torch.Tensor:
    """n sequences evenly spaced over [S, T + 1] (all of them when n >= S): a cheap, representative probe."""
    if n >= seqs.shape[0]:
        return seqs
    return seqs[torch.linspace(0, seqs.shape[0] - 1, n).round().long()]


@torch.no_grad()
def evaluate(
    model: nn.Module, seqs: torch.Tensor, batch: int, max_batches: int | None = None
) -> dict[str, float]:
    """Mean next-token cross-entropy over held-out sequences [S, T + 1] and its perplexity.

    Every target token counts once, so the result does not depend on `batch`.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    n = seqs.shape[0] if max_batches is None else min(seqs.shape[0], max_batches * batch)
    for s in range(0, n, batch):
        chunk = seqs[s : min(n, s + batch)].long()
        logits = model(chunk[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
        count += chunk[:, 1:].numel()
    model.train(was_training)
    loss = total / max(count, 1)
    return {"eval_loss": loss, "eval_ppl": float(torch.tensor(loss).exp()), "eval_tokens": count}
