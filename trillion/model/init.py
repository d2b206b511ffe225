"""Seeded random initialisation of a freshly built model.

Linear and embedding weights ~ N(0, std); norms 1; mHC `fn` ~ N(0, std), `base` 0, `scale` 1;
sinks, ape and routing biases 0; hash tables give every token `k` distinct experts. Parameters
are visited in name order with one CPU generator, so a seed gives the same model everywhere.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def init_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("norm.weight") or leaf.endswith("_scale"):
            value = torch.ones(p.shape)
        elif leaf in ("attn_sink", "ape", "bias") or leaf.endswith("_base"):
            value = torch.zeros(p.shape)
        else:
            value = torch.randn(p.shape, generator=g) * std
        p.copy_(value.to(p.dtype))
    for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
        if name.endswith("tid2eid"):
            b.copy_(hash_table(b.shape[0], _n_experts(model, name), b.shape[1], g))
    return model


def hash_table(vocab: int, n_experts: int, k: int, g: torch.Generator) -> torch.Tensor:
    """[vocab, k] distinct expert ids per token, uniformly random."""
    return torch.rand(vocab, n_experts, generator=g).argsort(dim=-1)[:, :k]


def _n_experts(model: nn.Module, buffer_name: str) -> int:
    gate = model.get_submodule(buffer_name.rsplit(".", 1)[0])
    return gate.weight.shape[0]
