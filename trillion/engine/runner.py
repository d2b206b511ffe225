"""Incremental forward passes over V4's state: prefill chunks, decode steps, speculative checks.

`ModelRunner.forward(ids [B, T], seqs)` runs T new tokens of each of B sequences, each sequence at
its own position, through the model, reading and extending each sequence's state in the pool. It
is the model's full-sequence forward (`trillion.model`) cut at arbitrary points, built from the
same module pieces (`Attention.queries/keys/output`, `Compressor.project/pool/finish`,
`Indexer.queries/scores`, `select_topk`), so every path computes the same function; tests check
every step against the full forward.

Per layer and step:
1. q, window KV and (CSA/HCA) compressor projections of the new tokens;
2. the compressor folds the new projections into each sequence's partial block and emits an
   entry for every block completed, into the sequence's pages;
3. CSA: the indexer scores all of the sequence's index keys and picks the top-k visible entries
   per query (`select_topk`, ties to the lower index); HCA: every complete entry is visible;
4. attention over [window ring | the new tokens] and the compressed entries, with the sink;
5. the new KV vectors go into the window ring.

Shapes: B sequences, T new tokens each, H heads, K head dim, Wr ring size, C entries, k top-k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import Transformer
from ..model.attention import Attention
from ..model.block import Block
from ..model.compressor import Compressor
from ..model.indexer import select_topk
from ..model.mhc import hc_post
from .compiling import compile_fn
from .state import MAIN, MTP, LayerState, SeqState, StatePool

QUERY_CHUNK = 256  # bounds the gathered CSA keys of a long prefill chunk at chunk * k * K


@dataclass
class Step:
    """Where each sequence is: positions [B, T] of the new tokens of one stack."""

    seqs: list[SeqState]
    stack: str
    start: torch.Tensor  # [B]
    positions: torch.Tensor  # [B, T]

    @classmethod
    def make(cls, seqs: list[SeqState], stack: str, t: int, device) -> Step:
        start = torch.tensor([s.lengths[stack] for s in seqs], dtype=torch.long, device=device)
        return cls(seqs, stack, start, start[:, None] + torch.arange(t, device=device))

    @property
    def slots(self) -> torch.Tensor:
        return torch.tensor([s.slot for s in self.seqs], dtype=torch.long, device=self.start.device)


def attend_split(
    q: torch.Tensor,
    shared: torch.Tensor,
    shared_visible: torch.Tensor,
    picked: torch.Tensor | None,
    picked_visible: torch.Tensor | None,
    sink: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Softmax attention over keys every query shares plus keys picked per query; K = V.

    q [B, T, H, K]; shared [B, L, K] with shared_visible [B, T, L]; picked [B, T, k, K] with
    picked_visible [B, T, k] (or None); sink [H] joins the denominator only. -> [B, T, H, K].
    """
    qf = q.float()
    logits = torch.einsum("bthk,blk->bhtl", qf, shared.float()) * scale
    logits = logits.masked_fill(~shared_visible.unsqueeze(1), float("-inf"))
    parts = [logits]
    if picked is not None:
        lp = torch.einsum("bthk,btjk->bhtj", qf, picked.float()) * scale
        parts.append(lp.masked_fill(~picked_visible.unsqueeze(1), float("-inf")))
    b, h, t = logits.shape[:3]
    parts.append(sink.float().view(1, h, 1, 1).expand(b, h, t, 1))
    probs = torch.cat(parts, dim=-1).softmax(dim=-1)
    L = shared.shape[1]
    out = torch.einsum("bhtl,blk->bthk", probs[..., :L], shared.float())
    if picked is not None:
        out = out + torch.einsum("bhtj,btjk->bthk", probs[..., L:-1], picked.float())
    return out.to(q.dtype)


