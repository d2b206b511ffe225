"""lm-evaluation-harness (`lm_eval`, its `local-completions` model: what
`lm_eval --model local-completions --model_args base_url=.../v1/completions,tokenizer=MODEL_DIR`
runs) against a served model folder: loglikelihood, rolling loglikelihood and generate-until
requests all run, and agree with independent references: the model's full forward for the
scores, greedy decoding for the generation, and `trillion eval` for the perplexity of a text."""

import json
import math

import pytest
import torch
from helpers import random_model

from trillion.checkpoint import save_model
from trillion.cli.main import main
from trillion.engine.llm import LLM
from trillion.engine.sampling import SamplingParams
from trillion.serve import ServerThread, create_app, load_service
from trillion.train.corpus import load_corpus, split

from .stub import CFG

lm_models = pytest.importorskip("lm_eval.models.openai_completions",
                                reason="lm-eval is a dev dependency: pip install -e '.[dev]'")
from lm_eval.api.instance import Instance

SEQ_LEN = 32  # trillion eval's windows; lm-eval's max_length is SEQ_LEN + 2 (one context token, one generated)
DOC_TOKENS = 3 * SEQ_LEN  # a whole number of windows: both tools score exactly the same tokens in the same contexts
WORDS = ["the", "weather", "in", "Paris", "is", "sunny", "today", "and", "we", "add", "a", "to", "b", "then", "return", "it"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer):
    """A model folder as trillion writes it, with the tokenizer files transformers reads."""
    path = save_model(random_model(CFG, seed=5), tmp_path_factory.mktemp("model") / "m")
    tokenizer.tok.save(str(path / "tokenizer.json"))
    if not (path / "tokenizer_config.json").exists():  # written by trillion itself once model folders carry it
        (path / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<｜begin▁of▁sentence｜>",
            "eos_token": "<｜end▁of▁sentence｜>", "add_bos_token": False, "model_max_length": 4096}))
    return path


@pytest.fixture(scope="module")
def lm(folder):
    service = load_service(folder, max_batch=4, max_model_len=512, prefill_chunk=16, page_size=4)
    with ServerThread(create_app(service)) as url:
        yield lm_models.LocalCompletionsAPI(base_url=url + "/v1/completions", model="m", tokenizer=str(folder),
                                            max_length=SEQ_LEN + 2, max_retries=1)


def _text_of(tokenizer, n_tokens: int, seed: int) -> str:
    """Text of exactly n_tokens tokens: words added one by one, skipping those that overshoot."""
    g = torch.Generator().manual_seed(seed)
    text = ""
    while len(tokenizer.encode(text)) < n_tokens:
        for k in torch.randperm(len(WORDS), generator=g).tolist():
            longer = f"{text} {WORDS[k]}" if text else WORDS[k]
            if len(tokenizer.encode(longer)) <= n_tokens:
                text = longer
                break
        else:
            text += "."  # a one-byte token closes the gap
    return text


def _score(model, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """The reference: log p(continuation | context) and whether it is the greedy one, from one forward."""
    ids = context + continuation
    with torch.no_grad():
        lp = model(torch.tensor([ids[:-1]]))[0].float().log_softmax(-1)[len(context) - 1:]
    target = torch.tensor(continuation)
    return float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all())


def test_generate_until_and_loglikelihood(lm, folder):
    llm = LLM(str(folder))
    context = "The weather in Paris"
    (text,) = lm.generate_until([Instance("generate_until", {}, (context, {"until": ["\n\n"], "max_gen_toks": 8,
                                                                            "do_sample": False}), 0)])
    ref = llm.generate([lm.tok_encode(context)], SamplingParams(temperature=0, max_new_tokens=8))[0]
    assert text == ref.text.split("\n\n")[0] and text
    # the greedy continuation is scored greedy: its longest start whose text tokenizes back to its ids
    ctx_ids = lm.tok_encode(context)
    greedy_text = next(t for k in range(len(ref.token_ids), 0, -1)
                       if lm.tok_encode(context + (t := llm.tokenizer.decode(ref.token_ids[:k])))
                       == ctx_ids + ref.token_ids[:k])
    pairs = [(context, greedy_text), ("def add(a, b):", "\n    return a + b"), ("héllo", " wörld ✓ 日本")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)])
    for (ctx_text, continuation), (ll, greedy) in zip(pairs, got):
        whole = lm.tok_encode(ctx_text + continuation)
        ctx = lm.tok_encode(ctx_text)
        ref_ll, ref_greedy = _score(llm.model, ctx, whole[len(ctx):])
        assert ll == pytest.approx(ref_ll, abs=1e-3) and greedy == ref_greedy
        assert ll < 0
    assert got[0][1] is True and got[1][1] is False


def test_rolling_loglikelihood_perplexity_equals_trillion_eval(lm, folder, tokenizer, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name, seed in (("a.txt", 1), ("b.txt", 2)):
        (data / name).write_text(_text_of(tokenizer, DOC_TOKENS, seed))
    _, held = split(load_corpus([str(data)]), 0.5)  # the document `trillion eval` holds out
    (doc,) = held
    assert len(tokenizer.encode(doc.text)) == DOC_TOKENS
    assert main(["eval", "--model", str(folder), "--data", str(data), "--heldout", "0.5",
                 "--seq-len", str(SEQ_LEN), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # trillion eval packs BOS doc EOS and scores windows of SEQ_LEN targets: here the doc's tokens,
    # each window read from BOS or the previous window's last token, as lm-eval's rolling windows are
    assert ref["eval_tokens"] == DOC_TOKENS
    (ll,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (doc.text,), 0)])
    assert math.exp(-ll / DOC_TOKENS) == pytest.approx(ref["eval_ppl"], rel=1e-4)
