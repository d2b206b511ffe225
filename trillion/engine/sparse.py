"""Attention over the compressed entries in blocks: working memory bounded by the step, not the context.

A step of T new tokens meets up to C = context / ratio entries per compressed layer. Building
[T, C] tensors (scores, masks, logits) would make a prefill chunk's memory and time grow with the
context; here every such tensor is [T, Cb] for a block of Cb entries read from the pages as needed:

* `indexer_topk` (CSA): the lightning indexer's scores [T, Cb] block by block, each made by matmuls
  [Tg*H, d] @ [d, Cb] over groups of Tg queries small enough for the cache (`_scores`; the dominant
  cost, O(T * C * H * d)), with a running top-k. The order is `select_topk`'s: higher score first,
  equal scores the lower entry index first. Blocks are visited in index order, so merging [best so
  far | this block's best] by a stable sort keeps the rule, and a row whose k-th pick no score of
  the block beats skips the merge (far into a context, most rows); within a block, `torch.topk`
  picks the right set except where the k-th score is tied, and those rows are settled by index
  (`block_topk`).
* `attend_entries` (HCA): softmax attention over the window keys, the sink and every visible entry,
  the entries folded in block by block with an online softmax (running max, sum and output).

Both take the entries through `read(rows) -> [B, Cb, w]` (a paged store read, `trillion.engine.
kvstore`), and `ready` [B, T, 1], the count of entries each query may see ((position + 1) // ratio).
`block=None` reads every entry as one block (short steps, and the compiled graphs, whose loops
must not depend on the context). The mask-based references are `Indexer.scores` + `select_topk`
and `attend` (trillion.model); tests/engine/test_long_sparse.py holds these equal.

Shapes: B sequences, T queries, H heads, K head dim, d index head dim, C entries (page rows), Cb
entries per block, k top-k, L window keys.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def blocks(c: int, block: int | None) -> list[tuple[int, int]]:
    """(start, end) of each block over c entries (one block when `block` is None)."""
    if block is None:
        return [(0, c)] if c else []
    return [(s, min(c, s + block)) for s in range(0, c, block)]


def block_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of scores [N, Cb] -> (values, indices) [N, k] as a set, ties to the lower index.

    `torch.topk` returns the right set except in rows where the k-th value is tied beyond k; those
    rows are settled by index. Picks of -inf (invisible) entries are left to the caller."""
    vals, idx = scores.topk(k, dim=-1)
    kth = vals[:, -1:]
    tied = ((scores >= kth).sum(-1) > k) & (kth[:, 0] > NEG_INF)  # [N]
    if torch.compiler.is_compiling():  # a graph cannot branch on data: settle every row
        idx = torch.where(tied[:, None], _by_index(scores, kth, k), idx)
    elif bool(tied.any()):
        rows = tied.nonzero()[:, 0]
        idx = idx.index_copy(0, rows, _by_index(scores[rows], kth[rows], k))
    else:
        return vals, idx
    return scores.gather(-1, idx), idx


