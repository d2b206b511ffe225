"""`parallelize(model, mesh)`: a built, unmodified Transformer -> this rank's part of it, wired to its peers.

Two steps, as torchtitan applies its parallelisms after building the model:
  1. `shard(model, placement)`: cut the tensors down to this rank's part (shards.py): heads, sinks,
     output groups, vocabulary range, and the routed experts it owns. No communication; works on a
     model on `meta` too (the sharded loader cuts first, then reads only those parts);
  2. `attach(model, placement, tp_group, ep_group)`: swap in the parallel module classes
     (tensor.py, experts.py), which add the collectives.
The model's own files stay free of torch.distributed; every module keeps the methods the engine
calls, with per-module counts (Attention.n_heads / o_groups, len(MoE.experts)) now local.

Every MoE call is a collective over all ranks: each rank must run the same MoE layers in the same
order. A rank with no token for a pass calls `join_idle(model, stack)` instead of the forward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from ..model import Transformer
from .experts import ExpertParallelMoE
from .layout import require_layout
from .shards import Placement, cuts
from .tensor import (
    TensorParallelAttention,
    VocabParallelEmbedding,
    VocabParallelHead,
    check_cut,
    cut_linear,
    cut_parameter,
    swap_class,
)


def placement_of(mesh: DeviceMesh) -> tuple[Placement, object, object]:
    """(this rank's Placement, its tp process group, the expert-parallel group = the whole mesh)."""
    tp = mesh["tp"].size()
    ranks = mesh.mesh.flatten().tolist()
    ep_group = dist.group.WORLD if ranks == list(range(dist.get_world_size())) else dist.new_group(ranks)
    p = Placement(tp_rank=mesh.get_local_rank("tp"), tp=tp, ep_rank=dist.get_rank(ep_group), ep=len(ranks))
    return p, mesh.get_group("tp"), ep_group


def parallelize(model: Transformer, mesh: DeviceMesh) -> Transformer:
    """Cut `model` (in place) to this rank's part on the ("dp", "tp") `mesh` and wire it; returns it.

    A mesh that cannot hold the model is refused (layout.LayoutError) before anything changes."""
    require_layout(model.cfg, dp=mesh["dp"].size(), tp=mesh["tp"].size(), world=mesh.size())
    placement, tp_group, ep_group = placement_of(mesh)
    shard(model, placement)
    return attach(model, placement, tp_group, ep_group)


def block_modules(model: Transformer) -> list[nn.Module]:
    return [*model.layers, *model.mtp]


@torch.no_grad()
def shard(model: Transformer, p: Placement) -> Transformer:
    """Cut every tensor down to the part `p` holds (shards.py); no communication."""
    cfg = model.cfg
    table = cuts(cfg, p)
    params = dict(model.named_parameters())
    for owner, cut in table.items():  # refuse before cutting anything
        if owner not in params:
            check_cut(owner, model.get_submodule(owner), cut)
    for owner, cut in table.items():
        parent_name, _, leaf = owner.rpartition(".")
        parent = model.get_submodule(parent_name)
        if leaf in parent._parameters:
            cut_parameter(parent, leaf, cut)
        else:
            cut_linear(parent, leaf, cut)
    experts = p.experts(cfg)
    for blk in block_modules(model):
        blk.attn.n_heads, blk.attn.o_groups = cfg.n_heads // p.tp, cfg.o_groups // p.tp
        if len(blk.ffn.experts) != len(experts):
            blk.ffn.experts = blk.ffn.experts[experts.start : experts.stop]
        blk.ffn.first_expert = experts.start
    model.placement = p
    return model


def attach(model: Transformer, p: Placement, tp_group, ep_group) -> Transformer:
    """Swap in the parallel module classes of a model `shard` has cut, with their process groups."""
    cfg = model.cfg
    if p.tp > 1:
        for blk in block_modules(model):
            swap_class(blk.attn, TensorParallelAttention)
            blk.attn.tp_group = tp_group
        swap_class(model.embed, VocabParallelEmbedding)
        model.embed.vocab_start, model.embed.tp_group = p.vocab(cfg)[0], tp_group
        swap_class(model.head, VocabParallelHead)
        model.head.vocab_sizes, model.head.tp_group = tuple(p.vocab_sizes(cfg)), tp_group
    if p.ep > 1:
        for blk in block_modules(model):
            moe = blk.ffn
            swap_class(moe, ExpertParallelMoE)
            moe.ep_group, moe.ep_rank, moe.ep = ep_group, p.ep_rank, p.ep
            moe.tp_group, moe.tp_rank, moe.tp = tp_group, p.tp_rank, p.tp
    return model


@torch.no_grad()
def join_idle(model: Transformer, stack: str = "main", depth: int | None = None) -> None:
    """Join the expert exchanges of one pass of `stack` ("main": the layers, "mtp": the MTP blocks,
    or only block `depth` of them, as the engine runs them) with no token, as a rank with no sequence
    this step must (the other ranks' tokens may still be routed to its experts)."""
    blocks = model.layers if stack == "main" else model.mtp if depth is None else [model.mtp[depth]]
    cfg, dev = model.cfg, model.embed.weight.device
    x = torch.empty(0, cfg.dim, dtype=model.dtype, device=dev)
    w = torch.empty(0, cfg.n_activated_experts, dtype=torch.float32, device=dev)
    ids = torch.empty(0, cfg.n_activated_experts, dtype=torch.long, device=dev)
    for blk in blocks:
        blk.ffn.routed(x, w, ids)
