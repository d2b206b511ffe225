"""Expert load balancing as DeepSeek trains it, plus the hash-routing tables.

* Aux-loss-free balancing (V3 report section 2.1.2; arXiv 2408.15664): each score-routed gate has a
  bias that shifts only the top-k choice. After every step, outside the gradient,
  ``bias_e += gamma * sign(mean_load - load_e)``: overloaded experts become less attractive.
* Sequence-wise balance loss (V3 eq. 17-20), small (alpha ~ 1e-4), against extreme imbalance
  within one sequence: ``alpha * sum_e f_e * P_e`` with ``f_e = E / (k T) * #tokens choosing e``
  and ``P_e`` the mean normalised affinity ``s_e / sum_j s_j``, averaged over sequences.
* Hash layers route by a fixed table ``tid2eid [V, k]``. We build it from the tokenizer's ids and
  the training split's token frequencies: tokens from most to least frequent each go to k of the
  least-loaded experts, so every expert sees about the same number of tokens; layer ``l`` rotates
  the expert ids by ``l`` so hash layers differ. Deterministic for a tokenizer and corpus.

The gates record their routing only while `recording(model)` is active (`Gate.record`).
Shapes: B batch, T tokens, N = B * T, E experts, k experts per token.
"""

from __future__ import annotations

import heapq
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import UserError
from ..model.moe import Gate


def gates(model: nn.Module) -> list[tuple[str, Gate]]:
    """Every MoE gate of the model (main layers, then MTP blocks), with its module name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Gate)]


def scored_gates(model: nn.Module) -> list[tuple[str, Gate]]:
    """The gates that choose by score (they have a balancing bias); hash gates do not."""
    return [(n, g) for n, g in gates(model) if not g.hashed]


@contextmanager
def recording(model: nn.Module):
    """Let every gate keep its last routing (`Gate.last_routing`) during the block."""
    all_gates = [g for _, g in gates(model)]
    for g in all_gates:
        g.record, g.last_routing = True, None
    try:
        yield
    finally:
        for g in all_gates:
            g.record, g.last_routing = False, None


def expert_counts(gate: Gate) -> torch.Tensor:
    """Tokens sent to each expert in the gate's last recorded forward: [E] float32."""
    if gate.last_routing is None:
        raise RuntimeError("the gate recorded no routing; run the forward inside balance.recording(model)")
    indices = gate.last_routing[1]
    return torch.bincount(indices.reshape(-1), minlength=gate.weight.shape[0]).float()


@torch.no_grad()
def update_bias(gate: Gate, counts: torch.Tensor, gamma: float) -> None:
    """bias += gamma * sign(mean load - load): the aux-loss-free step (no gradient involved)."""
    gate.bias.add_(gamma * torch.sign(counts.mean() - counts).to(gate.bias.dtype))


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, batch: int, k: int) -> torch.Tensor:
    """V3's sequence-wise balance loss (without alpha). scores [N, E] (with grad), indices [N, k]."""
    n, e = scores.shape
    t = n // batch
    probs = scores / scores.sum(-1, keepdim=True)  # normalised affinities s'
    p = probs.view(batch, t, e).mean(1)  # [B, E]
    chosen = torch.zeros(n, e, device=scores.device).scatter_(1, indices, 1.0)
    f = chosen.view(batch, t, e).sum(1) * (e / (k * t))  # [B, E], no gradient
    return (f * p).sum(-1).mean()


def imbalance(counts: torch.Tensor) -> float:
    """max load / mean load (1.0 = perfectly uniform); the 'MaxVio + 1' of arXiv 2408.15664."""
    return float(counts.max() / counts.mean().clamp(min=1e-9))


def hash_table(counts: torch.Tensor, n_experts: int, k: int, shift: int = 0) -> torch.Tensor:
    """[V, k] int64: frequent tokens first, each onto k distinct experts among the least loaded.

    counts [V]: token frequencies (unseen tokens count as 1, so rare tokens spread too). Each token
    takes k of its 2k least-loaded experts, the k picked by a fixed pseudo-random order per token:
    taking exactly the k least loaded would glue experts into fixed groups of k (equal histories
    keep equal loads), while this keeps loads level and every combination of experts in use.
    `shift` rotates the expert ids (a different table per hash layer).
    """
    if k > n_experts:
        raise UserError(f"cannot give each token {k} distinct experts out of {n_experts}")
    weight = (counts.double() + 1.0).tolist()
    noise = torch.rand(len(weight), n_experts, generator=torch.Generator().manual_seed(len(weight))).tolist()
    order = sorted(range(len(weight)), key=lambda i: (-weight[i], i))
    load = [0.0] * n_experts
    rows: list[list[int]] = [[]] * len(weight)
    for tok in order:
        r = noise[tok]
        candidates = heapq.nsmallest(min(n_experts, 2 * k), range(n_experts), key=lambda e: (load[e], r[e]))
        chosen = sorted(candidates, key=r.__getitem__)[:k]
        for e in chosen:
            load[e] += weight[tok]
        rows[tok] = chosen
    return (torch.tensor(rows, dtype=torch.long) + shift) % n_experts


@torch.no_grad()
def install_hash_tables(model: nn.Module, counts: torch.Tensor) -> None:
    """Fill every hash gate's tid2eid from token frequencies (see `hash_table`)."""
    for i, (_, g) in enumerate((n, g) for n, g in gates(model) if g.hashed):
        vocab, k = g.tid2eid.shape
        c = torch.zeros(vocab, dtype=torch.long)
        c[: min(vocab, counts.numel())] = counts[:vocab]
        g.tid2eid.copy_(hash_table(c, g.weight.shape[0], k, shift=i))
