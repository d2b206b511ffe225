"""One forward step of V4 over its per-sequence state: T >= 1 new tokens for each of B sequences.

Decoding is T = 1, chunked prefill T > 1, a speculative check T = 1 + drafts: one algorithm,
written once here, against the model's full-sequence forward (`trillion.model`), which it is
tested against. The step is built from the model's own pieces (`Attention.queries/keys/output`,
`Compressor.project/pool/finish`, `Indexer.queries/scores`, `select_topk`, `attend`); what it
adds is the state. Per block:

1. stateless work in: mHC, norm, q, the window KV vector, compressor projections, index queries;
2. window: the ring (the last Wr positions before the step) and the new tokens, masked to each
   query's last `window_size` positions;
3. compressors: the new tokens' projections join the ring; every block they complete is pooled
   over its window (its tokens, with overlap also the block before) and written to the pages;
4. entries: HCA sees every complete entry; CSA's indexer scores the sequence's index keys and
   picks the top-k visible ones per query (ties to the lower index);
5. `attend` with the sink; the new KV vectors enter the window ring;
6. stateless work out: output projection, mHC, router, shared expert; the routed experts through
   the strategy the runner was given (`trillion.engine.experts`); mHC back into the streams.

Every shape depends only on B, T and the page-table width, and nothing branches on data, so the
same code runs eagerly or as one `torch.compile` graph (`compile=True`: a graph per stack for
steps of up to GRAPH_TOKENS tokens: decoding and speculative checks; prefill compiles the
stateless stages and the attention, with dynamic shapes).

Shapes: B sequences, T new tokens each, H heads, K head dim, Wr window ring, Rc compressor ring,
C entries a page table addresses, n entries pooled per sequence in a step, k top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..config import ceil_div
from ..model import Transformer
from ..model.attention import QUERY_CHUNK, Attention, attend
from ..model.block import Block
from ..model.compressor import Compressor
from ..model.indexer import select_topk
from ..model.mhc import hc_post
from . import sparse
from .compiling import Background, compile_fn
from .experts import Grouped, InGraph
from .kvstore import Store
from .state import MAIN, MTP, LayerState, SeqState, StatePool

GRAPH_TOKENS = 8  # with compile=True, steps of at most this many tokens per sequence run as one graph
# Entries are read in blocks whose HCA logits [B, T*H, Cb] / indexer scores [B, T, Cb] hold about this
# many elements (16 MiB of float32): the working memory of a step is bounded by it, not by the context.
BLOCK_ELEMENTS = 1 << 22


@dataclass
class Step:
    """Where B sequences are in one stack: everything a step needs, as tensors and static ints."""

    positions: torch.Tensor  # [B, T] of the new tokens
    slots: torch.Tensor  # [B]
    rows: dict[int, torch.Tensor]  # ratio -> [B, C] flat pool rows of entries 0, 1, ... (padded)
    new: dict[int, int]  # ratio -> entries to pool per sequence (a bound; extra ones are masked)
    block: int | None = None  # elements of one [B, T*H, Cb] block over the entries; None: all at once
    # HCA entries that fit one block are attended at once (the model's `attend`) in steps of at most
    # this many tokens a sequence, longer ones blockwise: eagerly, blockwise was faster for a prefill
    # chunk, and with compiled stages the one `attend` (256-token prompts, bench-94m)
    whole_tokens: int = GRAPH_TOKENS


def make_step(pool: StatePool, seqs: list[SeqState], stack: str, t: int, *, static: bool,
              max_model_len: int, device, block: int | None = BLOCK_ELEMENTS, whole_tokens: int = GRAPH_TOKENS) -> Step:
    """Host side of a step: reserve the pages, build the tensors.

    static: shapes that depend only on (B, T) and the longest sequence's page count rounded up to
    a power of two (few distinct graphs for torch.compile), the entries read as one block;
    otherwise exact, the entries read in blocks of `block` elements ([B, T*H, Cb])."""
    lengths = [s.lengths[stack] for s in seqs]
    for s, n in zip(seqs, lengths):
        pool.ensure_pages(s, stack, n + t)
    start = torch.tensor(lengths, dtype=torch.long)
    rows, new = {}, {}
    for g in pool.groups:
        if g[0] != stack:
            continue
        r = g[1]
        need = max(len(s.pages[g]) for s in seqs)
        if static:  # a power of two, at most what max_model_len needs, at least what is held
            cap = ceil_div(max_model_len // r, pool.page_size)
            width = max(need, min(cap, 1 << (max(need, 2) - 1).bit_length()), 1)
            new[r] = (r - 1 + t) // r
        else:
            width = max(need, 1)
            new[r] = max((n + t) // r - n // r for n in lengths)
        rows[r] = pool.page_rows(seqs, g, width).to(device)
    positions = (start[:, None] + torch.arange(t)).to(device)
    slots = torch.tensor([s.slot for s in seqs], dtype=torch.long, device=device)
    return Step(positions, slots, rows, new, None if static else block, whole_tokens)


# ---------------------------------------------------------------------------------- the state algorithm


def fold(comp: Compressor, ring_kv: torch.Tensor, ring_score: torch.Tensor, pages: Store,
         proj: tuple[torch.Tensor, torch.Tensor], step: Step, n: int, dtype: torch.dtype) -> None:
    """Fold the new tokens into the compressor: pool every block they complete into its entry.

    proj: the new tokens' (kv, score) [B, T, c*w] (score without ape); ring_kv / ring_score
    [S, Rc, c*w]: the projections of each slot's last Rc positions; pages: the entries' store
    [n_pages * P] of w-vectors. n: how many entries to pool per sequence (at least the most any
    sequence completes)."""
    kv, score = proj
    r, pos, slots = comp.ratio, step.positions, step.slots
    t, rc = pos.shape[1], ring_kv.shape[1]
    span = (2 if comp.overlap else 1) * r  # tokens in one entry's window
    score = score + comp.ape[pos % r]
    start = pos[:, 0]
    if n:
        # the positions before the step that a window may reach come from the ring (none before 0),
        # then the new tokens: source row i holds position start - span + i
        back = start[:, None] - span + torch.arange(span, device=pos.device)  # [B, span]
        old = (slots[:, None], back % rc)
        src_kv = torch.cat((ring_kv[old], kv), dim=1)  # [B, span + T, c*w]
        src_sc = torch.cat((ring_score[old].masked_fill((back < 0)[..., None], float("-inf")), score), dim=1)
        entry = start[:, None] // r + torch.arange(n, device=pos.device)  # [B, n] entries to pool
        if t == 1 and n == 1:  # one token completes at most the block ending at it: the last span rows
            win_kv, win_sc = src_kv[:, None, 1:], src_sc[:, None, 1:]  # (or nothing: then masked below)
        else:
            window = (entry + 1)[:, :, None] * r - span + torch.arange(span, device=pos.device)  # positions
            src = (window - start[:, None, None] + span).clamp(max=span + t - 1).flatten(1)  # [B, n * span]
            win_kv = src_kv.gather(1, src[..., None].expand(-1, -1, kv.shape[-1])).unflatten(1, (n, span))
            win_sc = src_sc.gather(1, src[..., None].expand(-1, -1, kv.shape[-1])).unflatten(1, (n, span))
        entries = comp.finish(comp.pool(win_kv, win_sc), entry[:, :1], dtype)  # [B, n, w]
        # write the complete ones; the rest (blocks still open) go to the scratch row, masked
        rows = step.rows[r]
        done = entry < ((start + t) // r)[:, None]
        dst = torch.where(done, rows.gather(1, entry.clamp(max=rows.shape[1] - 1)), 0)
        pages.write(dst.flatten(), entries.flatten(0, 1))
    keep = min(t, rc)  # only the last Rc positions stay in the ring
    at = (slots[:, None], pos[:, t - keep :] % rc)
    ring_kv[at] = kv[:, t - keep :]
    ring_score[at] = score[:, t - keep :]


def attention(attn: Attention, st: LayerState, h, q, kv, proj, iproj, iq, iw, step: Step, attend_fn) -> torch.Tensor:
    """Attention of the new tokens against the state of one layer -> heads' outputs [B, T, H, K].

    h [B, T, D] (normed block input), q [B, T, H, K], kv [B, T, K]; proj / iproj the compressor's
    and the indexer compressor's projections; iq, iw the index queries and head weights. Every key
    is seen as the pool stores it (`Store.round` for the new tokens), so a result does not depend
    on how the tokens were split into steps."""
    pos, slots = step.positions, step.slots
    t = pos.shape[1]
    wr, w = st.ring.lead[1], attn.cfg.window_size
    kv = st.ring.round(kv)
    # window: the ring (positions before the step; ring slot = position mod Wr), then the step
    last = pos[:, :1] - 1
    ring_pos = last - torch.remainder(last - torch.arange(wr, device=pos.device), wr)  # [B, Wr]
    kpos = torch.cat((ring_pos, pos), dim=1)[:, None, :]  # [B, 1, Wr + T]
    qpos = pos[:, :, None]  # [B, T, 1]
    keys = torch.cat((st.ring.read(slots), kv), dim=1)  # [B, Wr + T, K]
    visible = (kpos >= 0) & (kpos <= qpos) & (kpos > qpos - w)  # [B, T, Wr + T]

    if attn.compressor is None:
        out = attend_fn(q, keys, visible, attn.attn_sink, attn.scale)
    else:
        r = attn.ratio
        fold(attn.compressor, st.comp_kv, st.comp_score, st.entries, proj, step, step.new[r], h.dtype)
        rows = step.rows[r]  # [B, C]
        ready = (qpos + 1) // r  # [B, T, 1]: entries complete at each query
        ix = attn.indexer
        if ix is not None:
            fold(ix.compressor, st.idx_kv, st.idx_score, st.idx_keys, iproj, step, step.new[r], h.dtype)
        c, b = rows.shape[1], q.shape[0]
        if ix is None or c <= ix.topk:
            # HCA: every complete entry. CSA with no more entries than top-k: the indexer would
            # pick every visible one, so they are attended like HCA's
            # a step whose entries fit one block: the model's attend (fewer ops), unless it is a
            # prefill chunk run eagerly (blockwise measured faster then; Step.whole_tokens)
            if step.block is None or (t <= step.whole_tokens and b * t * attn.n_heads * c <= step.block):
                seen = torch.arange(c, device=pos.device) < ready  # [B, T, C]
                out = attend_fn(q, torch.cat((keys, st.entries.read(rows)), dim=1), torch.cat((visible, seen), -1),
                                attn.attn_sink, attn.scale)
            else:
                out = sparse.attend_entries(q, keys, visible, attn.attn_sink, attn.scale, st.entries.read, rows,
                                            ready, _block(step, attn.n_heads))
        else:
            if step.block is None or b * t * ix.n_heads * c <= sparse.DOTS_ELEMENTS:  # one small block
                scores = ix.scores(h, iq, st.idx_keys.read(rows), iw)  # [B, T, C]
                top = select_topk(scores, torch.arange(c, device=pos.device) < ready, ix.topk)
            else:
                top = sparse.indexer_topk(iq, iw, st.idx_keys.read, rows, ready, ix.topk, _block(step, 1))
            picked_visible = top >= 0
            picked = st.entries.read(rows.gather(1, top.clamp(min=0).flatten(1))).view(*top.shape, -1)  # [B, T, k, K]
            out = torch.cat([  # bound the picked keys' logits of a long chunk
                attend_fn(q[:, s : s + QUERY_CHUNK], keys, visible[:, s : s + QUERY_CHUNK], attn.attn_sink,
                          attn.scale, picked[:, s : s + QUERY_CHUNK], picked_visible[:, s : s + QUERY_CHUNK])
                for s in range(0, t, QUERY_CHUNK)
            ], dim=1) if t > QUERY_CHUNK else attend_fn(q, keys, visible, attn.attn_sink, attn.scale, picked,
                                                          picked_visible)

    keep = min(t, wr)  # the new KV vectors enter the ring (only the last Wr of a long chunk survive)
    st.ring.write((slots[:, None], torch.remainder(pos[:, t - keep :], wr)), kv[:, t - keep :])
    return out


def _block(step: Step, heads: int) -> int | None:
    """Entries per block: [B, T*heads, Cb] holds about `step.block` elements."""
    return None if step.block is None else max(1, step.block // step.positions.numel() // heads)


# ---------------------------------------------------------------------------------- blocks and stacks


def stage_in(blk: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Stateless work before attention: mHC in, norm, q / KV, compressor projections, index
    queries and head weights. x [B, T, N, D] -> (h, post, comb, q, kv, proj, iproj, iq, iw)."""
    attn = blk.attn
    h, post, comb = blk.hc_pre(x, "attn")
    h = blk.attn_norm(h)
    q, q_latent = attn.queries(h, cos, sin)
    kv = attn.keys(h, cos, sin)
    proj = attn.compressor.project(h) if attn.compressor is not None else None
    iproj = iq = iw = None
    if attn.indexer is not None:
        ix = attn.indexer
        iproj = ix.compressor.project(h)
        iq = ix.queries(q_latent, cos, sin)
        iw = ix.head_weights(h)
    return h, post, comb, q, kv, proj, iproj, iq, iw


