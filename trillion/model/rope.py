"""Rotary position embedding as V4 uses it: interleaved pairs on the last `rope_head_dim` channels.

Window-only layers use plain RoPE (theta 10000). Compressed layers, their compressors and their
indexers use theta 160000 with YaRN frequency interpolation (V4 report; DeepSeek's
`precompute_freqs_cis`). YaRN changes the frequencies only: V4 does not scale cos/sin by YaRN's
mscale. Because K = V in shared-KV attention, the attention output carries rotated channels, so it
gets the inverse rotation at the query's own position (`inverse=True`).

Shapes: T tokens, R rope dims (R/2 frequency pairs).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..config import ModelConfig


def rope_inv_freq(
    rope_dim: int,
    theta: float,
    *,
    factor: float = 1.0,
    original_seq_len: int = 0,
    beta_fast: int = 32,
    beta_slow: int = 1,
) -> torch.Tensor:
    """Inverse frequencies [R/2] in float32; YaRN-interpolated when original_seq_len > 0."""
    freqs = 1.0 / (theta ** (torch.arange(0, rope_dim, 2, dtype=torch.float32, device="cpu") / rope_dim))
    if original_seq_len > 0:
        # Dimensions that rotate fewer than beta_slow times over the original context are
        # interpolated by `factor`, those rotating more than beta_fast times are kept, with a
        # linear ramp between (YaRN, arXiv 2309.00071, as in DeepSeek's code).
        def correction_dim(rotations: float) -> float:
            return rope_dim * math.log(original_seq_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(correction_dim(beta_fast)), 0)
        high = min(math.ceil(correction_dim(beta_slow)), rope_dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(rope_dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
        smooth = 1 - ramp
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs


@lru_cache(maxsize=64)
def layer_inv_freq(cfg: ModelConfig, compressed: bool) -> torch.Tensor:
    """Frequencies of a layer: YaRN at compress_rope_theta if it compresses, plain RoPE otherwise.

    Always on the CPU (also while a model is built on `meta`); cached per (config, kind), so
    callers must not modify the returned tensor."""
    if compressed:
        return rope_inv_freq(
            cfg.rope_head_dim,
            cfg.compress_rope_theta,
            factor=cfg.rope_factor,
            original_seq_len=cfg.original_seq_len,
            beta_fast=cfg.beta_fast,
            beta_slow=cfg.beta_slow,
        )
    return rope_inv_freq(cfg.rope_head_dim, cfg.rope_theta)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [*positions.shape, R/2] in float32."""
    angles = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate the last 2*cos.shape[-1] channels of x in interleaved pairs; returns a new tensor.

    cos/sin must broadcast against x's leading dims: [T, R/2] for x [B, T, C], and
    [T, 1, R/2] for x [B, T, H, C].
    """
    rd = 2 * cos.shape[-1]
    if inverse:
        sin = -sin
    nope, rope = x[..., :-rd], x[..., -rd:]
    pairs = rope.float().unflatten(-1, (-1, 2))  # [..., R/2, 2]
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
    return torch.cat((nope, rotated.to(x.dtype)), dim=-1)
