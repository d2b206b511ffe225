"""Component checks against brute-force references and analytic facts."""

import time

import pytest
import torch
from helpers import mixed_config, random_model

from trillion.flavors import FLAVORS
from trillion.model import Transformer
from trillion.model.indexer import select_topk
from trillion.model.mhc import sinkhorn
from trillion.model.moe import MoE
from trillion.model.rope import apply_rope, rope_cos_sin, rope_inv_freq


def test_grouped_experts_equal_the_per_token_reference():
    cfg = mixed_config(n_routed_experts=8, n_activated_experts=3)
    model = random_model(cfg)
    moe: MoE = model.layers[3].ffn
    x = torch.randn(2, 23, cfg.dim)
    with torch.no_grad():
        fast = moe(x)
        slow = moe(x, reference=True)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)


def test_hash_layers_route_by_token_id():
    cfg = mixed_config()
    model = random_model(cfg)
    gate = model.layers[0].ffn.gate
    ids = torch.tensor([3, 3, 50])
    x = torch.randn(3, cfg.dim)
    _, idx = gate(x, ids)
    assert torch.equal(idx, gate.tid2eid[ids])
    assert model.layers[cfg.n_hash_layers].ffn.gate.hashed is False
    assert all(not b.ffn.gate.hashed for b in model.mtp)


def test_sinkhorn_is_doubly_stochastic():
    logits = torch.randn(5, 4, 4) * 3
    comb = sinkhorn(logits, iters=20, eps=1e-6)
    torch.testing.assert_close(comb.sum(-2), torch.ones(5, 4), atol=1e-5, rtol=0)  # ends on columns
    assert (comb > 0).all()
    # rows converge as the iterations grow
    row_err = [(sinkhorn(logits, iters=n, eps=1e-6).sum(-1) - 1).abs().max() for n in (2, 20, 300)]
    assert row_err[0] > row_err[1] > row_err[2] and row_err[2] < 1e-4


def test_rope_is_a_rotation_and_inverse_undoes_it():
    inv = rope_inv_freq(8, 10000.0)
    cos, sin = rope_cos_sin(torch.arange(6), inv)
    x = torch.randn(2, 6, 12)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y[..., :4], x[..., :4])  # non-rope channels untouched
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(apply_rope(y, cos, sin, inverse=True), x, atol=1e-6, rtol=0)
    # interleaved pairs: channel 4 and 5 rotate together by position * inv[0]
    a = 3 * inv[0]
    c, s = torch.cos(a), torch.sin(a)
    torch.testing.assert_close(y[0, 3, 4], x[0, 3, 4] * c - x[0, 3, 5] * s)


def test_yarn_interpolates_only_slow_frequencies():
    plain = rope_inv_freq(64, 160000.0)
    yarn = rope_inv_freq(64, 160000.0, factor=16, original_seq_len=65536, beta_fast=32, beta_slow=1)
    torch.testing.assert_close(yarn[0], plain[0])  # fastest pair rotates > beta_fast times: kept
    torch.testing.assert_close(yarn[-1], plain[-1] / 16)  # slowest pair: interpolated by the factor


def _brute_topk(scores, visible, k):
    out = []
    for row, vis in zip(scores.tolist(), visible.tolist()):
        cand = sorted((-s, i) for i, (s, v) in enumerate(zip(row, vis)) if v)
        picked = [i for _, i in cand[:k]]
        out.append(picked + [-1] * (min(k, len(row)) - len(picked)))
    return torch.tensor(out)


def test_indexer_ties_pick_lower_index_first():
    # ReLU scores with one index head: many exact zeros. Rows of different visible lengths must
    # rank the shared entries identically.
    scores = torch.tensor([[0.0, 0.0, 2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0, 0.0, 1.0]])
    visible = torch.tensor([[True, True, True, True, False, False], [True] * 6])
    got = select_topk(scores[None], visible[None], 3)[0]
    assert got.tolist() == [[2, 0, 1], [2, 5, 0]]
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 3, (40, 17), generator=g).float()
    v = torch.rand(40, 17, generator=g) < 0.6
    assert torch.equal(select_topk(s[None], v[None], 5)[0], _brute_topk(s, v, 5))


@pytest.mark.parametrize("name", sorted(FLAVORS))
def test_every_flavor_builds_on_meta_quickly(name):
    start = time.perf_counter()
    with torch.device("meta"):
        model = Transformer(FLAVORS[name])
    assert all(p.is_meta for p in model.parameters())
    assert time.perf_counter() - start < 60  # "in seconds": a generous bound for a 2-core CI machine


def test_sinkhorn_host_loop_equals_the_torch_loop():
    """Small inputs with no graph to record run the iterations in NumPy; the torch loop (taken for
    autograd, and for large inputs) is the reference. Same float32 operations: equal to the last bit
    on the machines we test, and asserted to a float32 ulp."""
    from trillion.model import mhc

    g = torch.Generator().manual_seed(0)
    for shape in [(1, 1, 4, 4), (8, 1, 4, 4), (2, 3, 4, 4), (1, 1, 2, 2)]:
        logits = torch.randn(shape, generator=g) * 3
        assert mhc._host_loop(logits.softmax(-1))
        host = sinkhorn(logits, iters=20, eps=1e-6)
        graph = sinkhorn(logits.clone().requires_grad_(), iters=20, eps=1e-6).detach()
        torch.testing.assert_close(host, graph, rtol=1.2e-7, atol=0)
    big = torch.randn(1, mhc.HOST_SINKHORN_MAX // 16 + 1, 4, 4)
    assert not mhc._host_loop(big)
