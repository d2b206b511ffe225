"""The engine's eager expert strategy against the model's MoE: same bits, with and without its sort."""

import torch
from helpers import mixed_config, random_model

from trillion.engine.experts import Grouped, routed_token


def test_one_token_equals_the_grouped_path_bit_for_bit():
    cfg = mixed_config(n_routed_experts=8, n_activated_experts=3)
    moe = random_model(cfg).layers[3].ffn
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(20):
            x = torch.randn(1, cfg.dim, generator=g)
            weights = torch.rand(1, 3, generator=g)
            indices = torch.randperm(8, generator=g)[:3].view(1, 3)  # unsorted, as the router returns them
            assert torch.equal(routed_token(moe, x, weights, indices), moe.routed(x, weights, indices))
            assert torch.equal(Grouped()(3, moe, x, weights, indices), moe.routed(x, weights, indices))
        # a repeated expert (no router gives one; routed runs it once on two rows, so only close)
        x, weights = torch.randn(1, cfg.dim, generator=g), torch.rand(1, 3, generator=g)
        indices = torch.tensor([[5, 2, 5]])
        torch.testing.assert_close(routed_token(moe, x, weights, indices),
                                   moe.routed_reference(x, weights, indices), rtol=1e-5, atol=1e-6)


def test_batches_use_the_models_grouped_path():
    cfg = mixed_config(n_routed_experts=8, n_activated_experts=3)
    moe = random_model(cfg).layers[3].ffn
    x = torch.randn(5, cfg.dim)
    with torch.no_grad():
        weights, indices = moe.gate(x)
        assert torch.equal(Grouped()(3, moe, x, weights, indices), moe.routed(x, weights, indices))


def test_a_moe_subclass_keeps_its_own_routed_path():
    """Expert parallelism replaces `MoE.routed` (its experts are split over ranks): one token must
    go through it too, not index the local experts by global id."""
    from trillion.model.moe import MoE

    class Remote(MoE):
        def routed(self, x, weights, indices):
            return torch.full(x.shape, 7.0)

    cfg = mixed_config(n_routed_experts=8, n_activated_experts=3)
    moe = random_model(cfg).layers[3].ffn
    moe.__class__ = Remote
    x = torch.randn(1, cfg.dim)
    out = Grouped()(3, moe, x, torch.rand(1, 3), torch.tensor([[0, 1, 2]]))
    assert torch.equal(out, torch.full((1, cfg.dim), 7.0))