def stage_out(blk: Block, out, x, post, comb, cos, sin, ids):
    """Stateless work after attention: output projection, mHC out and in again, the router and the
    shared expert. -> (x, h [B*T, D], post, comb, weights, indices, shared)."""
    x = hc_post(blk.attn.output(out, cos, sin), x, post, comb)
    h, post, comb = blk.hc_pre(x, "ffn")
    # normed after the flatten: in a graph the norm's output is then a fresh [B*T, D] buffer that
    # the router's and experts' matmuls read as it is (a view of [B, T, D] as [1, D] got the stride
    # 0 from inductor, which each matmul copied to a BLAS layout first: ~60 copies a decode step)
    h = blk.ffn_norm(h.flatten(0, 1))
    weights, indices = blk.ffn.gate(h, ids.flatten())
    shared = blk.ffn.shared_experts(h).float() if blk.ffn.shared_experts is not None else None
    return x, h, post, comb, weights, indices, shared


def stage_merge(routed, shared, x, post, comb):
    """The MoE output (routed + shared, float32 like MoE.forward) back into the streams."""
    y = routed if shared is None else routed + shared
    return hc_post(y.to(x.dtype).view(*x.shape[:2], -1), x, post, comb)


PLAIN = SimpleNamespace(stage_in=stage_in, attend=attend, stage_out=stage_out, stage_merge=stage_merge)


