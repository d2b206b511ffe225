"""One V4 transformer block: mHC around attention, then mHC around the MoE.

    x (N streams) -> hc_pre -> attn_norm -> attention -> hc_post -> hc_pre -> ffn_norm -> MoE -> hc_post

Parameter names follow DeepSeek's checkpoint (`hc_attn_fn`, `attn_norm`, `ffn`, ...).
Shapes: B batch, T tokens, N streams, D dim, M = (2 + N) * N mixing numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .attention import Attention
from .mhc import hc_post, hc_pre
from .moe import MoE
from .norm import RMSNorm


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.layer = layer
        self.attn = Attention(cfg, layer)
        self.ffn = MoE(cfg, layer)
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        m, width = (2 + cfg.hc_mult) * cfg.hc_mult, cfg.hc_mult * cfg.dim
        for site in ("attn", "ffn"):
            self.register_parameter(f"hc_{site}_fn", nn.Parameter(torch.zeros(m, width, dtype=torch.float32)))
            self.register_parameter(f"hc_{site}_base", nn.Parameter(torch.zeros(m, dtype=torch.float32)))
            self.register_parameter(f"hc_{site}_scale", nn.Parameter(torch.ones(3, dtype=torch.float32)))

    def hc_pre(self, x: torch.Tensor, site: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cfg
        return hc_pre(
            x,
            getattr(self, f"hc_{site}_fn"),
            getattr(self, f"hc_{site}_scale"),
            getattr(self, f"hc_{site}_base"),
            iters=c.hc_sinkhorn_iters,
            norm_eps=c.norm_eps,
            hc_eps=c.hc_eps,
        )

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, N, D] -> [B, T, N, D], full sequence from position 0."""
        h, post, comb = self.hc_pre(x, "attn")
        x = hc_post(self.attn(self.attn_norm(h)), x, post, comb)
        h, post, comb = self.hc_pre(x, "ffn")
        return hc_post(self.ffn(self.ffn_norm(h), token_ids), x, post, comb)
