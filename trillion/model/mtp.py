"""The multi-token-prediction (MTP) block: predicts the token after next.

At position t it combines the main model's final hidden streams h_t with the embedding of token
t + 1: x = e_proj(enorm(embed(token_{t+1}))) + h_proj(hnorm(h_t)) (the embedding term broadcast over
the streams), runs one block (window-only attention in the released configs, score-routed MoE),
and reads logits for token t + 2 through its own hc_head and norm and the shared head.
The embedding and head are the main model's; they are passed in, not owned, so the checkpoint
holds them once. transformers does not implement this block.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .block import Block
from .norm import RMSNorm


class MTPBlock(Block):
    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__(cfg, cfg.n_layers + index)
        self.e_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.h_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.enorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.hnorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        width = cfg.hc_mult * cfg.dim
        self.hc_head_fn = nn.Parameter(torch.zeros(cfg.hc_mult, width, dtype=torch.float32))
        self.hc_head_base = nn.Parameter(torch.zeros(cfg.hc_mult, dtype=torch.float32))
        self.hc_head_scale = nn.Parameter(torch.ones(1, dtype=torch.float32))

    def combine(self, hidden: torch.Tensor, next_embed: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, N, D], next_embed [B, T, D] -> the block input [B, T, N, D]."""
        return self.e_proj(self.enorm(next_embed)).unsqueeze(2) + self.h_proj(self.hnorm(hidden))