def run_block(blk: Block, x, ids, step: Step, st: LayerState, layer: int, experts, fns=PLAIN) -> torch.Tensor:
    """One block, T new tokens per sequence: x [B, T, N, D] -> [B, T, N, D]. `layer` indexes main
    layers, then MTP blocks (the pool's order)."""
    cos, sin = blk.attn.rope(step.positions)  # [B, T, R/2]
    h, post, comb, q, kv, proj, iproj, iq, iw = fns.stage_in(blk, x, cos, sin)
    out = attention(blk.attn, st, h, q, kv, proj, iproj, iq, iw, step, fns.attend)
    x, h, post, comb, weights, indices, shared = fns.stage_out(blk, out, x, post, comb, cos, sin, ids)
    return fns.stage_merge(experts(layer, blk.ffn, h, weights, indices), shared, x, post, comb)


def main_stack(model: Transformer, ids, step: Step, layers: list[LayerState], experts, fns=PLAIN):
    """ids [B, T] through every main block -> the final streams [B, T, N, D]."""
    x = model.streams(ids)
    for i, blk in enumerate(model.layers):
        x = run_block(blk, x, ids, step, layers[i], i, experts, fns)
    return x


def mtp_stack(model: Transformer, depth: int, hidden, next_ids, step: Step, st: LayerState, experts, fns=PLAIN):
    """MTP block `depth`: hidden [B, T, N, D] (main streams at t), next_ids [B, T] (token t + 1)
    -> (logits for token t + 2 [B, T, V], the block's output streams)."""
    blk = model.mtp[depth]
    x = blk.combine(hidden, model.embed(next_ids).to(hidden.dtype))
    x = run_block(blk, x, next_ids, step, st, model.cfg.n_layers + depth, experts, fns)
    return model.logits(x, blk.hc_head_fn, blk.hc_head_scale, blk.hc_head_base, blk.norm), x


