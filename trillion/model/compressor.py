"""The KV compressor: softmax-gated pooling of each block of `ratio` tokens into one entry.

Steps (V4 report section 2.3; DeepSeek's `Compressor`):

1. project every token: kv = wkv(x), score = wgate(x) + ape[position in block]   (float32);
2. pool each complete block: entry = sum_t softmax_t(score) * kv, per channel;
   with `overlap` (CSA, ratio 4) the projections are twice as wide: the first half of the channels
   of block i pools together with the second half of block i + 1, so each entry sees 2 * ratio
   tokens with stride `ratio` (the first block has nothing before it: weight 0);
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

    def pool(
        self,
        kv: torch.Tensor,
        score: torch.Tensor,
        prev_kv: torch.Tensor | None = None,
        prev_score: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pool complete blocks. kv, score: [B, n, r, c*d] (score includes ape) -> [B, n, d].

        With overlap, prev_kv / prev_score [B, r, c*d] are the block before the first one (from an
        earlier chunk); None means there is none.
        """
        if self.overlap:
            kv = self._overlap(kv, prev_kv, 0.0)
            score = self._overlap(score, prev_score, float("-inf"))
        return (kv * score.softmax(dim=2)).sum(dim=2)

    def _overlap(self, t: torch.Tensor, prev: torch.Tensor | None, fill: float) -> torch.Tensor:
        # [B, n, r, 2d] -> [B, n, 2r, d]: slots [:r] hold the previous block's first-half channels,
        # slots [r:] this block's second-half channels.
        b, n, r, _ = t.shape
        d = self.head_dim
        out = t.new_full((b, n, 2 * r, d), fill)
        out[:, :, r:] = t[..., d:]
        out[:, 1:, :r] = t[:, :-1, :, :d]
        if prev is not None:
            out[:, 0, :r] = prev[..., :d]
        return out

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
        return self.finish(self.pool(kv, score), 0, x.dtype)
