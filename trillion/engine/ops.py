"""Opaque calls out of a compiled graph.

`torch.compile` cannot keep a data-dependent loop in a graph: the routed experts pick which weights
to read from the router's output, so tracing `MoE.routed` breaks the graph at every layer, and a
decode step pays the entry and exit of two graphs per layer. `routed_experts` is a custom op the
compiler treats as one call with a known output shape; inside, it runs the MoE module's own eager
`routed` (any expert modules: float or quantised), found by a key in a registry, since a custom
op's arguments can only be tensors and plain values.
"""

from __future__ import annotations

import weakref

import torch

from ..model.moe import MoE

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
    """`MoE.routed(x, weights, indices)` of the registered module `key`: x [N, D] -> float32 [N, D]."""
    moe = _MOES[key]()
    if moe is None:
        raise RuntimeError(f"routed_experts: the MoE module registered as {key} no longer exists")
    return moe.routed(x, weights, indices)


@routed_experts.register_fake
def _(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, key: int) -> torch.Tensor:
    return x.new_empty(x.shape, dtype=torch.float32)
