"""Training signal for the lightning indexer: KL alignment with the main attention (V3.2 / V4).

The indexer picks which compressed entries a CSA query attends to through a top-k, which has no
gradient, so the language-model loss never reaches it. DeepSeek trains it to imitate the main
attention instead (V3.2 report, eq. 3): the target at query t is the main attention's
distribution over the compressed entries, summed over heads and L1-normalised; the loss is
KL(target || softmax(indexer scores)), over the entries visible to t. The indexer's inputs are
detached, so this loss trains only the indexer and the main model never sees it.

The main attention's inputs are caught with forward hooks (`capture`), so the model code is not
touched; the target is recomputed here from the attention's own pieces (`queries`, `compressor`).

Shapes: B batch, T tokens, H heads, C compressed entries.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..model.attention import Attention


def indexed_attentions(model: nn.Module) -> list[Attention]:
    return [m for m in model.modules() if isinstance(m, Attention) and m.indexer is not None]


@contextmanager
def capture(model: nn.Module):
    """Yield a dict {Attention: its input x [B, T, D] (detached)} filled by each forward."""
    seen: dict[Attention, torch.Tensor] = {}
    hooks = [
        a.register_forward_hook(lambda mod, args, out: seen.__setitem__(mod, args[0].detach()))
        for a in indexed_attentions(model)
    ]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def indexer_kl(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Mean over queries (with >= 1 visible entry) of KL(main attention || indexer), for one layer."""
    t = x.shape[1]
    positions = torch.arange(t, device=x.device)
    cos, sin = attn.rope(positions)
    with torch.no_grad():
        q, q_latent = attn.queries(x, cos, sin)  # [B, T, H, K], [B, T, q_lora]
        entries = attn.compressor(x)  # [B, C, K]
        c = entries.shape[1]
        visible = (
            torch.arange(c, device=x.device)[None, :] < ((positions + 1) // attn.ratio)[:, None]
        )  # [T, C]
        rows = visible.any(-1)  # queries that see at least one entry
        if not rows.any():
            return x.new_zeros((), dtype=torch.float32)
        logits = torch.einsum("bthk,bck->bhtc", q.float(), entries.float()) * attn.scale
        probs = logits.masked_fill(~visible, float("-inf")).softmax(-1).nan_to_num(0.0)
        target = probs.sum(1)  # [B, T, C]
        target = target / target.sum(-1, keepdim=True).clamp(min=1e-12)
    idx = attn.indexer
    keys = idx.compressor(x)
    scores = idx.scores(x, idx.queries(q_latent, cos, sin), keys)  # [B, T, C]
    logp = scores.masked_fill(~visible, float("-inf")).log_softmax(-1)
    kl = (target * (target.clamp(min=1e-12).log() - logp.masked_fill(~visible, 0.0))).sum(-1)  # [B, T]
    return kl[:, rows].mean()


def indexer_loss(seen: dict[Attention, torch.Tensor]) -> torch.Tensor | None:
    """Sum of `indexer_kl` over the captured CSA layers; None when there are none."""
    losses = [indexer_kl(a, x) for a, x in seen.items()]
    return torch.stack(losses).sum() if losses else None
