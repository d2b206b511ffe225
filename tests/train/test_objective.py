"""The loss of a batch: MTP trains the MTP block, activation checkpointing changes nothing, the
indexer learns from its KL loss alone, and the optimiser split follows DeepSeek's."""

import itertools

import torch

from trillion.model.init import init_weights
from trillion.model.transformer import Transformer
from trillion.train import TrainConfig, objective, optim

from .conftest import micro_config


def _model(seed=0, **overrides):
    return init_weights(Transformer(micro_config(**overrides)), seed=seed).train()


def _toy_batch(cfg, b=8, t=24, seed=0):
    """A fixed random cycle of 7 distinct tokens, each row starting at a random phase: token t + 2
    is a function of token t + 1, so the MTP block can learn it exactly."""
    g = torch.Generator().manual_seed(seed)
    cycle = torch.randperm(cfg.vocab_size - 2, generator=g)[:7] + 2
    starts = torch.randint(0, 7, (b, 1), generator=g)
    return cycle[(starts + torch.arange(t + 1)) % 7]


def _train_mtp_acc(mtp_weight, steps=8):
    model = _model()
    cfg = TrainConfig(
        lr=1e-2, warmup=0, steps=steps, mtp_weight=mtp_weight, balance_alpha=0.0, indexer_weight=0.0
    )
    opts = optim.build_optimizers(model, cfg)
    batch = _toy_batch(model.cfg)
    with torch.no_grad():
        before = objective.compute(model, batch, cfg.replace(mtp_weight=1.0)).parts["mtp_acc"]
    for step in range(steps):
        optim.set_lr(opts, step, cfg)
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        objective.compute(model, batch, cfg).loss.backward()
        for o in opts.values():
            o.step()
    with torch.no_grad():
        after = objective.compute(model, batch, cfg.replace(mtp_weight=1.0)).parts["mtp_acc"]
    return before, after


def test_mtp_loss_trains_the_mtp_block():
    before, after = _train_mtp_acc(0.3)
    assert before < 0.3 and after > 0.9, (before, after)
    # Without the MTP loss the main loss alone leaves the MTP block where it was.
    _, untrained = _train_mtp_acc(0.0)
    assert untrained < 0.5, untrained


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    cfg = TrainConfig(indexer_weight=1.0)
    batch = _toy_batch(micro_config(), b=2, t=20)
    grads = []
    for ckpt in (False, True):
        model = _model(seed=1)
        if ckpt:
            objective.enable_activation_checkpointing(model)
        res = objective.compute(model, batch, cfg)
        res.loss.backward()
        grads.append(
            (res.parts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (p0, g0), (p1, g1) = grads
    assert p0 == p1
    assert g0.keys() == g1.keys()
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=0, atol=1e-6, msg=n)


def test_indexer_learns_only_from_its_kl_loss():
    model = _model(seed=2)
    batch = _toy_batch(model.cfg, b=2, t=32)
    res = objective.compute(model, batch, TrainConfig(indexer_weight=0.0))
    res.loss.backward()
    indexer = model.layers[1].attn.indexer
    assert all(p.grad is None for p in indexer.parameters())
    model.zero_grad(set_to_none=True)
    res = objective.compute(model, batch, TrainConfig(indexer_weight=1.0, mtp_weight=0.0, balance_alpha=0.0))
    res.loss.backward()
    assert res.parts["indexer_kl"] > 0
    assert all(p.grad is not None for p in indexer.parameters())
    # The main model's gradient is the same with or without the indexer loss (inputs detached).
    ref = _model(seed=2)
    objective.compute(
        ref, batch, TrainConfig(indexer_weight=0.0, mtp_weight=0.0, balance_alpha=0.0)
    ).loss.backward()
    torch.testing.assert_close(model.layers[1].attn.wq_a.weight.grad, ref.layers[1].attn.wq_a.weight.grad)


def test_optimizer_split_follows_deepseek():
    model = _model()
    kinds = {n: optim.param_kind(n, p) for n, p in model.named_parameters()}
    assert kinds["layers.1.ffn.gate.bias"] is None  # balancing bias: outside the gradient
    assert kinds["embed.weight"] == kinds["head.weight"] == kinds["hc_head_fn"] == "adamw"
    assert kinds["mtp.0.hc_head_fn"] == "adamw"
    assert kinds["layers.0.attn_norm.weight"] == kinds["layers.0.hc_attn_base"] == "adamw_nodecay"
    assert kinds["layers.1.attn.compressor.ape"] == "adamw"
    for name in (
        "layers.0.attn.wq_a.weight",
        "layers.0.ffn.experts.0.w1.weight",
        "layers.0.hc_attn_fn",
        "layers.1.ffn.gate.weight",
        "layers.1.attn.indexer.wq_b.weight",
        "mtp.0.e_proj.weight",
    ):
        assert kinds[name] == "muon", name
    opts = optim.build_optimizers(model, TrainConfig())
    assert isinstance(opts["muon"], torch.optim.Muon) and isinstance(opts["adamw"], torch.optim.AdamW)
    n_opt = sum(len(o.param_names) for o in opts.values())
    assert n_opt == sum(k is not None for k in kinds.values())


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    f = [optim.lr_factor(s, cfg) for s in range(100)]
    assert f[0] == 0.1 and f[9] == 1.0 and f[10] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert abs(optim.lr_factor(100, cfg) - 0.1) < 1e-12
