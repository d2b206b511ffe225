"""Mixture of experts: a router, routed SwiGLU experts and one shared expert.

Router (V4 report section 2.1; DeepSeek's `Gate`), in float32:
  scores = score_func(x W^T), score_func one of sqrt(softplus) (V4), sigmoid, softmax;
  choice = top-k of scores + bias (the aux-loss-free balancing bias shifts only the choice), or the
           fixed table tid2eid[token id] on the first `n_hash_layers` layers;
  weights = scores of the chosen experts, renormalised to sum 1 (DeepSeek: not for softmax), times
            route_scale.
Experts: SwiGLU with clamps (up to +-limit, gate to <= limit); the routing weight multiplies the
hidden activation before w2. The output adds the shared expert.

Shapes: N tokens (flattened batch), D dim, I expert width, E experts, k experts per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


class Gate(nn.Module):
    def __init__(self, cfg: ModelConfig, hashed: bool):
        super().__init__()
        self.cfg = cfg
        self.hashed = hashed
        self.weight = nn.Parameter(torch.zeros(cfg.n_routed_experts, cfg.dim, dtype=torch.float32))
        if hashed:
            self.register_buffer("tid2eid", torch.zeros(cfg.vocab_size, cfg.n_activated_experts, dtype=torch.long))
            self.bias = None
        else:
            self.bias = nn.Parameter(torch.zeros(cfg.n_routed_experts, dtype=torch.float32))
        # Opt-in for training (trillion.train.balance): when `record` is set, forward keeps its
        # scores [N, E] (still in the autograd graph) and chosen indices [N, k] in `last_routing`.
        self.record = False
        self.last_routing: tuple[torch.Tensor, torch.Tensor] | None = None

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, D] -> expert affinities [N, E] in float32 (DeepSeek routes in fp32)."""
        logits = F.linear(x.float(), self.weight.float())
        f = self.cfg.score_func
        if f == "softmax":
            return logits.softmax(dim=-1)
        if f == "sigmoid":
            return logits.sigmoid()
        return F.softplus(logits).sqrt()

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, D] (token_ids [N] for hash layers) -> weights [N, k] float32, indices [N, k]."""
        scores = self.scores(x)
        if self.hashed:
            if token_ids is None:
                raise ValueError("a hash-routed MoE layer needs the token ids")
            indices = self.tid2eid[token_ids.reshape(-1)].long()
        else:
            choice = scores + self.bias.float() if self.bias is not None else scores
            indices = choice.topk(self.cfg.n_activated_experts, dim=-1).indices
        if self.record:
            self.last_routing = (scores, indices)
        weights = scores.gather(1, indices)
        if self.cfg.normalize_route_weights:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.cfg.route_scale, indices


class Expert(nn.Module):
    def __init__(self, dim: int, inter_dim: int, swiglu_limit: float):
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)  # gate
        self.w2 = nn.Linear(inter_dim, dim, bias=False)  # down
        self.w3 = nn.Linear(dim, inter_dim, bias=False)  # up
        self.limit = swiglu_limit

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.w2(swiglu(self.w1(x), self.w3(x), self.limit, weights).to(x.dtype))


def swiglu(gate: torch.Tensor, up: torch.Tensor, limit: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The expert's hidden activation in float32: silu(gate) * up with V4's clamps (gate <= limit,
    |up| <= limit, when limit > 0), times the routing weight when given."""
    gate, up = gate.float(), up.float()
    if limit > 0:
        gate = gate.clamp(max=limit)
        up = up.clamp(min=-limit, max=limit)
    h = F.silu(gate) * up
    return h if weights is None else h * weights


class MoE(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.gate = Gate(cfg, hashed=cfg.is_hash(layer))
        self.experts = nn.ModuleList(
            Expert(cfg.dim, cfg.moe_inter_dim, cfg.swiglu_limit) for _ in range(cfg.n_routed_experts)
        )
        self.shared_experts = (
            Expert(cfg.dim, cfg.moe_inter_dim, cfg.swiglu_limit) if cfg.n_shared_experts else None
        )

    def forward(self, x: torch.Tensor, token_ids: torch.Tensor | None = None, *, reference: bool = False) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, indices = self.gate(x, token_ids)
        routed = self.routed_reference(x, weights, indices) if reference else self.routed(x, weights, indices)
        if self.shared_experts is not None:
            routed = routed + self.shared_experts(x).float()
        return routed.to(x.dtype).view(shape)

    def routed(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Grouped path: sort the (token, slot) pairs by expert, one matmul chain per used expert."""
        n, k = indices.shape
        flat = indices.reshape(-1)
        order = torch.argsort(flat, stable=True)  # [N*k] pair ids grouped by expert
        counts = torch.bincount(flat, minlength=self.cfg.n_routed_experts).tolist()
        token = order // k
        xs = x.index_select(0, token)
        ws = weights.reshape(-1).index_select(0, order).unsqueeze(-1)
        out = torch.empty(n * k, x.shape[-1], dtype=torch.float32, device=x.device)
        start = 0
        for e, c in enumerate(counts):
            if c:
                out[start : start + c] = self.experts[e](xs[start : start + c], ws[start : start + c]).float()
                start += c
        return torch.zeros(n, x.shape[-1], dtype=torch.float32, device=x.device).index_add_(0, token, out)

    def routed_reference(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Plain path for tests: every token, every chosen expert, one at a time."""
        y = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for i in range(x.shape[0]):
            for j in range(indices.shape[1]):
                e = int(indices[i, j])
                y[i] += self.experts[e](x[i : i + 1], weights[i, j].view(1, 1))[0].float()
        return y