def compress_append(
    comp: Compressor, state_kv: torch.Tensor, state_score: torch.Tensor, start: int, kv: torch.Tensor,
    score: torch.Tensor, dtype: torch.dtype,
) -> tuple[torch.Tensor | None, int]:
    """Fold T new tokens into one sequence's partial block; returns (new entries [n, d], first index).

    state_kv/state_score: this sequence's slot rows [c*r, c*w], updated in place. Slots [r:2r]
    (overlap) or [0:r] hold the current block's tokens; with overlap, [0:r] the last complete block.
    kv/score [T, c*w] are the new tokens' projections (score without ape).
    """
    r = comp.ratio
    t = kv.shape[0]
    off = r if comp.overlap else 0
    q0 = start % r  # tokens already in the current block
    block0 = start - q0  # first position of the current block
    phase = (torch.arange(t, device=kv.device) + start) % r
    score = score + comp.ape[phase]
    kv_all = torch.cat((state_kv[off : off + q0], kv))
    sc_all = torch.cat((state_score[off : off + q0], score))
    n = (q0 + t) // r
    entries = None
    if n:
        bkv = kv_all[: n * r].view(1, n, r, -1)
        bsc = sc_all[: n * r].view(1, n, r, -1)
        prev_kv = prev_sc = None
        if comp.overlap and block0 >= r:  # the block before exists: pool its first-half channels
            prev_kv, prev_sc = state_kv[None, :r], state_score[None, :r]
        entries = comp.finish(comp.pool(bkv, bsc, prev_kv, prev_sc), block0 // r, dtype)[0]
        if comp.overlap:
            state_kv[:r] = bkv[0, -1]
            state_score[:r] = bsc[0, -1]
    rem = q0 + t - n * r
    state_kv[off : off + rem] = kv_all[n * r :]
    state_score[off : off + rem] = sc_all[n * r :]
    return entries, block0 // r


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
    shared expert. -> (x, h, post, comb, weights, indices, shared)."""
    x = hc_post(blk.attn.output(out, cos, sin), x, post, comb)
    h, post, comb = blk.hc_pre(x, "ffn")
    h = blk.ffn_norm(h)
    weights, indices = blk.ffn.gate(h.flatten(0, 1), ids.flatten())
    shared = blk.ffn.shared_experts(h.flatten(0, 1)).float() if blk.ffn.shared_experts is not None else None
    return x, h, post, comb, weights, indices, shared


def stage_merge(routed, shared, x, post, comb):
    """The MoE output (routed + shared, float32 like MoE.forward) back into the streams."""
    y = routed if shared is None else routed + shared
    return hc_post(y.to(x.dtype).view(*x.shape[:2], -1), x, post, comb)


class ModelRunner:
    """Runs a `Transformer` incrementally against a `StatePool`."""

    def __init__(self, model: Transformer, pool: StatePool, *, compile: bool = False):
        self.model, self.pool, self.cfg = model, pool, model.cfg
        # When a dict, `compress` records each compressor's projections of the step here, keyed
        # (layer, "comp" | "idx"), so a speculative step can be rolled back without recomputing.
        self.record: dict | None = None
        # The stateless stages and the attention are plain functions, compiled with compile=True
        # for any number of sequences and tokens (the state bookkeeping between them stays eager).
        self.stage_in, self.stage_out, self.stage_merge = stage_in, stage_out, stage_merge
        self.attend, self.logits = attend_split, model.logits
        if compile:
            self.stage_in, self.stage_out, self.stage_merge, self.attend = (
                compile_fn(f, dynamic=True) for f in (stage_in, stage_out, stage_merge, attend_split)
            )

    # ------------------------------------------------------------------ public

    @torch.no_grad()
    def forward(
        self, ids: torch.Tensor, seqs: list[SeqState], *, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Main stack: ids [B, T] -> (float32 logits [B, T or 1, V], final streams [B, T, N, D])."""
        step = Step.make(seqs, MAIN, ids.shape[1], ids.device)
        for s in seqs:
            self.pool.ensure_pages(s, MAIN, s.lengths[MAIN] + ids.shape[1])
        h = self.model.streams(ids)
        for i, layer in enumerate(self.model.layers):
            h = self.block(layer, h, ids, step, i)
        for s in seqs:
            s.lengths[MAIN] += ids.shape[1]
        return self.logits(h[:, -1:] if last_only else h), h

    @torch.no_grad()
    def mtp(
        self, hidden: torch.Tensor, next_ids: torch.Tensor, seqs: list[SeqState], depth: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MTP block at the next MTP positions: hidden [B, T, N, D] (main streams at t), next_ids
        [B, T] (token t + 1) -> (logits for token t + 2 [B, T, V], the block's output streams)."""
        m = self.model
        blk = m.mtp[depth]
        step = Step.make(seqs, MTP, next_ids.shape[1], next_ids.device)
        for s in seqs:
            self.pool.ensure_pages(s, MTP, s.lengths[MTP] + next_ids.shape[1])
        x = blk.combine(hidden, m.embed(next_ids).to(hidden.dtype))
        x = self.block(blk, x, next_ids, step, self.cfg.n_layers + depth)
        for s in seqs:
            s.lengths[MTP] += next_ids.shape[1]
        return m.logits(x, blk.hc_head_fn, blk.hc_head_scale, blk.hc_head_base, blk.norm), x

    # ------------------------------------------------------------------ one block

    def block(self, blk: Block, x: torch.Tensor, ids: torch.Tensor, step: Step, layer: int) -> torch.Tensor:
        """One block; `layer` indexes main layers, then MTP blocks (the pool's layer order).

        The work that needs no state runs in `stage_in` / `stage_out` / `stage_merge` (compiled
        with `compile=True`); the state reads and writes, the indexer's selection and the routed
        experts run here."""
        attn = blk.attn
        cos, sin = attn.rope(step.positions)  # [B, T, R/2]
        h, post, comb, q, kv, proj, iproj, iq, iw = self.stage_in(blk, x, cos, sin)
        out = self.attention(attn, h, q, kv, proj, iproj, iq, iw, step, layer)
        x, h, post, comb, weights, indices, shared = self.stage_out(blk, out, x, post, comb, cos, sin, ids)
        flat = h.flatten(0, 1)
        routed = blk.ffn.routed(flat, weights, indices)
        return self.stage_merge(routed, shared, x, post, comb)

    def attention(
        self, attn: Attention, x: torch.Tensor, q: torch.Tensor, kv: torch.Tensor, proj, iproj, iq, iw,
        step: Step, layer: int,
    ) -> torch.Tensor:
        """Attention of the new tokens against the state; returns the heads' outputs [B, T, H, K]."""
        st: LayerState = self.pool.layers[layer]
        _b, t, _ = x.shape
        slots = step.slots

        # window: the ring (positions before the chunk) then the chunk itself
        wr, w = self.pool.ring_size, self.cfg.window_size
        last = step.start[:, None] - 1
        ring_pos = last - torch.remainder(last - torch.arange(wr, device=x.device), wr)  # [B, Wr]
        kpos = torch.cat((ring_pos, step.positions), dim=1)  # [B, Wr + T]
        qpos = step.positions[:, :, None]
        shared = torch.cat((st.ring[slots], kv), dim=1)
        visible = (kpos[:, None, :] >= 0) & (kpos[:, None, :] <= qpos) & (kpos[:, None, :] > qpos - w)

        picked = picked_visible = None
        if attn.compressor is not None:
            group = self.pool.group(layer)
            counts = self.compress(attn.compressor, proj, step, st.comp_kv, st.comp_score, st.entries, group,
                                   (layer, "comp"), x.dtype)
            rows, valid = self.pool.entry_index(step.seqs, group, counts)
            entry = torch.arange(rows.shape[1], device=x.device)
            ready = valid[:, None, :] & (entry[None, None, :] < (qpos + 1) // attn.ratio)  # [B, T, C]
            flat = st.entries.view(-1, st.entries.shape[-1])
            if attn.indexer is not None:
                ix = attn.indexer
                self.compress(ix.compressor, iproj, step, st.idx_kv, st.idx_score, st.idx_keys, group,
                              (layer, "idx"), x.dtype)
            if attn.indexer is None or rows.shape[1] <= ix.topk:
                # HCA: every complete entry. CSA with no more entries than top-k: the indexer
                # picks every visible entry, so they are attended like HCA's (same keys, no gather)
                shared = torch.cat((shared, flat[rows]), dim=1)
                visible = torch.cat((visible, ready), dim=-1)
            else:  # CSA: the indexer's picks
                keys = st.idx_keys.view(-1, st.idx_keys.shape[-1])[rows]  # [B, C, d]
                top = select_topk(ix.scores(x, iq, keys, iw), ready, ix.topk)  # [B, T, k]
                picked_visible = top >= 0
                picked = flat[rows.gather(1, top.clamp(min=0).flatten(1)).view(top.shape)]  # [B, T, k, K]

        if picked is None or t <= QUERY_CHUNK:
            out = self.attend(q, shared, visible, picked, picked_visible, attn.attn_sink, attn.scale)
        else:
            out = torch.cat([
                self.attend(q[:, s : s + QUERY_CHUNK], shared, visible[:, s : s + QUERY_CHUNK],
                            picked[:, s : s + QUERY_CHUNK], picked_visible[:, s : s + QUERY_CHUNK],
                            attn.attn_sink, attn.scale)
                for s in range(0, t, QUERY_CHUNK)
            ], dim=1)

        # the new KV vectors enter the ring (only the last Wr of a long chunk survive)
        keep = min(t, wr)
        ring_idx = torch.remainder(step.positions[:, t - keep :], wr)
        st.ring[slots[:, None], ring_idx] = kv[:, t - keep :].to(st.ring.dtype)
        return out

    def compress(
        self, comp: Compressor, proj: tuple[torch.Tensor, torch.Tensor], step: Step, state_kv: torch.Tensor,
        state_score: torch.Tensor, pages: torch.Tensor, group: tuple[str, int], key: tuple[int, str],
        dtype: torch.dtype,
    ) -> list[int]:
        """Advance each sequence's compressor with the new tokens' projections (kv, score
        [B, T, c*w]); write new entries into its pages. Returns each sequence's entry count."""
        kv, score = proj
        if self.record is not None:
            self.record[key] = (kv, score)
        t = kv.shape[1]
        counts = []
        p = self.pool.page_size
        flat = pages.view(-1, pages.shape[-1])
        for b, seq in enumerate(step.seqs):
            start = int(step.start[b])
            new, first = compress_append(
                comp, state_kv[seq.slot], state_score[seq.slot], start, kv[b], score[b], dtype
            )
            if new is not None:
                idx = torch.arange(first, first + new.shape[0])
                table = torch.tensor(seq.pages[group], dtype=torch.long)
                flat[table[idx // p] * p + idx % p] = new.to(flat.dtype)
            counts.append((start + t) // comp.ratio)
        return counts


    # ------------------------------------------------------------------ speculative rollback

    def _compressors(self, stack: str):
        """(layer, key, compressor, state_kv, state_score) of every compressor in `stack`."""
        blocks = self.model.layers if stack == MAIN else self.model.mtp
        base = 0 if stack == MAIN else self.cfg.n_layers
        for j, blk in enumerate(blocks):
            st = self.pool.layers[base + j]
            if blk.attn.compressor is not None:
                yield base + j, "comp", blk.attn.compressor, st.comp_kv, st.comp_score
            if blk.attn.indexer is not None:
                yield base + j, "idx", blk.attn.indexer.compressor, st.idx_kv, st.idx_score

    def snapshot(self, seqs: list[SeqState], stack: str) -> dict:
        """Copies of the sequences' partial-block states in `stack`, and their lengths."""
        slots = torch.tensor([s.slot for s in seqs], dtype=torch.long)
        snap = {"lengths": [s.lengths[stack] for s in seqs]}
        for layer, key, _, skv, ssc in self._compressors(stack):
            snap[(layer, key)] = (skv[slots].clone(), ssc[slots].clone())
        return snap

    def rollback(self, seqs: list[SeqState], stack: str, snap: dict, keep: list[int], record: dict | None) -> None:
        """Undo a step in `stack` except its first keep[b] tokens per sequence.

        The window ring needs nothing (its slack covers a step); partial blocks are restored from
        the snapshot and the kept tokens' recorded projections folded in again; entries past the
        new length are left in pages that are trimmed or later overwritten."""
        for layer, key, comp, skv, ssc in self._compressors(stack):
            kv0, sc0 = snap[(layer, key)]
            for b, seq in enumerate(seqs):
                skv[seq.slot] = kv0[b]
                ssc[seq.slot] = sc0[b]
                if keep[b]:
                    kv, sc = record[(layer, key)]
                    compress_append(comp, skv[seq.slot], ssc[seq.slot], snap["lengths"][b], kv[b, : keep[b]],
                                    sc[b, : keep[b]], kv.dtype)
        for b, seq in enumerate(seqs):
            seq.lengths[stack] = snap["lengths"][b] + keep[b]
            self.pool.trim_pages(seq)
