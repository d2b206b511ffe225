"""Scoring a prompt in the engine: prompt log-probabilities computed during the chunked prefill
equal the model's full forward log_softmax, and max_new_tokens = 0 generates nothing."""

import pytest
import torch
from helpers import mixed_config, random_model

from trillion.engine.engine import Engine
from trillion.engine.llm import LLM
from trillion.engine.sampling import SamplingParams

CFG = mixed_config(vocab_size=300)
PROMPT = [(11 * k + 5) % 290 + 3 for k in range(50)]  # 50 tokens: four prefill chunks of 16, the last short


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, seed=3)


@pytest.fixture(scope="module")
def reference(model):
    """log p(token t | tokens < t) from one full forward pass: the independent reference."""
    with torch.no_grad():
        return model(torch.tensor([PROMPT]))[0].float().log_softmax(-1)  # [T, V]


def _run(eng: Engine, seqs) -> None:
    while eng.has_work():
        eng.step()
    assert all(s.finish_reason is not None for s in seqs)


@pytest.mark.parametrize("top", [0, 3])
def test_prompt_logprobs_across_prefill_chunks_equal_the_full_forward(model, reference, top):
    eng = Engine(model, max_seqs=4, prefill_chunk=16, page_size=4)
    seqs = eng.add_request(PROMPT, SamplingParams(n=2, temperature=1.0, seed=1, max_new_tokens=2,
                                                  prompt_logprobs=top, ignore_eos=True))
    _run(eng, seqs)
    for s in seqs:  # both samples share the prefill, and its scores
        lps = s.prompt_logprobs
        assert len(lps) == len(PROMPT) and lps[0] is None
        for t in range(1, len(PROMPT)):
            ref = reference[t - 1]
            lp = lps[t]
            assert lp["token"] == PROMPT[t]
            assert lp["logprob"] == pytest.approx(float(ref[PROMPT[t]]), abs=1e-4)
            assert lp["rank"] == int((ref > ref[PROMPT[t]]).sum()) + 1
            if top:
                assert [i for i, _ in lp["top"]] == ref.topk(top).indices.tolist()
                assert [v for _, v in lp["top"]] == pytest.approx(ref.topk(top).values.tolist(), abs=1e-4)
            else:
                assert lp["top"] == []
        assert len(s.output_ids) == 2
    assert eng.pool.slots_in_use() == 0 and eng.pool.pages_in_use() == 0


def test_prompt_logprobs_in_a_batch_beside_a_plain_request(model, reference):
    """Both prompts' first 16 tokens run as one batch (a budget of 32), full logits for both; only
    the scoring sequence keeps scores, and the other's output is what it is alone."""
    other = PROMPT[10:26]
    alone = LLM(model, max_seqs=4, page_size=4).generate(
        [other], SamplingParams(temperature=0, max_new_tokens=5, ignore_eos=True))[0].token_ids
    eng = Engine(model, max_seqs=4, prefill_chunk=32, page_size=4)
    plain = eng.add_request(other, SamplingParams(temperature=0, max_new_tokens=5, ignore_eos=True))
    scored = eng.add_request(PROMPT, SamplingParams(max_new_tokens=0, prompt_logprobs=1))
    _run(eng, plain + scored)
    assert plain[0].output_ids == alone and plain[0].prompt_logprobs == []
    got = [lp["logprob"] for lp in scored[0].prompt_logprobs[1:]]
    want = [float(reference[t - 1, PROMPT[t]]) for t in range(1, len(PROMPT))]
    assert got == pytest.approx(want, abs=1e-4)


def test_zero_new_tokens_generates_nothing(model):
    llm = LLM(model, max_seqs=4, prefill_chunk=16, page_size=4)
    out = llm.generate([PROMPT], SamplingParams(n=3, max_new_tokens=0, temperature=1.0, seed=2))[0]
    assert [c.token_ids for c in out.outputs] == [[], [], []]
    assert [c.finish_reason for c in out.outputs] == ["length"] * 3
    assert list(llm.stream(PROMPT, SamplingParams(max_new_tokens=0))) == []
    eng = llm.engine
    assert not eng.has_work() and eng.pool.slots_in_use() == 0 and eng.pool.pages_in_use() == 0
    assert all(v == 0 for v in eng.reserved.values())


def test_llm_outputs_carry_the_prompt_logprobs(model, reference):
    out = LLM(model, max_seqs=4, prefill_chunk=16, page_size=4).generate(
        [PROMPT], SamplingParams(max_new_tokens=0, prompt_logprobs=0))[0]
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(PROMPT)
    got = [lp["logprob"] for lp in out.prompt_logprobs[1:]]
    assert got == pytest.approx([float(reference[t - 1, PROMPT[t]]) for t in range(1, len(PROMPT))], abs=1e-4)
