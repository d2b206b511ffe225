"""The engine and the Python API: greedy equals the model's argmax, MTP speculation changes
nothing in greedy output, seeds reproduce, stops stop, state returns to the pool."""

import pytest
import torch
from helpers import mixed_config, random_model
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from trillion.engine.engine import Engine
from trillion.engine.llm import LLM
from trillion.engine.sampling import SamplingParams
from trillion.tokenizer import Tokenizer

CFG = mixed_config(vocab_size=300)


@pytest.fixture(scope="module")
def model():
    return random_model(CFG, seed=3)


def reference_greedy(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


PROMPTS = [[5, 6, 7, 8, 9, 10, 11], list(range(20, 43)), [3]]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def references(model):
    return [reference_greedy(model, p, 24) for p in PROMPTS]


def test_greedy_generate_equals_the_full_forward_argmax(model, references):
    llm = LLM(model, max_seqs=4, prefill_chunk=5, page_size=4)
    outs = llm.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in outs] == references
    assert all(o.finish_reason == "length" for o in outs)
    assert llm.engine.pool.pages_in_use() == 0 and llm.engine.pool.slots_in_use() == 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_mtp_speculation_keeps_greedy_output(model, references, k):
    llm = LLM(model, max_seqs=4, prefill_chunk=5, page_size=4, speculative="mtp", num_draft_tokens=k)
    outs = llm.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in outs] == references
    assert outs[0].stats["draft_tokens"] > 0 and 0 <= outs[0].stats["acceptance_rate"] <= 1


class OracleEngine(Engine):
    """Drafts the true greedy continuation, wrong at every `wrong`-th draft: exercises full and
    partial acceptance and the rollback of both stacks."""

    def __init__(self, *a, oracle, wrong, **kw):
        super().__init__(*a, **kw)
        self.oracle, self.wrong, self.n = oracle, wrong, 0

    def _draft(self, seqs):
        drafts, dists = super()._draft(seqs)
        for b, s in enumerate(seqs):
            truth = self.oracle[tuple(s.prompt_ids)]
            for i in range(self.k):
                pos = len(s.output_ids) + i
                self.n += 1
                tok = truth[pos] if pos < len(truth) else 0
                if self.wrong and self.n % self.wrong == 0:
                    tok = (tok + 1) % self.cfg.vocab_size
                drafts[b, i] = tok
                dists[b][i] = torch.nn.functional.one_hot(torch.tensor(tok), self.cfg.vocab_size).float()
        return drafts, dists


@pytest.mark.parametrize("k,wrong", [(1, 0), (3, 0), (2, 3), (3, 4), (4, 2)])
def test_speculative_accept_reject_and_rollback_keep_greedy_output(model, references, k, wrong):
    oracle = {tuple(p): r for p, r in zip(PROMPTS, references)}
    eng = OracleEngine(model, max_seqs=4, prefill_chunk=5, page_size=4, speculative="mtp",
                       num_draft_tokens=k, oracle=oracle, wrong=wrong)
    llm = LLM(model)
    llm.engine = eng
    outs = llm.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in outs] == references
    rate = outs[1].stats["acceptance_rate"]
    if wrong == 0:
        assert rate == 1.0
    else:
        assert 0 < rate < 1
    assert eng.pool.pages_in_use() == 0 and all(v == 0 for v in eng.reserved.values())


def test_seeded_sampling_is_reproducible_and_batch_independent(model):
    llm = LLM(model, max_seqs=4)
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=123, max_new_tokens=12, ignore_eos=True)
    alone = llm.generate([PROMPTS[0]], params)[0].token_ids
    batched = llm.generate([PROMPTS[1], PROMPTS[0], PROMPTS[2]], [GREEDY, params, GREEDY])[1].token_ids
    assert alone == batched
    other = llm.generate([PROMPTS[0]], SamplingParams(temperature=0.9, seed=124, max_new_tokens=12,
                                                       ignore_eos=True))[0].token_ids
    assert other != alone