def _by_index(scores: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [N, k] of the scores above the k-th value, then the lowest-index ones equal to it."""
    above = scores > kth
    eq = scores == kth
    take = above | (eq & (eq.cumsum(-1) <= k - above.sum(-1, keepdim=True)))  # exactly k per row
    return take.to(torch.float16).topk(k, dim=-1).indices


def _merge(best_v, best_i, v, i, k):
    """Keep the k best of [best | new] by (value desc, index asc); every best index is lower."""
    cand_v, cand_i = torch.cat((best_v, v), dim=-1), torch.cat((best_i, i), dim=-1)
    by_index = cand_i.argsort(dim=-1)  # the new block's picks come in value order: put ties by index
    cand_v, cand_i = cand_v.gather(-1, by_index), cand_i.gather(-1, by_index)
    order = torch.sort(cand_v, dim=-1, descending=True, stable=True).indices[..., :k]
    return cand_v.gather(-1, order), cand_i.gather(-1, order)


# The indexer's [queries x heads, entries] products are made for a few queries at a time, so that each
# block of them (about this many float32 elements, 1 MiB) stays in the CPU's cache through its ReLU and
# the head-weighted sum: three passes over the largest tensor of a long prefill run from cache, not memory.
DOTS_ELEMENTS = 1 << 18


def _scores(qf: torch.Tensor, wf: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """sum_h w_h relu(q_h . key) -> [B, T, Cb]; qf [B, T*H, d], wf [B, T, H], keys [B, Cb, d]."""
    b, t, h = wf.shape
    cb = keys.shape[1]
    kt = keys.transpose(1, 2).contiguous()  # [B, d, Cb]
    group = t if torch.compiler.is_compiling() else max(1, DOTS_ELEMENTS // (b * h * max(cb, 1)))
    if group >= t:
        dots = torch.bmm(qf, kt).relu_()  # [B, T*H, Cb]
        return torch.bmm(wf.reshape(b * t, 1, h), dots.view(b * t, h, cb)).view(b, t, cb)
    scores = qf.new_empty(t, b, cb)  # query-major: each group's rows are one contiguous slice, written in place
    for s in range(0, t, group):
        e = min(t, s + group)
        dots = torch.bmm(qf[:, s * h : e * h], kt).relu_()  # [B, Tg*H, Cb]
        dots = dots.view(b, e - s, h, cb).transpose(0, 1).reshape((e - s) * b, h, cb) if b > 1 else dots
        torch.bmm(wf[:, s:e].transpose(0, 1).reshape((e - s) * b, 1, h), dots.view((e - s) * b, h, cb),
                  out=scores[s:e].view((e - s) * b, 1, cb))
    return scores.transpose(0, 1)


def indexer_topk(q: torch.Tensor, w: torch.Tensor, read, rows: torch.Tensor, ready: torch.Tensor, k: int,
                 block: int | None) -> torch.Tensor:
    """Entries [B, T, min(k, C)] each query picks (-1: fewer than k visible), as `select_topk` over
    `Indexer.scores` would, with scores [B, T, C] never built.

    q [B, T, H, d] index queries, w [B, T, H] head weights (with their scale), rows [B, C] the pool
    rows of entries 0..C-1, ready [B, T, 1] entries visible to each query."""
    b, t, h, d = q.shape
    c = rows.shape[1]
    k = min(k, c)
    qf = q.float().reshape(b, t * h, d)
    wf = w.float().reshape(b, t, h)
    best_v = q.new_full((b * t, k), NEG_INF, dtype=torch.float32)  # -inf: no pick yet
    best_i = torch.full((b * t, k), -1, dtype=torch.long, device=q.device)
    seen_by_all = int(ready.min()) if not torch.compiler.is_compiling() else 0
    for s, e in blocks(c, None if block is None else max(block, k)):
        scores = _scores(qf, wf, read(rows[:, s:e]).float())  # [B, T, Cb]
        if e > seen_by_all:  # some query may not see some of these entries yet
            scores = scores.masked_fill(torch.arange(s, e, device=q.device) >= ready, NEG_INF)
        scores = scores.reshape(b * t, e - s)
        if torch.compiler.is_compiling():  # a graph cannot branch on data: merge every row
            v, i = block_topk(scores, min(k, e - s))
            best_v, best_i = _merge(best_v, best_i, v, i + s, k)
            continue
        # Only an entry scoring above a row's k-th pick can join it (an equal one loses: its index is
        # higher). Far into a context few rows gain from a block: the rest skip its top-k and merge.
        gain = (scores > best_v[:, -1:]).any(-1).nonzero()[:, 0]
        if gain.numel() == 0:
            continue
        if gain.numel() == b * t:
            v, i = block_topk(scores, min(k, e - s))
            best_v, best_i = _merge(best_v, best_i, v, i + s, k)
            continue
        v, i = block_topk(scores[gain], min(k, e - s))
        v, i = _merge(best_v[gain], best_i[gain], v, i + s, k)
        best_v, best_i = best_v.index_copy(0, gain, v), best_i.index_copy(0, gain, i)
    top = torch.where(best_v > NEG_INF, best_i, -1)
    return top.view(b, t, k)


# exp(x) for x below about -87.3 (a float32 result under the smallest normal number, or -inf for a
# masked logit) takes a slow path in torch's vectorised exp: ~10x the time, and most of a prefill
# chunk's window logits are masked. Weights are computed from max(x, EXP_FLOOR) and masked by
# multiplication: a visible entry that far below the row's maximum weighs 1.6e-38 instead of less,
# nothing next to the maximum's 1 in the denominator.
EXP_FLOOR = -87.0


def _mask_bias(seen: torch.Tensor) -> torch.Tensor:
    """0 where seen is 1, -inf where it is 0 (to add before a max)."""
    return torch.where(seen > 0, 0.0, NEG_INF)


def _exp_weights(logits: torch.Tensor, m: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """exp(logits - m) where seen, 0 elsewhere; logits [B, T, H, n], m [B, T, H], seen [B, T, 1, n]."""
    return (logits - m[..., None]).clamp_(min=EXP_FLOOR).exp_().mul_(seen)


def attend_entries(q: torch.Tensor, keys: torch.Tensor, visible: torch.Tensor, sink: torch.Tensor, scale: float,
                   read, rows: torch.Tensor, ready: torch.Tensor, block: int | None) -> torch.Tensor:
    """`attend(q, cat(keys, entries), cat(visible, entry < ready), sink, scale)` with the entries
    folded in block by block (online softmax) -> [B, T, H, K].

    q [B, T, H, K]; keys [B, L, K] (window ring and new tokens) with visible [B, T, L] (each query
    sees at least itself, so the running max is finite from the start); sink [H]; rows [B, C]."""
    b, t, h, kd = q.shape
    qf = q.float().reshape(b, t * h, kd)  # rows (t, h): the logits of a block are one matmul
    kf = keys.float()
    logits = torch.bmm(qf, kf.transpose(1, 2)).view(b, t, h, -1) * scale
    seen = visible[:, :, None, :].float()  # [B, T, 1, L]: 1 visible, 0 masked
    sink_l = sink.float().view(1, 1, h).expand(b, t, h)
    m = torch.maximum((logits + _mask_bias(seen)).amax(-1), sink_l)  # [B, T, H]
    p = _exp_weights(logits, m, seen)
    denom = p.sum(-1) + torch.exp(sink_l - m)  # the sink joins the denominator only
    out = torch.bmm(p.view(b, t * h, -1), kf).view(b, t, h, kd)
    for s, e in blocks(rows.shape[1], block):
        ent = read(rows[:, s:e]).float()  # [B, Cb, K]
        lg = torch.bmm(qf, ent.transpose(1, 2)).view(b, t, h, e - s) * scale
        seen = (torch.arange(s, e, device=q.device) < ready)[:, :, None, :].float()  # [B, T, 1, Cb]
        m_new = torch.maximum(m, (lg + _mask_bias(seen)).amax(-1))
        alpha = torch.exp(m - m_new)
        p = _exp_weights(lg, m_new, seen)
        denom = denom * alpha + p.sum(-1)
        out = out * alpha[..., None] + torch.bmm(p.view(b, t * h, e - s), ent).view(b, t, h, kd)
        m = m_new
    return (out / denom[..., None]).to(q.dtype)
