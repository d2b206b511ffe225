"""Tensor parallelism over a tp group: attention heads, the vocabulary-parallel embedding and head.

A parallel module is the model's own module with its tensors cut (shards.py) and its class swapped
for a subclass that adds the one collective it needs (as FSDP2's fully_shard does), so every method
the engine calls (`Attention.queries/keys/output`, `Transformer.streams/logits`) keeps working:
  attention  queries() gives this rank's n_heads / tp heads; output() runs wo_a on its o_groups / tp
             groups and wo_b on the matching columns, a partial sum, then all-reduces it (the only
             collective of the layer: the KV vector, compressor and indexer are whole on every rank);
  embedding  each rank looks up the ids in its vocabulary range (zeros elsewhere); one all-reduce
             (x + 0 is exact, so the sum is the lookup);
  head       each rank computes the logits of its vocabulary range; one all-gather puts them side
             by side, so the logits are exactly those of the full head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.attention import Attention
from ..quant.linear import QuantLinear
from ..quant.swap import FORMATS
from . import comm
from .shards import Cut, format_blocks, stored_cuts


class TensorParallelAttention(Attention):
    """Attention over this rank's heads; `output` sums the ranks' partial wo_b products."""

    tp_group = None

    def output(self, o: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return comm.all_reduce(super().output(o, cos, sin), self.tp_group, "attn")


class VocabParallelEmbedding(nn.Embedding):
    """Rows [vocab_start, vocab_start + num_embeddings) of the embedding; the others come from peers."""

    vocab_start, tp_group = 0, None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.vocab_start
        inside = (local >= 0) & (local < self.num_embeddings)
        out = F.embedding(torch.where(inside, local, 0), self.weight)
        return comm.all_reduce(out.masked_fill(~inside.unsqueeze(-1), 0), self.tp_group, "embed")


class VocabParallelHead(nn.Module):
    """Mixed into the head's own class (float or quantised Linear): logits of all ranks' ranges."""

    vocab_sizes: tuple[int, ...] = ()
    tp_group = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return comm.all_gather(super().forward(x), self.tp_group, list(self.vocab_sizes), -1, "head")


_MIXED: dict[tuple[type, type], type] = {}


def swap_class(module: nn.Module, parallel: type) -> None:
    """Make `module` an instance of `parallel` mixed with its own class (kept once per pair)."""
    cls = type(module)
    if isinstance(module, parallel):
        return
    if issubclass(parallel, cls):
        module.__class__ = parallel
        return
    key = (parallel, cls)
    if key not in _MIXED:
        _MIXED[key] = type(f"{parallel.__name__}{cls.__name__}", (parallel, cls), {})
    module.__class__ = _MIXED[key]


# ------------------------------------------------------------------------------------- cutting


def _cut_tensor(t: torch.Tensor, cut: Cut) -> torch.Tensor:
    part = cut.take(t)
    return torch.empty(part.shape, dtype=t.dtype, device="meta") if t.is_meta else part.contiguous().clone()


def cut_parameter(module: nn.Module, leaf: str, cut: Cut) -> None:
    old = module._parameters[leaf]
    module._parameters[leaf] = nn.Parameter(_cut_tensor(old.data, cut), requires_grad=old.requires_grad)


@torch.no_grad()
def cut_linear(parent: nn.Module, leaf: str, cut: Cut) -> nn.Module:
    """Replace parent.<leaf> (nn.Linear, nn.Embedding or a QuantLinear) by its `cut` part."""
    m = getattr(parent, leaf)
    if isinstance(m, QuantLinear):
        new = _cut_quant(m, cut)
        setattr(parent, leaf, new)
        return new
    cut_parameter(m, "weight", cut)
    n, k = m.weight.shape
    if isinstance(m, nn.Embedding):
        m.num_embeddings = n
    else:
        m.out_features, m.in_features = n, k
    return m


def check_cut(name: str, m: nn.Module, cut: Cut) -> None:
    """Raise ValueError (naming the module) if a quantised `m` cannot be cut at `cut`."""
    if isinstance(m, QuantLinear):
        try:
            stored_cuts(format_blocks(m.fmt, getattr(m, "group_size", None)), (m.out_features, m.in_features), cut)
        except ValueError as e:
            raise ValueError(f"{name}: cannot cut this {m.fmt} weight for tensor parallelism: {e}") from None


def _cut_quant(m: QuantLinear, cut: Cut) -> QuantLinear:
    """A quantised Linear holding the `cut` part of m's weight, cut through its stored tensors."""
    shape = (m.out_features, m.in_features)
    kw = {"group_size": m.group_size} if m.fmt == "int4" else {}
    pieces = stored_cuts(format_blocks(m.fmt, kw.get("group_size")), shape, cut)
    n = cut.stop - cut.start
    out_f, in_f = (n, m.in_features) if cut.dim == 0 else (m.out_features, n)
    if m.fmt == "int8":
        kw["kernel_dtype"] = m.kernel_dtype
    device = m.dtype_tag.device
    new = FORMATS[m.fmt](in_f, out_f, dtype=m.dtype, act_quant=m.act_quant, device=device, **kw)
    if device.type != "meta":
        stored = m.stored_tensors()
        new.load_stored({k: (t if pieces[k] is None else pieces[k].take(t)).contiguous() for k, t in stored.items()})
        if m.fmt == "int4":
            new.set_kernel_dtype(m.sz.dtype)
    return new