def main_graph(model: Transformer, ids, step: Step, layers: list[LayerState], experts):
    """A short step as one graph: every main block and the head. -> (logits [B, T, V], streams)."""
    x = main_stack(model, ids, step, layers, experts)
    return model.logits(x), x


class ModelRunner:
    """Runs a `Transformer` incrementally against a `StatePool`.

    experts: the routed-expert strategy (`trillion.engine.experts`; default `Grouped`).
    compile: True: steps of up to GRAPH_TOKENS tokens run as one compiled graph per stack; longer
    ones (prefill) through compiled stages with the state work between them eager. "auto": those
    short steps' graphs compile in a background thread (`compiling.Background`) on a scratch pool
    from `scratch()` (a pool shaped like `pool`); each step runs eagerly until its graph is ready,
    prefill stays eager. False: eager.
    static: give those short steps the graph's shapes (padded page tables, a fixed number of
    entries pooled) even without compiling (default: when they run as a graph); tests run the
    graph's code so.
    block_elements: the compressed entries are read in blocks whose [B, T*H, Cb] logits or index
    scores hold about this many elements (trillion.engine.sparse)."""

    def __init__(self, model: Transformer, pool: StatePool, *, max_model_len: int | None = None,
                 compile: bool | str = False, experts=None, static: bool | None = None,
                 block_elements: int = BLOCK_ELEMENTS, scratch=None):
        self.model, self.pool, self.cfg = model, pool, model.cfg
        self.block_elements = block_elements
        self.max_model_len = max_model_len or self.cfg.max_seq_len  # the engine checks it against the model
        self.experts = experts if experts is not None else Grouped()
        self.eager_experts = self.experts
        self.compiled = compile is True
        self.static = static
        self.fns, self.graph, self.mtp_graph, self.background = PLAIN, None, None, None
        if compile is True:
            self.fns = SimpleNamespace(**{k: compile_fn(f, dynamic=True) for k, f in vars(PLAIN).items()})
        if compile:
            self.graph = compile_fn(main_graph, dynamic=None, own_model=True)
            self.mtp_graph = compile_fn(mtp_stack, dynamic=None, own_model=True)
        if compile == "auto":
            if scratch is None:
                raise ValueError("compile='auto' needs scratch: a function making a pool shaped like `pool`")
            self.background, self.scratch, self._scratch_pool = Background(), scratch, None
            # the step sizes worth a graph: decoding (and, after `precompile`, drafts and checks);
            # a short prompt's prefill runs eagerly rather than compiling a graph per prompt length
            self.graph_tokens = {MAIN: {1}, MTP: {1}}
            if isinstance(self.experts, InGraph):  # its one-token / dense forms only pay inside a graph
                self.eager_experts = Grouped()

    def precompile(self, draft_tokens: int = 0, device=None) -> None:
        """compile="auto": queue the graphs of one sequence's decode step (and with `draft_tokens`,
        of its MTP draft and speculative check) at once; the others (a batch's, the MTP block's
        catch-up after a check) are queued on first use."""
        if self.background is None:
            return
        device = device or self.model.embed.weight.device
        self.graph_tokens = {MAIN: {1, 1 + draft_tokens}, MTP: set(range(1, draft_tokens + 1))}
        self._request(MAIN, 1, 1, device)
        if draft_tokens:
            n, d = self.cfg.hc_mult, self.cfg.dim
            self._request(MTP, 1, 1, device, (1, 1, n, d))
            self._request(MAIN, 1 + draft_tokens, 1, device)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """compile="auto": wait until nothing is compiling (True) or `timeout` s passed (False)."""
        return self.background is None or self.background.wait(timeout)

    def _request(self, stack: str, t: int, batch: int, device, hidden=None, depth: int = 0) -> tuple:
        """The background key of a step of this kind, its compile job queued (once)."""
        key = (stack, t, batch > 1, depth, hidden)
        self.background.request(key, lambda: self._compile_on_scratch(stack, t, batch, device, hidden, depth))
        return key

    def _compile_on_scratch(self, stack: str, t: int, batch: int, device, hidden, depth: int) -> None:
        """Run (so compile) the graph of a step of `batch` sequences x `t` tokens on the scratch pool,
        with inputs shaped like the real ones (contiguous, no views: a guard may read a view's
        base); the scratch state is thrown away."""
        if self._scratch_pool is None:
            self._scratch_pool = self.scratch()
        pool = self._scratch_pool
        seqs = [pool.allocate() for _ in range(batch)]
        try:
            step = make_step(pool, seqs, stack, t, static=True, max_model_len=self.max_model_len, device=device)
            _mark_dynamic(step, batch)
            ids = torch.zeros(batch, t, dtype=torch.long, device=device)
            if batch > 1:
                torch._dynamo.mark_dynamic(ids, 0)
            if stack == MAIN:
                self.graph(self.model, ids, step, pool.layers[: self.cfg.n_layers], self.experts)
            else:
                h = torch.zeros(hidden, dtype=self.model.dtype, device=device)
                if batch > 1:
                    torch._dynamo.mark_dynamic(h, 0)
                self.mtp_graph(self.model, depth, h, ids, step, pool.layers[self.cfg.n_layers + depth], self.experts)
        finally:
            for s in seqs:
                pool.release(s)

    def _step(self, seqs: list[SeqState], stack: str, t: int, device, hidden=None, depth: int = 0):
        """-> (the Step, whether it runs as a graph)."""
        short = t <= GRAPH_TOKENS
        in_graph = self.compiled and short
        if self.background is not None and t in self.graph_tokens[stack] and not self.background.failed():
            meta = None if hidden is None else tuple(hidden.shape)
            in_graph = self.background.ready(self._request(stack, t, len(seqs), device, meta, depth))
        static = in_graph if self.static is None else self.static and short
        step = make_step(self.pool, seqs, stack, t, static=static, max_model_len=self.max_model_len, device=device,
                         block=self.block_elements, whole_tokens=t if self.fns is not PLAIN else GRAPH_TOKENS)
        if in_graph:
            _mark_dynamic(step, len(seqs))
        return step, in_graph

    def _call(self, graph, *args):
        return Background.run(graph, *args) if self.background is not None else graph(*args)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, seqs: list[SeqState], *, last_only: bool = False):
        """Main stack: ids [B, T] -> (float32 logits [B, T or 1, V], final streams [B, T, N, D])."""
        step, in_graph = self._step(seqs, MAIN, ids.shape[1], ids.device)
        layers = self.pool.layers[: self.cfg.n_layers]
        if in_graph:
            if len(seqs) > 1:
                torch._dynamo.mark_dynamic(ids, 0)
            logits, x = self._call(self.graph, self.model, ids, step, layers, self.experts)
            logits = logits[:, -1:] if last_only else logits
        else:
            x = main_stack(self.model, ids, step, layers, self.eager_experts, self.fns)
            logits = self.model.logits(x[:, -1:] if last_only else x)
        for s in seqs:
            s.lengths[MAIN] += ids.shape[1]
        return logits, x

    @torch.no_grad()
    def mtp(self, hidden: torch.Tensor, next_ids: torch.Tensor, seqs: list[SeqState], depth: int = 0):
        """MTP block at the next MTP positions: hidden [B, T, N, D] (main streams at t), next_ids
        [B, T] (token t + 1) -> (logits for token t + 2 [B, T, V], the block's output streams)."""
        # callers pass slices (a draft column, the accepted part of a check) whose strides differ
        # even where `contiguous()` leaves them (size-1 dims); a graph's guards check strides
        hidden, next_ids = (t.clone(memory_format=torch.contiguous_format) for t in (hidden, next_ids))
        step, in_graph = self._step(seqs, MTP, next_ids.shape[1], next_ids.device, hidden, depth)
        st = self.pool.layers[self.cfg.n_layers + depth]
        if in_graph:
            if len(seqs) > 1:
                torch._dynamo.mark_dynamic(hidden, 0)
                torch._dynamo.mark_dynamic(next_ids, 0)
            out = self._call(self.mtp_graph, self.model, depth, hidden, next_ids, step, st, self.experts)
        else:
            out = mtp_stack(self.model, depth, hidden, next_ids, step, st, self.eager_experts, self.fns)
        for s in seqs:
            s.lengths[MTP] += next_ids.shape[1]
        return out


def _mark_dynamic(step: Step, batch: int) -> None:
    """One graph for every page-table width above 1 and every batch size above 1 (torch.compile
    would specialise sizes 0 and 1)."""
    for rows in step.rows.values():
        if rows.shape[1] > 1:
            torch._dynamo.mark_dynamic(rows, 1)
    if batch > 1:
        for t in (step.positions, step.slots, *step.rows.values()):
            torch._dynamo.mark_dynamic(t, 0)
