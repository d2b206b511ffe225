"""The KV compressor: softmax-gated pooling of each block of `ratio` tokens into one entry.

Steps (V4 report section 2.3; DeepSeek's `Compressor`):

1. project every token: kv = wkv(x), score = wgate(x) + ape[position in block]   (float32);
2. pool each complete block: entry = sum_t softmax_t(score) * kv, per channel;
   with `overlap` (CSA, ratio 4) the projections are twice as wide: the first half of the channels
   of block i pools together with the second half of block i + 1, so each entry sees 2 * ratio
   tokens with stride `ratio` (the first block has nothing before it: weight 0). `pool` takes each
   entry's window of tokens, so the full sequence (`windows`) and the engine's per-sequence state
   (trillion.engine.runner) feed the same pooling;
3. RMSNorm, then RoPE (YaRN, compress theta) at the block's first position, i * ratio;
4. with fake quantisation: FP8 on the non-rope channels (main compressor), or a Hadamard rotation
   and FP4 on all channels (the indexer's compressor, `rotate`).

An entry is visible to a query at position t only once its block is complete: i < (t + 1) // ratio.

Shapes: B batch, T tokens, n complete blocks, r ratio, d entry width, c = 2 (overlap) or 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from . import numerics
from .norm import RMSNorm
from .rope import apply_rope, layer_inv_freq, rope_cos_sin


class Compressor(nn.Module):
    def __init__(self, cfg: ModelConfig, ratio: int, head_dim: int, *, overlap: bool, rotate: bool):
        super().__init__()
        self.cfg = cfg
        self.ratio, self.head_dim, self.overlap, self.rotate = ratio, head_dim, overlap, rotate
        width = (2 if overlap else 1) * head_dim
        # DeepSeek keeps ape, wkv and wgate in float32 and compresses in float32.
        self.ape = nn.Parameter(torch.zeros(ratio, width, dtype=torch.float32))
        self.wkv = nn.Linear(cfg.dim, width, bias=False, dtype=torch.float32)
        self.wgate = nn.Linear(cfg.dim, width, bias=False, dtype=torch.float32)
        self.norm = RMSNorm(head_dim, cfg.norm_eps)
        self.inv_freq = layer_inv_freq(cfg, True)  # compressed entries use the compress rope

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> kv, score [B, T, c*d] in float32 (score without ape)."""
        xf = x.float()
        return F.linear(xf, self.wkv.weight.float()), F.linear(xf, self.wgate.weight.float())

    def pool(self, kv: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """Pool each entry's window: kv, score [B, n, c*r, c*d] (score includes ape) -> [B, n, d].

        A window is the tokens an entry pools, oldest first: its block (r rows), or with overlap the
        previous block then its own (2r rows), of which the first r give their first-half channels
        and the last r their second half. A row with score -inf (no previous block) weighs 0."""
        if self.overlap:
            r, d = self.ratio, self.head_dim
            kv = torch.cat((kv[:, :, :r, :d], kv[:, :, r:, d:]), dim=2)  # [B, n, 2r, d]
            score = torch.cat((score[:, :, :r, :d], score[:, :, r:, d:]), dim=2)
        return (kv * score.softmax(dim=2)).sum(dim=2)

    def windows(self, kv: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Complete blocks of a sequence from position 0 -> each entry's window for `pool`.

        kv, score [B, n, r, c*d] -> [B, n, c*r, c*d]: with overlap each block is preceded by the one
        before it (for the first block, rows of kv 0 and score -inf)."""
        if not self.overlap:
            return kv, score
        before_kv = torch.cat((torch.zeros_like(kv[:, :1]), kv[:, :-1]), dim=1)
        before_sc = torch.cat((torch.full_like(score[:, :1], float("-inf")), score[:, :-1]), dim=1)
        return torch.cat((before_kv, kv), dim=2), torch.cat((before_sc, score), dim=2)

    def finish(self, pooled: torch.Tensor, first_block: int | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Norm, RoPE at the blocks' first positions, fake quantisation. [B, n, d] -> [B, n, d].

        first_block: index of the first pooled block (an int, or [B, 1] per sequence)."""
        entries = self.norm(pooled.to(dtype))
        starts = (torch.arange(entries.shape[1], device=entries.device) + first_block) * self.ratio
        cos, sin = rope_cos_sin(starts, self.inv_freq)
        entries = apply_rope(entries, cos, sin)
        if self.cfg.fake_quant:
            if self.rotate:
                entries = numerics.fake_quant_fp4(numerics.hadamard(entries))
            else:
                entries = numerics.fake_quant_kv_nope(entries, self.cfg.rope_head_dim)
        return entries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full sequence from position 0: x [B, T, D] -> entries [B, T // r, d]."""
        _b, t, _ = x.shape
        n = t // self.ratio
        kv, score = self.project(x[:, : n * self.ratio])
        kv = kv.unflatten(1, (n, self.ratio))
        score = score.unflatten(1, (n, self.ratio)) + self.ape
        return self.finish(self.pool(*self.windows(kv, score)), 0, x.dtype)
