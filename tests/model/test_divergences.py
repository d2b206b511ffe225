"""Where transformers and DeepSeek's inference code disagree, we follow DeepSeek; both are tested.

See docs/architecture.md, "Where transformers and DeepSeek differ".
"""

import torch
import torch.nn.functional as F
from helpers import load_hf_reference, mixed_config, random_model, save_hf_reference

from trillion.config import ModelConfig
from trillion.formats import hadamard
from trillion.model import Transformer
from trillion.model.indexer import Indexer
from trillion.model.moe import Gate


def _logit_diff(model, tmp_path, t=45):
    ref = load_hf_reference(save_hf_reference(model, tmp_path))
    ids = torch.randint(0, model.cfg.vocab_size, (2, t), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return (model(ids) - ref(ids).logits).abs().max().item()


def test_sparse_layers_by_ratio_deepseek_rule(tmp_path):
    # DeepSeek: overlap + indexer iff ratio == 4, so ratio 8 is a heavily compressed layer.
    cfg = mixed_config(compress_ratios=(0, 4, 8, 4, 8, 0))
    model = random_model(cfg)
    hca = model.layers[2].attn
    assert hca.indexer is None and not hca.compressor.overlap and hca.compressor.ape.shape == (8, cfg.head_dim)
    assert cfg.to_hf_dict()["compress_rates"]["heavily_compressed_attention"] == 8
    assert _logit_diff(model, tmp_path / "ds") <= 1e-4


def test_sparse_layers_by_type_transformers_rule(tmp_path):
    # transformers: a CSA layer overlaps and indexes at whatever rate its config gives (here 8).
    cfg = mixed_config(compress_ratios=(0, 8, 16, 8, 16, 0), sparse_ratio=8)
    model = random_model(cfg)
    csa = model.layers[1].attn
    assert csa.indexer is not None and csa.compressor.overlap and csa.compressor.ape.shape == (8, 2 * cfg.head_dim)
    hf = cfg.to_hf_dict()
    assert hf["compress_rates"]["compressed_sparse_attention"] == 8
    assert ModelConfig.from_hf_dict(hf).sparse_ratio == 8  # a transformers config keeps its meaning
    assert _logit_diff(model, tmp_path / "hf") <= 1e-4


def _gate(cfg, seed=0):
    gate = Gate(cfg, hashed=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gate.weight.copy_(torch.randn(gate.weight.shape, generator=g) * 0.1)
        gate.bias.copy_(torch.randn(gate.bias.shape, generator=g) * 0.3)
    return gate


def test_softmax_scores_not_renormalised_deepseek_rule():
    cfg = mixed_config(score_func="softmax")
    gate = _gate(cfg)
    x = torch.randn(10, cfg.dim)
    weights, idx = gate(x)
    probs = (x @ gate.weight.T).softmax(-1)
    expect_idx = (probs + gate.bias).topk(cfg.n_activated_experts, dim=-1).indices
    assert torch.equal(idx, expect_idx)
    torch.testing.assert_close(weights, probs.gather(1, idx) * cfg.route_scale)
    assert (weights.sum(-1) < cfg.route_scale * 0.999).all()  # not renormalised


def test_softmax_scores_renormalised_transformers_rule():
    cfg = mixed_config(score_func="softmax", route_norm=True)
    gate = _gate(cfg)
    x = torch.randn(10, cfg.dim)
    weights, idx = gate(x)
    probs = (x @ gate.weight.T).softmax(-1).gather(1, idx)
    torch.testing.assert_close(weights, probs / probs.sum(-1, keepdim=True) * cfg.route_scale)


def test_bias_shifts_only_the_choice():
    cfg = mixed_config()
    gate = _gate(cfg)
    x = torch.randn(16, cfg.dim)
    weights, idx = gate(x)
    scores = F.softplus(x @ gate.weight.T).sqrt()
    assert torch.equal(idx, (scores + gate.bias).topk(cfg.n_activated_experts, -1).indices)
    chosen = scores.gather(1, idx)
    torch.testing.assert_close(weights, chosen / chosen.sum(-1, keepdim=True) * cfg.route_scale)


def test_router_runs_in_float32_for_bf16_models():
    # DeepSeek routes in fp32 (`linear(x.float(), weight.float())`); transformers uses the model dtype.
    cfg = mixed_config()
    gate = _gate(cfg)
    x = torch.randn(64, cfg.dim).to(torch.bfloat16)
    ours = gate.scores(x)
    fp32 = F.softplus(x.float() @ gate.weight.float().T).sqrt()
    in_bf16 = F.softplus((x @ gate.weight.to(torch.bfloat16).T).float()).sqrt()
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, fp32, rtol=0, atol=1e-6)
    assert (in_bf16 - fp32).abs().max() > 1e-3  # the transformers behaviour really differs


def test_indexer_hadamard_rotation_does_not_change_exact_scores():
    # DeepSeek rotates index q and k before FP4 rounding; transformers skips it. The rotation is
    # orthogonal, so without quantisation the scores agree: transformers is exact, not wrong.
    cfg = mixed_config(index_head_dim=16)
    ix = Indexer(cfg, 4)
    torch.nn.init.normal_(ix.weights_proj.weight)
    x = torch.randn(2, 9, cfg.dim)
    q = torch.randn(2, 9, cfg.index_n_heads, cfg.index_head_dim)
    k = torch.randn(2, 5, cfg.index_head_dim)
    plain = ix.scores(x, q, k)
    rotated = ix.scores(x, hadamard(q), hadamard(k))
    torch.testing.assert_close(rotated, plain, rtol=1e-5, atol=1e-5)


def test_fake_quant_rounds_kv_and_index_qk():
    cfg = mixed_config(head_dim=128, rope_head_dim=64, index_head_dim=64)
    exact = random_model(cfg)
    quant = Transformer(cfg.replace(fake_quant=True))
    quant.load_state_dict(exact.state_dict())
    quant.eval()
    attn = quant.layers[1].attn
    x = torch.randn(1, 12, cfg.dim)
    positions = torch.arange(12)
    cos, sin = attn.rope(positions)
    kv = attn.keys(x, cos, sin)
    nope = kv[..., : cfg.nope_head_dim].unflatten(-1, (-1, 64))  # FP8 blocks of 64, UE8M0 scales
    scale = torch.exp2(torch.ceil(torch.log2(nope.abs().amax(-1, keepdim=True).clamp_min(1e-4) / 448)))
    grid = nope / scale
    torch.testing.assert_close(grid, grid.to(torch.float8_e4m3fn).float(), rtol=0, atol=0)
    exact_kv = exact.layers[1].attn.keys(x, cos, sin)
    torch.testing.assert_close(kv[..., -64:], exact_kv[..., -64:], rtol=0, atol=0)  # rope dims exact
    assert (kv - exact_kv).abs().max() > 0

    q = attn.indexer.queries(attn.queries(x, cos, sin)[1], cos, sin)
    blocks = q.unflatten(-1, (-1, 32))  # FP4 blocks of 32 after the Hadamard rotation
    s = torch.exp2(torch.ceil(torch.log2(blocks.abs().amax(-1, keepdim=True).clamp_min(6 * 2**-126) / 6)))
    e2m1 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    mags = (blocks / s).abs().unsqueeze(-1)
    assert ((mags - e2m1).abs().amin(-1) == 0).all()

    ids = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        a, b = exact(ids), quant(ids)
    assert 0 < (a - b).abs().max() < 0.5 * a.abs().max()