def test_n_samples_logprobs_and_stop_ids(model):
    llm = LLM(model, max_seqs=4)
    out = llm.generate([PROMPTS[1]], SamplingParams(n=3, temperature=1.0, seed=5, max_new_tokens=8,
                                                    logprobs=3, ignore_eos=True))[0]
    assert len(out.outputs) == 3 and len({tuple(c.token_ids) for c in out.outputs}) > 1
    comp = out.outputs[2]
    with torch.no_grad():
        logits = model(torch.tensor([PROMPTS[1] + comp.token_ids]))[0]
    for i, (tok, lp) in enumerate(zip(comp.token_ids, comp.logprobs)):
        ref = logits[len(PROMPTS[1]) - 1 + i].log_softmax(-1)
        assert lp["token"] == tok and abs(lp["logprob"] - float(ref[tok])) < 1e-4
        assert [t for t, _ in lp["top"]] == ref.topk(3).indices.tolist()
    ref = reference_greedy(model, PROMPTS[0], 24)
    stop_at = ref[5]
    got = llm.generate([PROMPTS[0]], SamplingParams(temperature=0, max_new_tokens=24, stop_token_ids=[stop_at],
                                                    ignore_eos=True))[0]
    assert got.token_ids == ref[: ref.index(stop_at) + 1] and got.finish_reason == "stop"


def _byte_tokenizer():
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=290, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"])
    tok.train_from_iterator(["def add(a, b):\n    return a + b\n", "héllo wörld ✓ 日本"] * 20, trainer)
    return Tokenizer(tok)


def test_text_prompts_stop_strings_and_streaming(model):
    tok = _byte_tokenizer()
    llm = LLM(model, tokenizer=tok, max_seqs=2)
    full = llm.generate("def add", SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True))[0]
    assert full.text == tok.decode(full.token_ids)
    assert len(full.text) > 3
    stop = full.text[2:4]
    cut = llm.generate("def add", SamplingParams(temperature=0, max_new_tokens=20, stop=[stop], ignore_eos=True))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]
    streamed = list(llm.stream("def add", SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True)))
    assert [c.token_id for c in streamed] == full.token_ids
    assert "".join(c.text for c in streamed) == full.text
    assert streamed[-1].finish_reason == "length"


def test_abort_and_limits(model):
    eng = Engine(model, max_seqs=2, max_model_len=64, page_size=4)
    with pytest.raises(ValueError, match="exceeds"):
        eng.add_request([1] * 60, SamplingParams(max_new_tokens=10))
    with pytest.raises(ValueError, match="out of range"):
        eng.add_request([1, 999], SamplingParams())
    with pytest.raises(ValueError, match="empty"):
        eng.add_request([], SamplingParams())
    seqs = eng.add_request(list(range(30)), SamplingParams(n=2, max_new_tokens=20, temperature=1.0, seed=1))
    eng.step()
    eng.step()
    assert eng.pool.slots_in_use() == 2
    eng.abort(seqs)
    assert eng.pool.slots_in_use() == 0 and eng.pool.pages_in_use() == 0
    assert all(v == 0 for v in eng.reserved.values())  # no page stays promised to an aborted sample
    assert not eng.has_work() or eng.step() == []


def test_streams_never_show_part_of_a_stop_string(model):
    tok = _byte_tokenizer()
    llm = LLM(model, tokenizer=tok, max_seqs=2)
    full = llm.generate("def add", SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True))[0].text
    stop = full[5:9]
    chunks = [c.text for c in llm.stream("def add", SamplingParams(temperature=0, max_new_tokens=20, stop=[stop],
                                                                    ignore_eos=True))]
    final = full[: full.index(stop)]
    assert "".join(chunks) == final
    streamed = ""
    for c in chunks:  # at no point did the stream show text past the cut (e.g. half the stop string)
        streamed += c
        assert final.startswith(streamed)


@pytest.mark.slow
@pytest.mark.parametrize("speculative", [None, "mtp"])
def test_compiled_engine_keeps_greedy_output(model, references, speculative):
    """compile=True: the compiled decode step (one sequence: experts in the graph; a batch: the
    opaque expert op) and prefill stages, with prefill chunks of equal length run as one batch."""
    llm = LLM(model, max_seqs=4, prefill_chunk=5, page_size=4, compile=True, speculative=speculative,
              num_draft_tokens=2)
    params = [SamplingParams(temperature=0, max_new_tokens=n, ignore_eos=True) for n in (24, 16, 8)]
    outs = [llm.generate([p], sp)[0] for p, sp in zip(PROMPTS, params)]  # one at a time: batch 1
    outs_batched = llm.generate(PROMPTS, GREEDY)
    assert [o.token_ids for o in outs] == [r[: sp.max_new_tokens] for r, sp in zip(references, params)]
    assert [o.token_ids for o in outs_batched] == references
