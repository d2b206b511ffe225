"""Manifold-constrained hyper-connections (mHC, arXiv 2512.24880; V4 report section 2.2).

The residual is N = hc_mult streams of width D. Before each sublayer one linear map of the
RMS-normalised, flattened streams gives (2 + N) * N mixing numbers:

* pre  [N]:    sigmoid(.) + eps, weights that reduce the N streams to the sublayer's input;
* post [N]:    2 * sigmoid(.), weights that spread the sublayer's output over the streams;
* comb [N, N]: softmax rows + eps, then Sinkhorn-Knopp to a doubly stochastic matrix, which mixes
               the old streams: new_j = post_j * out + sum_i comb[i, j] * x_i.

The final head reduces the streams with its own `hc_head` weights (sigmoid only, no Sinkhorn).
Everything here runs in float32 (DeepSeek keeps these parameters and this arithmetic in fp32).

Shapes: B batch, T tokens, N streams, D dim.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Up to this many mixing numbers (32 matrices of 4 x 4: a decode step of up to 32 sequences) the
# Sinkhorn iterations run in NumPy when nothing needs their graph: ~114 tiny torch ops per call cost
# ~2 us of dispatch each, NumPy's the same float32 arithmetic ~0.8 us (a 2.4x faster call, 9% of a
# bench-94m eager decode step). Larger inputs stay in torch, whose kernels are then faster.
HOST_SINKHORN_MAX = 512


def hc_mixes(x: torch.Tensor, fn: torch.Tensor, eps: float) -> torch.Tensor:
    """(flat(x) @ fn^T) * rsqrt(mean(flat(x)^2) + eps): [B, T, N, D] -> [B, T, M] in float32."""
    flat = x.flatten(-2).float()  # [B, T, N*D]
    rsqrt = torch.rsqrt(flat.square().mean(-1, keepdim=True) + eps)
    return F.linear(flat, fn.float()) * rsqrt


def sinkhorn(logits: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """Row softmax (+eps), then alternate column / row normalisation; `iters` column passes."""
    comb = logits.softmax(-1) + eps
    if _host_loop(comb):
        return torch.from_numpy(_normalise(comb.numpy(), iters, np.float32(eps)))
    return _normalise(comb, iters, eps)


def _host_loop(comb: torch.Tensor) -> bool:
    """Whether the iterations may leave torch: a small float32 CPU tensor that no autograd, compiler
    trace or tensor subclass (DTensor, fake tensors) needs to see."""
    return (
        type(comb) is torch.Tensor
        and comb.is_cpu
        and comb.dtype == torch.float32
        and comb.numel() <= HOST_SINKHORN_MAX
        and not comb.requires_grad
        and not torch.compiler.is_compiling()
    )


def _normalise(comb, iters: int, eps):
    """The alternating normalisation of a torch tensor or a NumPy array (one code for both: the
    same float32 sums and divisions; tests/model/test_components.py holds the two equal)."""
    comb = comb / (comb.sum(-2, keepdims=True) + eps)
    for _ in range(iters - 1):
        comb = comb / (comb.sum(-1, keepdims=True) + eps)
        comb = comb / (comb.sum(-2, keepdims=True) + eps)
    return comb


def hc_split(
    mixes: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, n: int, iters: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mixes [B, T, (2+N)*N] -> pre [B, T, N], post [B, T, N], comb [B, T, N, N]."""
    scale, base = scale.float(), base.float()
    pre = torch.sigmoid(mixes[..., :n] * scale[0] + base[:n]) + eps
    post = 2 * torch.sigmoid(mixes[..., n : 2 * n] * scale[1] + base[n : 2 * n])
    comb_logits = mixes[..., 2 * n :].unflatten(-1, (n, n)) * scale[2] + base[2 * n :].view(n, n)
    return pre, post, sinkhorn(comb_logits, iters, eps)


def hc_pre(
    x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, *, iters: int, norm_eps: float,
    hc_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reduce the streams to one sublayer input. x [B, T, N, D] -> y [B, T, D], post, comb."""
    n = x.shape[-2]
    pre, post, comb = hc_split(hc_mixes(x, fn, norm_eps), scale, base, n, iters, hc_eps)
    y = (pre.unsqueeze(-1) * x.float()).sum(-2)  # [B, T, D]
    return y.to(x.dtype), post, comb


def hc_post(out: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """new_j = post_j * out + sum_i comb[i, j] * residual_i: [B, T, D] + [B, T, N, D] -> [B, T, N, D]."""
    mixed = torch.matmul(comb.transpose(-1, -2), residual.float())  # [B, T, N, D]
    y = post.unsqueeze(-1) * out.float().unsqueeze(-2) + mixed
    return y.to(out.dtype)


def hc_head(
    x: torch.Tensor, fn: torch.Tensor, scale: torch.Tensor, base: torch.Tensor, *, norm_eps: float, hc_eps: float
) -> torch.Tensor:
    """Final reduction of the streams: x [B, T, N, D] -> [B, T, D] with sigmoid weights only."""
    pre = torch.sigmoid(hc_mixes(x, fn, norm_eps) * scale.float() + base.float()) + hc_eps  # [B, T, N]
    return (pre.unsqueeze(-1) * x.float()).sum(-2).to(x.dtype)
