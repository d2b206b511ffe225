"""The blockwise paths over compressed entries (trillion.engine.sparse) equal the model's mask-based
references: the indexer's running top-k equals `select_topk` over `Indexer.scores` of every entry,
and blockwise HCA attention equals `attend` over every entry, on random cases with ties (one index
head: many scores exactly 0), fewer entries than top-k, and blocks that cut anywhere."""

import pytest
import torch
from helpers import mixed_config

from trillion.engine import sparse
from trillion.engine.sparse import attend_entries, block_topk, indexer_topk
from trillion.model.attention import attend
from trillion.model.indexer import Indexer, select_topk


def _case(seed, b, t, c, heads, d):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, heads, d, generator=g)
    w = torch.randn(b, t, heads, generator=g)
    keys = torch.randn(b, c, d, generator=g)
    ready = torch.randint(0, c + 1, (b, t, 1), generator=g)  # entries each query may see
    ready[0, 0, 0] = c  # one query sees everything
    return q, w, keys, ready


def _paged(values: torch.Tensor, seed: int):
    """values [B, C, w] scattered over a pool at random rows: -> (read, rows [B, C])."""
    b, c, w = values.shape
    rows = torch.randperm(b * c + 5, generator=torch.Generator().manual_seed(seed))[: b * c].view(b, c)
    pool = torch.full((b * c + 5, w), float("nan"))
    pool[rows.flatten()] = values.flatten(0, 1)
    return (lambda r: pool[r]), rows


def _reference_topk(q, w, keys, ready, k):
    ix = Indexer(mixed_config(index_n_heads=q.shape[2], index_head_dim=q.shape[3], index_topk=k), 4)
    scores = ix.scores(None, q, keys, w)  # [B, T, C]
    visible = torch.arange(keys.shape[1]) < ready
    return select_topk(scores, visible, k)


@pytest.mark.parametrize("heads", [1, 4], ids=["ties", "tie-free"])
@pytest.mark.parametrize("c,k,block", [(5, 8, None), (40, 8, None), (40, 8, 8), (40, 8, 13), (97, 16, 32),
                                       (97, 5, 7), (64, 16, 64)])
def test_running_topk_equals_select_topk(heads, c, k, block):
    for seed in range(3):
        q, w, keys, ready = _case(seed, 2, 11, c, heads, 8)
        want = _reference_topk(q, w, keys, ready, k)
        read, rows = _paged(keys, seed)
        got = indexer_topk(q, w, read, rows, ready, k, block)
        assert got.shape == want.shape
        assert torch.equal(got.sort(-1).values, want.sort(-1).values), (seed, c, k, block)


@pytest.mark.parametrize("dots", [1, 200, 1 << 18], ids=["query-by-query", "groups", "one-group"])
@pytest.mark.parametrize("heads", [1, 4], ids=["ties", "tie-free"])
@pytest.mark.parametrize("all_ready", [False, True], ids=["some-hidden", "all-visible"])
def test_running_topk_in_query_groups_equals_select_topk(monkeypatch, dots, heads, all_ready):
    """The scores made a few queries at a time (sparse.DOTS_ELEMENTS), with entries every query sees
    left unmasked and rows that no block can improve skipping its top-k: the same picks."""
    monkeypatch.setattr(sparse, "DOTS_ELEMENTS", dots)
    for seed in range(3):
        q, w, keys, ready = _case(seed, 2, 13, 90, heads, 8)
        if all_ready:
            ready.fill_(90)
        want = _reference_topk(q, w, keys, ready, 5)
        read, rows = _paged(keys, seed)
        for block in (None, 7, 32):
            got = indexer_topk(q, w, read, rows, ready, 5, block)
            assert torch.equal(got.sort(-1).values, want.sort(-1).values), (seed, block)


def test_one_head_gives_ties_the_reference_breaks_by_index():
    """With one index head and a negative weight every entry whose ReLU is off scores exactly 0
    (or -0.0): the picks among them must be the lowest indices, whatever the blocks."""
    q, w, keys, ready = _case(7, 1, 6, 50, 1, 4)
    w = -w.abs()  # every score <= 0: the best are the exact zeros
    want = _reference_topk(q, w, keys, ready, 6)
    zeros = (torch.einsum("bthd,bcd->bthc", q, keys) <= 0).sum()
    assert zeros > 50  # the case does hold ties
    for block in (None, 6, 7, 16):
        read, rows = _paged(keys, 1)
        got = indexer_topk(q, w, read, rows, ready, 6, block)
        assert torch.equal(got.sort(-1).values, want.sort(-1).values), block


def test_block_topk_settles_ties_by_index():
    s = torch.tensor([[0.0, 1.0, 0.0, 0.0, 2.0, 0.0], [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
                      [float("-inf")] * 4 + [1.0, 0.5]])
    _, idx = block_topk(s, 3)
    assert idx[0].sort().values.tolist() == [0, 1, 4]
    assert idx[1].sort().values.tolist() == [0, 1, 2]
    assert set(idx[2].tolist()) >= {4, 5}  # the third pick is invisible: the caller drops it


@pytest.mark.parametrize("c,block", [(0, None), (1, None), (30, None), (30, 1), (30, 7), (30, 30), (64, 16)])
def test_blockwise_hca_equals_attend_over_every_entry(c, block):
    g = torch.Generator().manual_seed(c)
    b, t, h, kd, wr = 2, 9, 3, 16, 5
    q = torch.randn(b, t, h, kd, generator=g)
    keys = torch.randn(b, wr + t, kd, generator=g)
    visible = torch.rand(b, t, wr + t, generator=g) < 0.5
    visible[:, torch.arange(t), wr + torch.arange(t)] = True  # each query sees itself
    entries = 3 * torch.randn(b, c, kd, generator=g)
    sink = torch.randn(h, generator=g)
    ready = torch.randint(0, c + 1, (b, t, 1), generator=g)
    read, rows = _paged(entries, c)
    got = attend_entries(q, keys, visible, sink, 0.25, read, rows, ready, block)
    want = attend(q, torch.cat((keys, entries), 1), torch.cat((visible, torch.arange(c) < ready), -1), sink, 0.25)
    assert (got - want).abs().max() <= 1e-5
