"""How the engine runs the routed experts: an explicit strategy the runner is given.

The model's `MoE` has one plain path (`routed`: sort the (token, expert) pairs, one matmul chain
per used expert) and a reference (`routed_reference`). Inside a `torch.compile` graph the plain
path cannot stay: which weights it reads depends on the router's output. So the engine takes one
of two strategies, chosen by the caller (`Engine(experts=...)`; by default "graph" when the
engine compiles, "grouped" without; the default compile="auto" runs its eager steps "grouped"):

* `Grouped`: the MoE's own `routed`, eagerly (one token: `routed_token`, the same sum unsorted).
* `InGraph`: what a compiled step can keep in its graph. One token: each chosen expert runs as
  the first expert's module called with the e-th slices of stacked weights, at an index the graph
  reads from the router (`routed_one`, no copy); a few tokens of a model with few experts: every
  expert on every token, weighted by its routing weight, 0 where not chosen (`routed_dense`,
  nothing depends on data); otherwise the plain path as one opaque custom op (`routed_experts`).
  It needs the experts' weights stacked: `stack_experts(model)`, a visible step that makes each
  expert's parameters (or quantised buffers) views of one tensor per projection, no memory added.

Shapes: N tokens, D dim, E experts, k experts per token.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.func import functional_call

from ..model.moe import MoE, swiglu

DENSE_EXPERTS = 4  # InGraph runs every expert when n_experts <= this x experts per token ...
DENSE_TOKENS = 64  # ... and the step has at most this many tokens (a decode batch, a draft check)


class Grouped:
    """The MoE's own grouped path, eagerly; one token (decoding one sequence) skips its sort."""

    def __call__(self, layer: int, moe: MoE, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor):
        if x.shape[0] == 1 and type(moe).routed is MoE.routed:  # not a subclass's (expert parallel)
            return routed_token(moe, x, weights, indices)
        return moe.routed(x, weights, indices)


