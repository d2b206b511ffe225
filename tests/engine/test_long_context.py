"""Long context through the engine equals the model's full forward (the independent reference).

16K tokens (the longest the mask-based full forward takes here in reasonable memory: its indexer
builds [T, H, C] scores) prefilled in chunks whose entries are read in small blocks (many block
boundaries per chunk), then decoded token by token: every layer type (window, CSA, HCA), with the
state as the model's dtype and as the release's FP8 / FP4 (against the fake-quant model).
"""

import pytest
import torch
from helpers import mixed_config, random_model

from trillion.engine.llm import LLM
from trillion.engine.runner import ModelRunner
from trillion.engine.sampling import SamplingParams
from trillion.engine.state import StatePool
from trillion.model.dtypes import cast_model

N = 16384  # prompt tokens
DECODE = 6


def _config(**kw):
    # ratios 4 (CSA, 2 index heads, top-8) and 16 (HCA): 4,096 and 1,024 entries at 16K
    return mixed_config(window_size=32, index_n_heads=2, index_topk=8, max_seq_len=1 << 15, original_seq_len=1024,
                        rope_factor=32.0, **kw)


def _run(model, ids, n, kv_dtype, chunk, block_elements):
    """Prefill ids[:, :n] in chunks, then decode the rest one token at a time -> logits [1, T, V]."""
    pool = StatePool(model.cfg, max_seqs=1, page_size=16, max_entries={4: ids.shape[1] // 4, 16: ids.shape[1] // 16},
                     dtype=model.dtype, kv_dtype=kv_dtype)
    run = ModelRunner(model, pool, block_elements=block_elements)
    seq = pool.allocate()
    out = [run.forward(ids[:, s : min(n, s + chunk)], [seq])[0] for s in range(0, n, chunk)]
    out += [run.forward(ids[:, t : t + 1], [seq])[0] for t in range(n, ids.shape[1])]
    return torch.cat(out, dim=1)


@pytest.mark.slow
def test_decode_after_a_16k_chunked_prefill_equals_the_full_forward():
    model = random_model(_config(), seed=5)
    ids = torch.randint(0, model.cfg.vocab_size, (1, N + DECODE), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(ids)
    got = _run(model, ids, N, "auto", chunk=4096, block_elements=1 << 17)  # CSA blocks of 32 entries, HCA of 8
    assert (got[:, N - 64 :] - full[:, N - 64 :]).abs().max() <= 2e-4
    assert (got[:, ::97] - full[:, ::97]).abs().max() <= 2e-4


def _fake_quant_model(seed):
    # head_dim - rope = 64: whole FP8 blocks, as the fake-quant model needs; index head dim 32: one FP4 block
    return cast_model(random_model(_config(head_dim=72, index_head_dim=32, fake_quant=True), seed=seed), torch.bfloat16)


@pytest.mark.parametrize("n", [pytest.param(N, marks=pytest.mark.slow), 150])
def test_the_fp8_state_of_a_bf16_fake_quant_model_loses_nothing(n):
    """The FP8 / FP4 pool stores a bf16 fake-quant model's vectors exactly (its rope dims are bf16,
    as the release stores them): every logit equals the same engine's with the state kept in bf16,
    bit for bit, so the greedy tokens are the same. (That engine follows the full forward: the
    other tests, in float32; in bf16 the two differ by rounding, which the fake quantisation's
    FP4 / FP8 grids and the top-k can amplify, so no tolerance would be honest.) (A float32 fake-quant model's rope dims are float32: the FP8 pool
    rounds them, which can flip later FP4 roundings and top-k picks; docs/long-context.md.)"""
    model = _fake_quant_model(6)
    ids = torch.randint(0, model.cfg.vocab_size, (1, n + DECODE), generator=torch.Generator().manual_seed(6))
    fp8 = _run(model, ids, n, "fp8", chunk=4096 if n > 4096 else 64, block_elements=1 << 17)
    bf16 = _run(model, ids, n, "auto", chunk=4096 if n > 4096 else 64, block_elements=1 << 17)
    assert torch.equal(fp8, bf16)


def test_kv_dtype_fp8_generates_through_the_engine():
    model = _fake_quant_model(7)
    prompt = torch.randint(0, model.cfg.vocab_size, (100,), generator=torch.Generator().manual_seed(7)).tolist()
    greedy = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True)
    outs = [LLM(model, max_seqs=1, prefill_chunk=32, page_size=8, kv_dtype=kv).generate([prompt], greedy)[0]
            for kv in ("fp8", "auto")]
    assert outs[0].token_ids == outs[1].token_ids and len(outs[0].token_ids) == 8
