"""The lightning indexer of CSA layers: which compressed entries each query attends to.

Steps (V4 report section 2.3.1; DeepSeek's `Indexer`):

1. queries: wq_b(q latent) -> index heads, RoPE (compress theta, YaRN) at the token's position;
2. keys: the indexer's own overlapping compressor at index_head_dim (with a Hadamard rotation when
   fake quantisation is on; the rotation is orthogonal, so exact scores do not depend on it);
3. score[t, c] = sum_h w[t, h] * relu(q[t, h] . k[c]), w = weights_proj(x) / sqrt(d_I * H_I);
4. keep the `index_topk` best visible entries (c < (t + 1) // ratio).

Ties. With few index heads many scores are exactly 0 (all ReLUs off), and `torch.topk` breaks such
ties differently for rows of different length. We define the order: higher score first, and among
equal scores the LOWER entry index first (a stable descending sort). Every path that selects
entries (full forward, chunked prefill, decode) uses `select_topk`, so all pick the same entries.

Shapes: B batch, T queries, C compressed entries, H index heads, d index head dim, k top-k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from . import numerics
from .compressor import Compressor
from .rope import apply_rope


def select_topk(scores: torch.Tensor, visible: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, T, min(k, C)] of the best visible entries; -1 where fewer than k are visible.

    scores [B, T, C] float; visible [B or 1, T, C] bool. Ties: lower index first.
    """
    c = scores.shape[-1]
    k = min(k, c)
    if k == 0:
        return torch.empty(*scores.shape[:-1], 0, dtype=torch.long, device=scores.device)
    masked = scores.masked_fill(~visible, float("-inf"))
    order = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :k]
    ok = torch.gather(visible.expand_as(masked), -1, order)
    return torch.where(ok, order, torch.full_like(order, -1))


class Indexer(nn.Module):
    def __init__(self, cfg: ModelConfig, ratio: int):
        super().__init__()
        self.cfg = cfg
        self.n_heads, self.head_dim, self.topk = cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk
        self.wq_b = nn.Linear(cfg.q_lora_rank, self.n_heads * self.head_dim, bias=False)
        self.weights_proj = nn.Linear(cfg.dim, self.n_heads, bias=False)
        self.compressor = Compressor(cfg, ratio, self.head_dim, overlap=True, rotate=True)

    def queries(self, q_latent: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """q_latent [B, T, q_lora] -> index queries [B, T, H, d] (cos/sin [(B,) T, R/2])."""
        q = self.wq_b(q_latent).unflatten(-1, (self.n_heads, self.head_dim))
        q = apply_rope(q, cos.unsqueeze(-2), sin.unsqueeze(-2))
        if self.cfg.fake_quant:
            q = numerics.fake_quant_fp4(numerics.hadamard(q))
        return q

    def head_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> per-head weights [B, T, H] (float32), with the 1/sqrt(d * H) scale."""
        return F.linear(x, self.weights_proj.weight).float() * (self.head_dim**-0.5 * self.n_heads**-0.5)

    def scores(
        self, x: torch.Tensor, q: torch.Tensor, keys: torch.Tensor, w: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [B, T, D], q [B, T, H, d], keys [B, C, d] -> scores [B, T, C] in float32.

        w: `head_weights(x)` when already computed."""
        w = self.head_weights(x) if w is None else w
        dots = torch.einsum("bthd,bcd->bthc", q.float(), keys.float()).relu_()
        return torch.einsum("bthc,bth->btc", dots, w)

    def forward(
        self, x: torch.Tensor, q_latent: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Full sequence from position 0: top-k entry indices [B, T, k'] (-1 = none)."""
        keys = self.compressor(x)  # [B, C, d]
        scores = self.scores(x, self.queries(q_latent, cos, sin), keys)
        entry = torch.arange(keys.shape[1], device=x.device)
        visible = (entry[None, :] < ((positions + 1) // self.compressor.ratio)[:, None]).unsqueeze(0)
        return select_topk(scores, visible, self.topk)
