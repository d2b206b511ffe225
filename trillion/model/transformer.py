"""The whole DeepSeek-V4 model: embed -> N residual streams -> blocks -> hc_head -> norm -> head.

`Transformer(cfg)(input_ids)` gives float32 logits [B, T, V] for every position (full sequence
from position 0). `return_hidden=True` also returns the final residual streams [B, T, N, D], which
the MTP block (`mtp_logits`) and training need.

Module and parameter names are DeepSeek's checkpoint names, so the official layout maps onto
`state_dict()` one to one (see `trillion.checkpoint.layouts`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .block import Block
from .mhc import hc_head
from .mtp import MTPBlock
from .norm import RMSNorm


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # DeepSeek keeps the head in float32 and computes logits in float32.
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False, dtype=torch.float32)
        width = cfg.hc_mult * cfg.dim
        self.hc_head_fn = nn.Parameter(torch.zeros(cfg.hc_mult, width, dtype=torch.float32))
        self.hc_head_base = nn.Parameter(torch.zeros(cfg.hc_mult, dtype=torch.float32))
        self.hc_head_scale = nn.Parameter(torch.ones(1, dtype=torch.float32))
        self.mtp = nn.ModuleList(MTPBlock(cfg, i) for i in range(cfg.n_mtp_layers))

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def streams(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] -> the initial residual streams [B, T, N, D] (the embedding repeated)."""
        h = self.embed(input_ids).to(self.dtype)
        return h.unsqueeze(2).repeat(1, 1, self.cfg.hc_mult, 1)

    def logits(self, h: torch.Tensor, fn=None, scale=None, base=None, norm: RMSNorm | None = None) -> torch.Tensor:
        """Final streams [B, T, N, D] -> float32 logits [B, T, V] (hc_head, norm, head)."""
        c = self.cfg
        x = hc_head(
            h,
            self.hc_head_fn if fn is None else fn,
            self.hc_head_scale if scale is None else scale,
            self.hc_head_base if base is None else base,
            norm_eps=c.norm_eps,
            hc_eps=c.hc_eps,
        )
        x = (self.norm if norm is None else norm)(x)
        return self.head(x.float()).float()  # a float32 head: exactly F.linear in float32

    def forward(self, input_ids: torch.Tensor, *, return_hidden: bool = False):
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens]; got shape {tuple(input_ids.shape)}")
        h = self.streams(input_ids)
        for layer in self.layers:
            h = layer(h, input_ids)
        logits = self.logits(h)
        return (logits, h) if return_hidden else logits

    def mtp_logits(self, hidden: torch.Tensor, next_ids: torch.Tensor, depth: int = 0) -> torch.Tensor:
        """Logits for token t + 2 at every position t.

        hidden [B, T, N, D]: the main model's final streams; next_ids [B, T]: token t + 1 at t.
        """
        block: MTPBlock = self.mtp[depth]
        x = block.combine(hidden, self.embed(next_ids).to(hidden.dtype))
        x = block(x, next_ids)
        return self.logits(x, block.hc_head_fn, block.hc_head_scale, block.hc_head_base, block.norm)
