"""Logit parity with transformers' DeepseekV4ForCausalLM on the same random weights (float32).

The configs mix window-only, CSA and HCA layers and hash layers; every parameter (sinks, biases,
ape, mHC, norms) is random and non-zero; sequences span several windows and many compression
blocks, with lengths that are not multiples of the ratios; batch > 1. >= 16 index heads keep the
indexer free of score ties (tests/model/test_components.py::test_indexer_ties_pick_lower_index_first
and tests/engine/test_incremental.py cover ties).
"""

import pytest
import torch
from helpers import load_hf_reference, mixed_config, random_model, save_hf_reference

from trillion.config import ModelConfig
from trillion.model import attention

TOL = 1e-4


def _compare(cfg, tmp_path, lengths=(45,), batch=2, seed=0):
    model = random_model(cfg, seed=seed)
    ref = load_hf_reference(save_hf_reference(model, tmp_path / "ref"))
    g = torch.Generator().manual_seed(seed + 7)
    worst = 0.0
    for t in lengths:
        ids = torch.randint(0, cfg.vocab_size, (batch, t), generator=g)
        with torch.no_grad():
            ours = model(ids)
            theirs = ref(ids).logits.float()
        assert ours.dtype == torch.float32 and ours.shape == (batch, t, cfg.vocab_size)
        worst = max(worst, (ours - theirs).abs().max().item())
    return worst


@pytest.mark.parametrize("seed", [0, 1])
def test_mixed_layers_match_transformers(tmp_path, seed):
    diff = _compare(mixed_config(), tmp_path, lengths=(45, 37, 64), seed=seed)
    assert diff <= TOL, diff


def test_long_sequence_many_blocks(tmp_path):
    # 150 tokens: 18 windows of 8, 37 CSA blocks (index_topk 3 of them), 9 HCA blocks.
    diff = _compare(mixed_config(), tmp_path, lengths=(150,), batch=3)
    assert diff <= TOL, diff


def test_sigmoid_scoring_and_no_yarn(tmp_path):
    cfg = mixed_config(score_func="sigmoid", original_seq_len=0, hc_mult=2, n_hash_layers=1)
    assert _compare(cfg, tmp_path, lengths=(41,)) <= TOL


def test_hca_only_and_window_only_stacks(tmp_path):
    cfg = mixed_config(n_layers=3, compress_ratios=(16, 16, 0, 0), n_hash_layers=0)
    assert _compare(cfg, tmp_path, lengths=(50,)) <= TOL


def test_query_chunking_is_exact(monkeypatch):
    cfg = mixed_config()
    model = random_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 61))
    with torch.no_grad():
        whole = model(ids)
        monkeypatch.setattr(attention, "QUERY_CHUNK", 7)
        chunked = model(ids)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_hidden_streams_are_returned():
    cfg = mixed_config()
    model = random_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        logits, hidden = model(ids, return_hidden=True)
        again = model.logits(hidden)
    assert hidden.shape == (2, 12, cfg.hc_mult, cfg.dim)
    torch.testing.assert_close(again, logits, rtol=0, atol=0)


def test_config_round_trips_through_transformers_config():
    from transformers import DeepseekV4Config

    cfg = mixed_config()
    hf = DeepseekV4Config(**cfg.to_hf_dict())
    back = ModelConfig.from_hf_dict(hf.to_dict())
    assert back.replace(name="") == cfg.replace(name="")
    assert hf.layer_types == [
        "sliding_attention",
        "compressed_sparse_attention",
        "heavily_compressed_attention",
        "compressed_sparse_attention",
        "heavily_compressed_attention",
    ]