def routed_token(moe: MoE, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """`MoE.routed` for one token without its sort, gathers and scatter (a decode step's ~15 small
    ops a layer): the chosen experts in turn, summed in the order `routed` adds them (by expert id),
    so the same bits for a router's k distinct experts. x [1, D] -> float32 [1, D]."""
    ids = indices[0].tolist()
    out = None
    for j in sorted(range(len(ids)), key=ids.__getitem__):  # routed's stable argsort
        y = moe.experts[ids[j]](x, weights[:, j : j + 1]).float()
        out = y if out is None else out + y
    return out


class InGraph:
    """Routed experts a compiled graph can keep (see the module docstring). `stacks[layer]` is
    `stack_experts`' result for that layer's MoE (None: the experts differ in kind, use the op)."""

    def __init__(self, model: nn.Module, stacks: list, *, dense: bool | None = None):
        moes = [blk.ffn for blk in [*model.layers, *model.mtp]]
        self.stacks = stacks
        self.keys = [register_moe(m) for m in moes]
        cfg = model.cfg
        self.dense = cfg.n_routed_experts <= DENSE_EXPERTS * cfg.n_activated_experts if dense is None else dense

    def __call__(self, layer: int, moe: MoE, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor):
        stacks, limit = self.stacks[layer], moe.cfg.swiglu_limit
        if stacks is not None and x.shape[0] == 1:
            return routed_one(x, weights, indices, stacks, limit)
        if stacks is not None and self.dense and x.shape[0] <= DENSE_TOKENS:
            return routed_dense(x, weights, indices, stacks, limit)
        return routed_experts(x, weights, indices, self.keys[layer])


def make_dispatch(kind, model: nn.Module):
    """"grouped" | "graph" | a strategy object -> a strategy object."""
    if kind == "grouped":
        return Grouped()
    if kind == "graph":
        return InGraph(model, stack_experts(model))
    if callable(kind):
        return kind
    raise ValueError(f"experts = {kind!r}; expected 'grouped', 'graph' or a strategy object")


# ---------------------------------------------------------------------------------- stacked weights


def stack_experts(model: nn.Module) -> list:
    """Stack every MoE's routed experts (main layers, then MTP blocks); one entry per layer, as
    `stack_moe` returns. A second call finds them stacked already and adds nothing."""
    return [stack_moe(blk.ffn) for blk in [*model.layers, *model.mtp]]


def stack_moe(moe: MoE) -> list[tuple[nn.Module, dict[str, torch.Tensor]]] | None:
    """The routed experts' w1, w2, w3, each as (one expert's module, {tensor name: [E, ...] stack}).

    Every tensor of the experts' projections (a Linear's weight; a quantised Linear's codes and
    scales) moves into one stacked tensor whose slices are the experts' tensors: each expert's
    parameter or buffer becomes a view of it, so no memory is added and the model computes as
    before. None when the experts' modules differ in kind or shape."""
    experts = list(moe.experts)
    out = []
    for name in ("w1", "w2", "w3"):
        mods = [getattr(e, name) for e in experts]
        if len({type(m) for m in mods}) != 1:
            return None
        stacks = {}
        for key, t0 in [*mods[0].named_parameters(recurse=False), *mods[0].named_buffers(recurse=False)]:
            if t0.numel() == 0:  # e.g. a quantised Linear's dtype tag: the same for all
                continue
            ts = [getattr(m, key) for m in mods]
            if any(t.shape != t0.shape or t.dtype != t0.dtype for t in ts):
                return None
            step = t0.numel()
            if all(t.is_contiguous() and t.untyped_storage().data_ptr() == t0.untyped_storage().data_ptr()
                   and t.storage_offset() == t0.storage_offset() + i * step for i, t in enumerate(ts)):
                stacks[key] = t0.detach().as_strided((len(ts), *t0.shape), (step, *t0.stride()))
                continue
            stack = torch.stack([t.detach() for t in ts])
            for i, (m, t) in enumerate(zip(mods, ts)):
                if isinstance(t, nn.Parameter):
                    t.data = stack[i]
                else:
                    m._buffers[key] = stack[i]
            stacks[key] = stack
        out.append((mods[0], stacks))
    return out


def stacked_expert(stacks, e, x: torch.Tensor, w: torch.Tensor, limit: float) -> torch.Tensor:
    """Expert e (an int or a graph's scalar) of `stack_moe`'s stacks: each projection is the first
    expert's module called with the e-th slices. x [N, D], w [N, 1] -> float32 [N, D]."""

    def proj(i: int, inp: torch.Tensor) -> torch.Tensor:
        m, s = stacks[i]
        return functional_call(m, {k: t[e] for k, t in s.items()}, (inp,))

    h = swiglu(proj(0, x), proj(2, x), limit, w)
    return proj(1, h.to(x.dtype)).float()


def routed_one(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, stacks, limit: float) -> torch.Tensor:
    """`MoE.routed` for a single token: the chosen experts' weights are views of the stacks at an
    index read from `indices`, not copies. x [1, D] -> float32 [1, D]."""
    n_experts = next(iter(stacks[0][1].values())).shape[0]
    out = None
    for j in range(indices.shape[1]):
        e = indices[0, j].item()
        torch._check(e >= 0)
        torch._check(e < n_experts)
        y = stacked_expert(stacks, e, x, weights[:, j : j + 1], limit)
        out = y if out is None else out + y
    return out


def routed_dense(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, stacks, limit: float) -> torch.Tensor:
    """`MoE.routed` with no data-dependent choice: every expert on every token, its hidden
    activation scaled by the token's routing weight for it (0 where the token did not choose it,
    which zeroes that output exactly). x [N, D] -> float32 [N, D]."""
    out = None
    for e in range(next(iter(stacks[0][1].values())).shape[0]):
        w = (weights * (indices == e)).sum(dim=-1, keepdim=True)  # [N, 1]
        y = stacked_expert(stacks, e, x, w, limit)
        out = y if out is None else out + y
    return out


# ---------------------------------------------------------------------------------- the opaque op

# weak references: the registry must not keep a dropped model's experts in memory
_MOES: list[weakref.ref] = []


def register_moe(moe: MoE) -> int:
    """A key for `routed_experts` (the same key for the same module)."""
    for i, ref in enumerate(_MOES):
        if ref() is moe:
            return i
    _MOES.append(weakref.ref(moe))
    return len(_MOES) - 1


@torch.library.custom_op("trillion::routed_experts", mutates_args=())
def routed_experts(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, key: int) -> torch.Tensor:
    """`MoE.routed(x, weights, indices)` of the registered module `key`, as one call a compiled graph
    treats as opaque (a custom op's arguments can only be tensors and plain values, hence the key).
    x [N, D] -> float32 [N, D]."""
    moe = _MOES[key]()
    if moe is None:
        raise RuntimeError(f"routed_experts: the MoE module registered as {key} no longer exists")
    return moe.routed(x, weights, indices)


@routed_experts.register_fake
def _(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, key: int) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=torch.float32)
