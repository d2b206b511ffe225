"""V4 attention: shared-KV multi-query attention over a sliding window plus compressed entries.

Steps (V4 report section 2.3; DeepSeek's `Attention`):

1. q: wq_a -> q_norm -> wq_b, then a weightless RMS norm per head; RoPE on the last R channels;
2. one KV vector per token (wkv -> kv_norm, RoPE) serves as both key and value for every head;
   with fake quantisation its non-rope channels are FP8-rounded;
3. each query sees the last `window_size` tokens (itself included) and, by the layer's ratio,
   nothing more (0), every complete compressed entry (HCA), or the entries its lightning indexer
   picked (CSA);
4. softmax with a learned per-head sink that joins only the denominator;
5. the output's rope channels get the inverse rotation (V carries rotated channels);
6. grouped low-rank output: wo_a maps each of `o_groups` head groups to o_lora_rank, wo_b to dim.

Shapes: B batch, T tokens, H heads, K head_dim, R rope dims, C compressed entries, G groups.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from . import numerics
from .compressor import Compressor
from .indexer import Indexer
from .norm import RMSNorm, rms_normalize
from .rope import apply_rope, layer_inv_freq, rope_cos_sin

QUERY_CHUNK = 512  # queries per attention call: bounds the logits (and CSA's gathered keys) at O(chunk * keys)


def attend(
    q: torch.Tensor,
    keys: torch.Tensor,
    visible: torch.Tensor,
    sink: torch.Tensor,
    scale: float,
    picked: torch.Tensor | None = None,
    picked_visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention with a sink over keys every query shares plus (optionally) keys picked per
    query; K = V. The one attention function of the model and the engine.

    q [B, T, H, K]; keys [B, L, K] with visible [B or 1, T, L] bool; picked [B, T, k, K] with
    picked_visible [B, T, k] (CSA's per-query entries) or None; sink [H] joins the denominator
    only -> out [B, T, H, K]. Every query must see at least one key.
    """
    qf = q.float()
    logits = torch.einsum("bthk,blk->bhtl", qf, keys.float()) * scale
    parts = [logits.masked_fill(~visible.unsqueeze(1), float("-inf"))]
    if picked is not None:
        lp = torch.einsum("bthk,btjk->bhtj", qf, picked.float()) * scale
        parts.append(lp.masked_fill(~picked_visible.unsqueeze(1), float("-inf")))
    b, h, t = logits.shape[:3]
    parts.append(sink.float().view(1, h, 1, 1).expand(b, h, t, 1))
    probs = torch.cat(parts, dim=-1).softmax(dim=-1)  # the sink has no value: its column is dropped
    n = keys.shape[1]
    out = torch.einsum("bhtl,blk->bthk", probs[..., :n], keys.float())
    if picked is not None:
        out = out + torch.einsum("bhtj,btjk->bthk", probs[..., n:-1], picked.float())
    return out.to(q.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.ratio = cfg.ratio(layer)
        # n_heads and o_groups are this module's own: a tensor-parallel copy holds a share of them
        self.n_heads, self.head_dim, self.rope_dim = cfg.n_heads, cfg.head_dim, cfg.rope_head_dim
        self.o_groups = cfg.o_groups
        self.scale = cfg.head_dim**-0.5
        self.inv_freq = layer_inv_freq(cfg, self.ratio > 0)  # a constant, not a parameter or buffer
        self.attn_sink = nn.Parameter(torch.zeros(cfg.n_heads, dtype=torch.float32))
        self.wq_a = nn.Linear(cfg.dim, cfg.q_lora_rank, bias=False)
        self.q_norm = RMSNorm(cfg.q_lora_rank, cfg.norm_eps)
        self.wq_b = nn.Linear(cfg.q_lora_rank, cfg.n_heads * cfg.head_dim, bias=False)
        self.wkv = nn.Linear(cfg.dim, cfg.head_dim, bias=False)
        self.kv_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.wo_a = nn.Linear(cfg.n_heads * cfg.head_dim // cfg.o_groups, cfg.o_groups * cfg.o_lora_rank, bias=False)
        self.wo_b = nn.Linear(cfg.o_groups * cfg.o_lora_rank, cfg.dim, bias=False)
        self.compressor = None
        self.indexer = None
        if self.ratio:
            sparse = cfg.is_sparse(layer)
            self.compressor = Compressor(cfg, self.ratio, cfg.head_dim, overlap=sparse, rotate=False)
            if sparse:
                self.indexer = Indexer(cfg, self.ratio)

    # -- pieces shared by every path (full forward here; cached decoding builds on them) --

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [*positions.shape, R/2] of this layer's RoPE (YaRN when the layer compresses).

        The methods below take cos/sin with the token axis second to last: [T, R/2] for one
        sequence from position 0, [B, T, R/2] for sequences at different positions."""
        return rope_cos_sin(positions, self.inv_freq)

    def queries(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> q [B, T, H, K] (normalised, rotated) and the q latent [B, T, q_lora]."""
        q_latent = self.q_norm(self.wq_a(x))
        q = self.wq_b(q_latent).unflatten(-1, (self.n_heads, self.head_dim))
        q = rms_normalize(q, self.cfg.norm_eps)
        return apply_rope(q, cos.unsqueeze(-2), sin.unsqueeze(-2)), q_latent

    def keys(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> window KV vectors [B, T, K]."""
        kv = apply_rope(self.kv_norm(self.wkv(x)), cos, sin)
        if self.cfg.fake_quant:
            kv = numerics.fake_quant_kv_nope(kv, self.rope_dim)
        return kv

    def output(self, o: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Inverse RoPE, then the grouped low-rank projection: [B, T, H, K] -> [B, T, D]."""
        o = apply_rope(o, cos.unsqueeze(-2), sin.unsqueeze(-2), inverse=True)
        g, r = self.o_groups, self.cfg.o_lora_rank
        o = o.flatten(2).unflatten(-1, (g, -1))  # [B, T, G, H*K/G]
        # a quantised wo_a (trillion.quant) has its own grouped product, which keeps W quantised
        if hasattr(self.wo_a, "grouped"):
            return self.wo_b(self.wo_a.grouped(o).flatten(2))
        wo_a = self.wo_a.weight.view(g, r, -1)  # [G, r, H*K/G]
        # one batched matmul over the groups (einsum's own lowering costs twice the small ops)
        og = o.reshape(-1, g, o.shape[-1]).transpose(0, 1)  # [G, B*T, H*K/G]
        return self.wo_b(torch.bmm(og, wo_a.transpose(1, 2)).transpose(0, 1).reshape(*o.shape[:2], g * r))

    # -- full sequence from position 0 --

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        positions = torch.arange(t, device=x.device)
        cos, sin = self.rope(positions)
        q, q_latent = self.queries(x, cos, sin)
        kv = self.keys(x, cos, sin)

        entries, entry_visible = None, None
        if self.compressor is not None:
            entries = self.compressor(x)  # [B, C, K]
            c = entries.shape[1]
            if self.indexer is not None:
                top = self.indexer(x, q_latent, cos, sin, positions)  # [B, T, k]
                entry_visible = torch.zeros(b, t, c + 1, dtype=torch.bool, device=x.device)
                entry_visible.scatter_(-1, top.masked_fill(top < 0, c), True)
                entry_visible = entry_visible[..., :c]
            else:
                entry = torch.arange(c, device=x.device)
                entry_visible = (entry[None, :] < ((positions + 1) // self.ratio)[:, None]).unsqueeze(0)

        out = torch.empty_like(q)
        w = self.cfg.window_size
        for s in range(0, t, QUERY_CHUNK):
            e = min(t, s + QUERY_CHUNK)
            k0 = max(0, s - w + 1)
            qpos, kpos = positions[s:e, None], positions[None, k0:e]
            visible = ((kpos <= qpos) & (kpos > qpos - w)).unsqueeze(0)  # [1, Tq, Lw]
            keys = kv[:, k0:e]
            if entries is not None and entries.shape[1]:
                keys = torch.cat((keys, entries), dim=1)
                visible = torch.cat((visible.expand(b, -1, -1), entry_visible[:, s:e].expand(b, -1, -1)), dim=-1)
            out[:, s:e] = attend(q[:, s:e], keys, visible, self.attn_sink, self.scale)
        return self.output(out, cos, sin)
