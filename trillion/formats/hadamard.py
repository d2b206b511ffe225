"""Normalised Walsh-Hadamard transform along the last dim, by the fast butterfly, O(n log n).

DeepSeek's sparse-attention indexer (V3.2 on) rotates q and k with it before quantising them: the
rotation is orthogonal, undoes itself (H @ H = I once normalised) and spreads an outlier over the
whole vector, which lowers a block's amax relative to its typical value.

The butterfly applies H_2 to each pair of elements h apart, for h = 1, 2, 4, ..., n/2. H_n is the
Kronecker product of log2(n) copies of H_2, so this equals x @ H_n with H_n in Sylvester order
(H_2n = [[H_n, H_n], [H_n, -H_n]]), scaled by n**-0.5.

Legend: n last dim (a power of two), G = n / (2h) groups, h half-width of a butterfly.
"""

from __future__ import annotations

import torch


def hadamard(x: torch.Tensor) -> torch.Tensor:
    """x [..., n] -> x @ H_n * n**-0.5, as x.dtype (computed in float32 for 16-bit inputs)."""
    n = x.shape[-1] if x.dim() else 0
    if n < 1 or n & (n - 1):
        raise ValueError(f"hadamard: the last dim of x {list(x.shape)} must be a power of two")
    y = x if x.dtype in (torch.float32, torch.float64) else x.float()
    h = 1
    while h < n:
        y = y.unflatten(-1, (n // (2 * h), 2, h))  # [..., G, 2, h]
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2).flatten(-3)  # [..., n]
        h *= 2
    return (y * n**-0.5).to(x.dtype)
