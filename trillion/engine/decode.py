"""The decode fast path: one new token per sequence, the whole step as one graph of tensor ops.

`ModelRunner.forward` handles any number of tokens per sequence with Python bookkeeping per
sequence. Decoding (one token each) is the hot loop, so this module redoes it with no Python work
per sequence or per position: positions, slots, page tables and masks are tensors, the compressor
folds a token in with indexed writes and emits an entry under a mask, the compressed entries are
gathered through a page table padded to a fixed width. Shapes depend only on the batch size and
`max_model_len`, so `torch.compile` turns the whole step (every block, the head) into one graph
(`decode_step`). The routed experts choose their weights from data: for one sequence the graph
takes the chosen experts' weights as views of stacked weights at an index it reads from the router
(`stack_experts`, `routed_one`); for a batch they run through one opaque op per layer
(`ops.routed_experts`).
Tested against `ModelRunner.forward` (and so against the full forward) token by token.

Shapes: B sequences, Wr ring size, Cm entries a page table can address, P page size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ..model.block import Block
from ..model.compressor import Compressor
from ..model.indexer import select_topk
from ..model.moe import MoE, swiglu
from . import ops
from .compiling import compile_fn
from .runner import attend_split, stage_merge, stage_out
from .state import MAIN, SeqState, StatePool


def fold_token(
    comp: Compressor, state_kv: torch.Tensor, state_score: torch.Tensor, slots: torch.Tensor, pos: torch.Tensor,
    kv: torch.Tensor, score: torch.Tensor, dtype: torch.dtype, lazy: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Fold one token per sequence into its partial block (in place).

    kv, score [B, c*w] (score without ape); pos [B]. Returns (entry [B, w], complete [B]): the
    entry pooled from the current block, valid where the token completed it. `lazy` (eager
    mode only: it branches on data) skips the pooling when no sequence completes a block."""
    r = comp.ratio
    off = r if comp.overlap else 0
    phase = pos % r
    state_kv[slots, off + phase] = kv
    state_score[slots, off + phase] = score + comp.ape[phase]
    complete = (pos + 1) % r == 0
    if lazy and not bool(complete.any()):
        return None, complete
    skv, ssc = state_kv[slots], state_score[slots]  # [B, c*r, c*w]
    if comp.overlap:
        d = comp.head_dim
        has_prev = (pos + 1 >= 2 * r)[:, None, None]  # a complete block before this one
        prev_sc = torch.where(has_prev, ssc[:, :r, :d], torch.full_like(ssc[:, :r, :d], float("-inf")))
        kv_all = torch.cat((skv[:, :r, :d], skv[:, r:, d:]), dim=1)  # [B, 2r, w]
        sc_all = torch.cat((prev_sc, ssc[:, r:, d:]), dim=1)
        # a completed block becomes the "previous" block of the next one
        state_kv[slots, :r] = torch.where(complete[:, None, None], skv[:, r:], skv[:, :r])
        state_score[slots, :r] = torch.where(complete[:, None, None], ssc[:, r:], ssc[:, :r])
    else:
        kv_all, sc_all = skv, ssc
    pooled = (kv_all * sc_all.softmax(dim=1)).sum(dim=1)  # [B, w]
    entry = comp.finish(pooled[:, None], (pos // r)[:, None], dtype)[:, 0]
    return entry, complete


def write_entry(pages: torch.Tensor, rows: torch.Tensor, entry: torch.Tensor | None, complete: torch.Tensor) -> None:
    """pages [n, P, w]; rows [B] flat row of each sequence's new entry; writes where complete."""
    if entry is None:
        return
    flat = pages.view(-1, pages.shape[-1])
    flat[rows] = torch.where(complete[:, None], entry.to(flat.dtype), flat[rows])


def decode_layer(
    blk: Block, x: torch.Tensor, ids: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
    ring: torch.Tensor, table_rows: torch.Tensor | None, new_rows: torch.Tensor | None,
    comp_kv, comp_score, entries, idx_kv, idx_score, idx_keys, lazy: bool = False,
):
    """One block for one token per sequence, up to the router. x [B, 1, N, D], pos [B].

    table_rows [B, Cm]: flat page rows of entries 0..Cm-1 of each sequence; new_rows [B]: the row
    of the entry this token completes (if it does). -> (x, h, post, comb, weights, indices, shared)."""
    attn = blk.attn
    cos, sin = attn.rope(pos[:, None])  # [B, 1, R/2]
    h, post, comb = blk.hc_pre(x, "attn")
    h = blk.attn_norm(h)
    q, q_latent = attn.queries(h, cos, sin)  # [B, 1, H, K]
    kv = attn.keys(h, cos, sin)  # [B, 1, K]

    wr, w = ring.shape[1], attn.cfg.window_size
    last = pos[:, None] - 1
    ring_pos = last - torch.remainder(last - torch.arange(wr, device=x.device), wr)  # [B, Wr]
    kpos = torch.cat((ring_pos, pos[:, None]), dim=1)
    qpos = pos[:, None, None]
    shared = torch.cat((ring[slots], kv), dim=1)  # [B, Wr + 1, K]
    visible = (kpos[:, None, :] >= 0) & (kpos[:, None, :] > qpos - w)  # all kpos <= qpos here

    picked = picked_visible = None
    if attn.compressor is not None:
        proj_kv, proj_sc = attn.compressor.project(h[:, 0])
        entry, complete = fold_token(attn.compressor, comp_kv, comp_score, slots, pos, proj_kv, proj_sc, x.dtype,
                                     lazy)
        write_entry(entries, new_rows, entry, complete)
        ready = (torch.arange(table_rows.shape[1], device=x.device) < ((pos + 1) // attn.ratio)[:, None])[:, None]
        flat = entries.view(-1, entries.shape[-1])
        if attn.indexer is None:
            shared = torch.cat((shared, flat[table_rows]), dim=1)
            visible = torch.cat((visible, ready), dim=-1)
        else:
            ix = attn.indexer
            ikv, isc = ix.compressor.project(h[:, 0])
            ientry, icomplete = fold_token(ix.compressor, idx_kv, idx_score, slots, pos, ikv, isc, x.dtype, lazy)
            write_entry(idx_keys, new_rows, ientry, icomplete)
            keys = idx_keys.view(-1, idx_keys.shape[-1])[table_rows]  # [B, Cm, d]
            scores = ix.scores(h, ix.queries(q_latent, cos, sin), keys, ix.head_weights(h))
            top = select_topk(scores, ready, ix.topk)  # [B, 1, k]
            picked_visible = top >= 0
            picked = flat[table_rows.gather(1, top.clamp(min=0).flatten(1)).view(top.shape)]

    out = attend_split(q, shared, visible, picked, picked_visible, attn.attn_sink, attn.scale)
    ring[slots, torch.remainder(pos, wr)] = kv[:, 0].to(ring.dtype)

    x, h, post, comb, weights, indices, shared_out = stage_out(blk, out, x, post, comb, cos, sin, ids)
    return x, h.flatten(0, 1), post, comb, weights, indices, shared_out


def stack_experts(moe: MoE) -> list[tuple[nn.Module, dict[str, torch.Tensor]]] | None:
    """The routed experts' w1, w2, w3, each as (one expert's module, {tensor name: [E, ...] stack}).

    Every tensor of the experts' projections (a Linear's weight; a quantised Linear's codes and
    scales) moves into one stacked tensor whose slices are the experts' tensors (each expert's
    parameter or buffer becomes a view of it: no memory is added), so a compiled graph can run
    expert e as the first expert's module called with the e-th slices (`routed_one`), without a
    copy. A second call finds them already stacked. None when the experts' modules differ in kind."""
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


def n_stacked(stacks) -> int:
    """The number of experts in `stack_experts`' stacks."""
    return next(iter(stacks[0][1].values())).shape[0]


def stacked_expert(stacks, e, x: torch.Tensor, w: torch.Tensor, limit: float) -> torch.Tensor:
    """Expert e (an int or a graph's scalar) of `stack_experts`' stacks: each projection is the
    first expert's module called with the e-th slices. x [N, D], w [N, 1] -> float32 [N, D]."""

    def proj(i: int, inp: torch.Tensor) -> torch.Tensor:
        m, s = stacks[i]
        return functional_call(m, {k: t[e] for k, t in s.items()}, (inp,))

    h = swiglu(proj(0, x), proj(2, x), limit, w)
    return proj(1, h.to(x.dtype)).float()


def routed_one(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, stacks, limit: float) -> torch.Tensor:
    """`MoE.routed` for a single token inside a graph: the chosen experts' weights are views of
    the stacks at an index read from `indices`, not copies. x [1, D] -> float32 [1, D]."""
    n_experts = n_stacked(stacks)
    out = None
    for j in range(indices.shape[1]):
        e = indices[0, j].item()
        torch._check(e >= 0)
        torch._check(e < n_experts)
        y = stacked_expert(stacks, e, x, weights[:, j : j + 1], limit)
        out = y if out is None else out + y
    return out


def routed_dense(x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, stacks, limit: float) -> torch.Tensor:
    """`MoE.routed` for a batch inside a graph, when the experts are few: every expert runs on every
    token, its hidden activation scaled by the token's routing weight for it (0 where the token did
    not choose it, which zeroes that output exactly), so nothing depends on data. x [B, D]."""
    out = None
    for e in range(n_stacked(stacks)):
        w = (weights * (indices == e)).sum(dim=-1, keepdim=True)  # [B, 1]
        y = stacked_expert(stacks, e, x, w, limit)
        out = y if out is None else out + y
    return out


DENSE_EXPERTS = 4  # a batch runs every expert in the graph when n_experts <= this x experts per token


def decode_step(model, ids, pos, slots, layers, rows, moe_keys, stacks, lazy: bool = False, dense: bool = False):
    """The whole main stack for one token per sequence: ids [B, 1] -> (float32 logits [B, 1, V],
    final streams [B, 1, N, D]). `layers`: each block's LayerState; `rows`: {ratio: (table_rows,
    new_rows)}. The routed experts of block i, given `stacks[i]`: for a single sequence in the graph
    (`routed_one`), for a batch in the graph too when `dense` (`routed_dense`); else through
    `ops.routed_experts` with key `moe_keys[i]`, or eagerly when `moe_keys` is None."""
    x = model.streams(ids)
    for i, blk in enumerate(model.layers):
        st = layers[i]
        tr, nr = rows.get(st.ratio, (None, None))
        x, h, post, comb, weights, indices, shared = decode_layer(
            blk, x, ids, pos, slots, st.ring, tr, nr, st.comp_kv, st.comp_score, st.entries,
            st.idx_kv, st.idx_score, st.idx_keys, lazy,
        )
        stacked = stacks[i] if stacks is not None else None
        if stacked is not None and h.shape[0] == 1:
            routed = routed_one(h, weights, indices, stacked, blk.cfg.swiglu_limit)
        elif stacked is not None and dense:
            routed = routed_dense(h, weights, indices, stacked, blk.cfg.swiglu_limit)
        elif moe_keys is not None:
            routed = ops.routed_experts(h, weights, indices, moe_keys[i])
        else:
            routed = blk.ffn.routed(h, weights, indices)
        x = stage_merge(routed, shared, x, post, comb)
    return model.logits(x), x


class Decoder:
    """Decode steps of the main stack through `decode_step`.

    With compile=True the whole step is one `torch.compile` graph (trillion.engine.compiling), so
    a step enters compiled code once. Compiling stacks the routed experts' weights (`stack_experts`)."""

    def __init__(self, model, pool: StatePool, max_model_len: int, *, compile: bool = False):
        self.model, self.pool, self.cfg = model, pool, model.cfg
        p = pool.page_size
        # entries a sequence can reach, per ratio, rounded up to whole pages
        self.max_pages = {g: -(-(max_model_len // g[1]) // p) for g in pool.groups}
        self.compiled = compile
        self.lazy = not compile  # eager mode may branch on data; a compiled graph may not
        self.moe_keys = self.stacks = None
        # few experts: a batch of sequences touches most of them anyway, so run them all in the graph
        self.dense = self.cfg.n_routed_experts <= DENSE_EXPERTS * self.cfg.n_activated_experts
        self.run = decode_step
        if compile:
            self.moe_keys = [ops.register_moe(blk.ffn) for blk in model.layers]
            self.stacks = [stack_experts(blk.ffn) for blk in model.layers]
            self.run = compile_fn(decode_step, dynamic=None, own_model=True)

    @torch.no_grad()
    def step(self, ids: torch.Tensor, seqs: list[SeqState]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, 1] -> (float32 logits [B, 1, V], final streams [B, 1, N, D])."""
        pool, p = self.pool, self.pool.page_size
        dev = ids.device
        pos = torch.tensor([s.lengths[MAIN] for s in seqs], dtype=torch.long, device=dev)
        slots = torch.tensor([s.slot for s in seqs], dtype=torch.long, device=dev)
        rows: dict = {}
        for s in seqs:
            pool.ensure_pages(s, MAIN, s.lengths[MAIN] + 1)
        for g in pool.groups:
            if g[0] != MAIN:
                continue
            # Page tables as wide as the longest sequence needs, rounded up to a power of two
            # (few distinct shapes for torch.compile), never wider than max_model_len allows.
            need = max(2, max(len(s.pages[g]) for s in seqs))
            width = min(self.max_pages[g], 1 << (need - 1).bit_length())
            table = torch.full((len(seqs), width), pool.scratch[g], dtype=torch.long)
            for b, s in enumerate(seqs):
                t = s.pages[g]
                table[b, : len(t)] = torch.tensor(t, dtype=torch.long)
            table_rows = (table[:, :, None] * p + torch.arange(p)).flatten(1)  # [B, Cm]
            e = pos // g[1]
            new_rows = table_rows.gather(1, e.clamp(max=table_rows.shape[1] - 1)[:, None])[:, 0]
            table_rows = table_rows.to(dev)
            if self.compiled and table_rows.shape[1] > 1:
                # one graph for every width (widths of 0 or 1 would be specialised by torch.compile)
                torch._dynamo.mark_dynamic(table_rows, 1)
            rows[g[1]] = (table_rows, new_rows.to(dev))
        if self.compiled and len(seqs) > 1:  # one graph for every batch size above 1
            for t in (ids, pos, slots):
                torch._dynamo.mark_dynamic(t, 0)
            for tr, nr in rows.values():
                torch._dynamo.mark_dynamic(tr, 0)
                torch._dynamo.mark_dynamic(nr, 0)
        logits, x = self.run(self.model, ids, pos, slots, pool.layers[: len(self.model.layers)], rows,
                             self.moe_keys, self.stacks, self.lazy, self.dense)
        for s in seqs:
            s.lengths[MAIN] += 1
        return logits, x
