"""Aux-loss-free balancing, the sequence-wise balance loss and the hash tables."""

import torch

from trillion.model.init import init_weights
from trillion.model.transformer import Transformer
from trillion.train import balance

from .conftest import micro_config


def test_bias_update_makes_a_skewed_load_uniform():
    cfg = micro_config(n_routed_experts=8, n_hash_layers=0, dim=32)
    model = init_weights(Transformer(cfg), seed=0).eval()
    gate = model.layers[1].ffn.gate
    with torch.no_grad():  # skew: for positive inputs, experts 0 and 1 outscore the rest on every token
        gate.weight[:2] = 0.3
    g = torch.Generator().manual_seed(1)
    ratios, recent = [], torch.zeros(8)
    with balance.recording(model):
        for step in range(300):  # like training: a fresh batch each step, then the bias update
            gate(torch.randn(512, cfg.dim, generator=g).abs())
            counts = balance.expert_counts(gate)
            ratios.append(balance.imbalance(counts))
            balance.update_bias(gate, counts, gamma=1e-2)
            if step >= 250:
                recent += counts
    assert ratios[0] == 4.0  # 8 experts, top-2: every token on experts 0 and 1
    # Sign steps keep the per-step load oscillating around uniform; over steps it evens out.
    assert balance.imbalance(recent) < 1.15, balance.imbalance(recent)
    assert sum(ratios[-50:]) / 50 < 2.0
    assert gate.bias[:2].max() < gate.bias[2:].min()  # the favoured experts were pushed down
    # The bias only shifts the choice: the routing weights still come from the raw scores.
    x = torch.randn(16, cfg.dim, generator=g)
    weights, idx = gate(x)
    scores = gate.scores(x).gather(1, idx)
    torch.testing.assert_close(weights, scores / scores.sum(-1, keepdim=True) * cfg.route_scale)


def test_sequence_balance_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    b, t, e, k = 2, 5, 4, 2
    scores = torch.rand(b * t, e, generator=g)
    idx = (scores).topk(k, -1).indices
    got = balance.sequence_balance_loss(scores, idx, b, k)
    want = torch.tensor(0.0)
    for s in range(b):
        sc, ix = scores[s * t : (s + 1) * t], idx[s * t : (s + 1) * t]
        for i in range(e):
            f = e / (k * t) * sum(int(i in row.tolist()) for row in ix)
            p = (sc[:, i] / sc.sum(-1)).mean()
            want += f * p / b
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # Uniform routing gives the minimum 1 per layer.
    uniform = torch.ones(4, 4)
    idx = torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]])
    torch.testing.assert_close(balance.sequence_balance_loss(uniform, idx, 1, 2), torch.tensor(1.0))


def test_hash_table_balances_token_frequencies_and_uses_every_pair():
    g = torch.Generator().manual_seed(0)
    ids = (torch.rand(20000, generator=g) ** 3 * 300).long()  # a skewed (Zipf-like) id stream
    counts = torch.bincount(ids, minlength=300)
    table = balance.hash_table(counts, 8, 2)
    assert table.shape == (300, 2) and (table[:, 0] != table[:, 1]).all()
    load = sum(torch.bincount(table[ids, j], minlength=8) for j in range(2)).float()
    assert balance.imbalance(load) < 1.05
    pairs = {tuple(sorted(r)) for r in table.tolist()}
    assert len(pairs) == 28  # every combination of 2 of 8 experts occurs
    assert torch.equal(balance.hash_table(counts, 8, 2), table)  # deterministic
    assert torch.equal(balance.hash_table(counts, 8, 2, shift=1), (table + 1) % 8)
