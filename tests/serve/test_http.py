"""What OpenAI and vLLM clients send and expect beyond the basics: `model` left out, unused OpenAI
fields, /v1/models/{id}, /tokenize, /detokenize, /version, JSON without a content type,
`finish_reason: null` in every non-final chunk, `max_tokens: 0`, the chat default cap, and
prompt log-probabilities (echo + logprobs, prompt_logprobs) against the model's full forward."""

import json
import logging

import httpx
import openai
import pytest
import torch
from helpers import random_model

import trillion
from trillion.engine.engine import Engine
from trillion.serve import ServerThread, Service, create_app
from trillion.serve.responses import token_text
from trillion.serve.server import generation_max_new_tokens

from .stub import API_KEY, CFG, MODEL

AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "Hello"}]
PROMPT = [(13 * k + 7) % 500 + 2 for k in range(40)]  # 40 tokens: three prefill chunks of 16 on `plain`
DEFAULT_CAP = 7


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def plain(tokenizer):
    """(url, service) of a server of its own: the plain engine, prefill chunks of 16, a context of
    256, a chat default cap of DEFAULT_CAP, no API key."""
    model = random_model(CFG, seed=11)
    engine = Engine(model, max_seqs=4, max_model_len=256, prefill_chunk=16, page_size=4)
    service = Service(engine, tokenizer, model_name="plain", default_max_tokens=DEFAULT_CAP)
    with ServerThread(create_app(service)) as url:
        yield url, service


@pytest.fixture(scope="module")
def reference(plain):
    """log p(token t | tokens < t) of PROMPT from one full forward pass of the served model."""
    with torch.no_grad():
        return plain[1].engine.model(torch.tensor([PROMPT]))[0].float().log_softmax(-1)


# ---------------------------------------------------------------------- requests


def test_model_may_be_left_out_and_models_by_id(http, client):
    for path, body in (("/v1/chat/completions", {"messages": USER}), ("/v1/completions", {"prompt": "Hello"})):
        r = http.post(path, json=dict(body, max_tokens=2, temperature=0))
        assert r.status_code == 200, r.text
        assert r.json()["model"] == MODEL
    card = client.models.retrieve(MODEL)
    assert card.id == MODEL and card.object == "model"
    r = http.get("/v1/models/gpt-4")
    assert r.status_code == 404
    assert r.json()["error"] == {"message": "the model 'gpt-4' does not exist; this server serves 'tiny-test'",
                                 "type": "not_found_error", "param": "model", "code": "model_not_found"}
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("org/other-model")


def test_unused_openai_fields_are_accepted_with_one_warning_each(plain):
    url, _ = plain
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    log = logging.getLogger("trillion.serve")
    log.addHandler(handler)
    try:
        unused = {"store": True, "service_tier": "auto", "user": "u-1", "metadata": {"k": "v"},
                  "parallel_tool_calls": False, "chat_template_kwargs": {"add_vision_id": True}}
        for _ in range(2):
            r = httpx.post(url + "/v1/chat/completions", json={"messages": USER, "max_tokens": 1, **unused})
            assert r.status_code == 200, r.text
        r = httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1, "store": False, "user": "u"})
        assert r.status_code == 200, r.text
    finally:
        log.removeHandler(handler)
    warnings = [rec.getMessage() for rec in seen if rec.levelno == logging.WARNING]
    assert len(warnings) == 1  # the second request and the completion add no field not seen before
    for field in ("store", "service_tier", "user", "metadata", "parallel_tool_calls",
                  "chat_template_kwargs.add_vision_id"):
        assert field in warnings[0]


def test_chat_template_kwargs_choose_the_thinking_mode(client):
    for kwargs in ({"thinking": True}, {"enable_thinking": True}):
        out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "SCRIPT_THINK"}],
                                             extra_body={"chat_template_kwargs": kwargs})
        msg = out.choices[0].message
        assert (msg.reasoning_content, msg.content) == ("The user wants 2+2 ✓.", "It is 4, 日本.")
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "SCRIPT_THINK"}],
                                         reasoning_effort="high",
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert getattr(out.choices[0].message, "reasoning_content", None) is None  # the kwarg overrides the effort


def test_json_without_a_content_type(http):
    body = json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 2, "temperature": 0}).encode()
    want = http.post("/v1/completions", content=body, headers={"content-type": "application/json"}).json()
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}, {"content-type": "text/plain"}):
        r = httpx.post(http.base_url.join("/v1/completions"), content=body, headers={**AUTH, **headers})
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["choices"] == want["choices"]


def test_tokenize_detokenize_and_version(http, service, tokenizer):
    r = http.post("/tokenize", json={"model": MODEL, "prompt": "Hello world", "return_token_strs": True}).json()
    ids = service.text_prompt("Hello world")  # what /v1/completions runs for this prompt
    assert r == {"count": len(ids), "max_model_len": 1024, "tokens": ids,
                 "token_strs": [token_text(service, i) for i in ids]}
    assert ids[0] == service.engine.cfg.bos_token_id  # a text prompt starts with BOS, as /v1/completions runs it
    assert "".join(r["token_strs"][1:]) == "Hello world"
    r = http.post("/tokenize", json={"prompt": "Hello world", "add_special_tokens": False}).json()
    assert r["tokens"] == tokenizer.encode("Hello world", add_special_tokens=False) and r["token_strs"] is None
    r = http.post("/tokenize", json={"messages": USER, "chat_template_kwargs": {"thinking": True}}).json()
    assert r["tokens"] == service.chat_prompt(USER, thinking=True) != service.chat_prompt(USER)
    assert http.post("/detokenize", json={"tokens": ids}).json() == {"prompt": tokenizer.decode(ids)}
    assert http.get("/version").json() == {"version": trillion.__version__}


# ---------------------------------------------------------------------- streams and limits


def _events(http, path, body) -> list[dict]:
    with http.stream("POST", path, json=dict(body, stream=True)) as r:
        assert r.status_code == 200
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "Hello", "n": 2, "echo": True, "max_tokens": 4, "ignore_eos": True,
                         "stream_options": {"include_usage": True}}),
    ("/v1/completions", {"prompt": PROMPT[:9], "echo": True, "logprobs": 1, "max_tokens": 3, "ignore_eos": True}),
    ("/v1/chat/completions", {"messages": USER, "n": 2, "max_tokens": 4, "logprobs": True, "ignore_eos": True,
                              "stream_options": {"include_usage": True}}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "SCRIPT_TOOL"}], "max_tokens": 200,
                              "tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
])
def test_every_stream_chunk_has_finish_reason_null_until_its_last(http, path, body):
    events = _events(http, path, dict(body, model=MODEL, temperature=0))
    last: dict[int, int] = {}
    for k, ev in enumerate(events):
        for c in ev["choices"]:
            assert "finish_reason" in c and "logprobs" in c, ev
            last[c["index"]] = k
    assert sorted(last) == list(range(body.get("n", 1)))
    for k, ev in enumerate(events):
        for c in ev["choices"]:
            assert (c["finish_reason"] is None) == (k != last[c["index"]]), ev


def test_max_tokens_zero_generates_nothing(http, client, service, tokenizer):
    out = client.completions.create(model=MODEL, prompt="Hello world", max_tokens=0)
    assert out.choices[0].text == "" and out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 0 and out.usage.prompt_tokens == len(service.text_prompt("Hello world"))
    out = client.completions.create(model=MODEL, prompt=["Hello", "world"], max_tokens=0, echo=True, n=2)
    assert [c.text for c in out.choices] == ["Hello", "Hello", "world", "world"]
    chunks = list(client.completions.create(model=MODEL, prompt="Hello", max_tokens=0, stream=True))
    assert [(c.choices[0].text, c.choices[0].finish_reason) for c in chunks] == [("", "length")]
    chat = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=0)
    assert chat.choices[0].message.content == "" and chat.choices[0].finish_reason == "length"
    assert chat.usage.completion_tokens == 0


def test_chat_without_max_tokens_stops_at_the_default_cap_within_the_context(plain):
    url, service = plain
    body = {"messages": USER, "temperature": 0, "ignore_eos": True}
    out = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    assert out["usage"]["completion_tokens"] == DEFAULT_CAP and out["choices"][0]["finish_reason"] == "length"
    long = next(m for k in range(1, 200) if 0 < service.tokens_left(
        service.chat_prompt(m := [{"role": "user", "content": "Hello " * k}])) < DEFAULT_CAP)
    room = service.tokens_left(service.chat_prompt(long))
    out = httpx.post(url + "/v1/chat/completions", json=dict(body, messages=long), timeout=60).json()
    assert out["usage"]["completion_tokens"] == room  # the cap never overflows the context
    assert httpx.post(url + "/v1/completions", json={"prompt": "Hi", "max_tokens": None, "ignore_eos": True},
                      timeout=60).json()["usage"]["completion_tokens"] == 16  # OpenAI's completions default


def test_generation_config_sets_the_default_cap(tmp_path):
    assert generation_max_new_tokens(tmp_path) is None
    (tmp_path / "generation_config.json").write_text('{"max_new_tokens": 300, "temperature": 0.8}')
    assert generation_max_new_tokens(tmp_path) == 300
    (tmp_path / "generation_config.json").write_text('{"max_new_tokens": 0}')
    with pytest.raises(ValueError, match="generation_config.json: max_new_tokens must be an integer >= 1, got 0"):
        generation_max_new_tokens(tmp_path)


# ---------------------------------------------------------------------- prompt log-probabilities


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_echo_with_logprobs_scores_the_prompt_like_the_full_forward(plain, reference, max_tokens):
    url, service = plain
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
    out = client.completions.create(model="plain", prompt=PROMPT, echo=True, logprobs=2, max_tokens=max_tokens,
                                    temperature=0, extra_body={"ignore_eos": True, "return_token_ids": True})
    lp = out.choices[0].logprobs
    n = len(PROMPT)
    assert len(lp.token_logprobs) == n + max_tokens == len(lp.tokens) == len(lp.top_logprobs)
    assert lp.tokens[:n] == [token_text(service, t) for t in PROMPT]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # the first token has no prefix
    want = [float(reference[t - 1, PROMPT[t]]) for t in range(1, n)]
    assert lp.token_logprobs[1:n] == pytest.approx(want, abs=1e-4)
    for t in range(1, n):
        best = reference[t - 1].topk(2)
        assert len(lp.top_logprobs[t]) <= 2
        assert max(lp.top_logprobs[t].values()) == pytest.approx(float(best.values[0]), abs=1e-4)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    if max_tokens:  # the generated token follows, scored from the last prompt position
        token = out.choices[0].token_ids[0]
        assert token == int(reference[-1].argmax())
        assert lp.token_logprobs[n] == pytest.approx(float(reference[-1, token]), abs=1e-4)
    # the same scores streamed: the echo chunk carries the prompt's
    streamed = list(client.completions.create(model="plain", prompt=PROMPT, echo=True, logprobs=2,
                                              max_tokens=max_tokens, temperature=0, stream=True,
                                              extra_body={"ignore_eos": True}))
    got = [v for ch in streamed if ch.choices[0].logprobs for v in ch.choices[0].logprobs.token_logprobs]
    assert got == lp.token_logprobs


def test_vllm_prompt_logprobs_field(plain, reference):
    url, service = plain
    r = httpx.post(url + "/v1/completions", timeout=60, json={
        "prompt": PROMPT, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 3, "n": 2, "ignore_eos": True})
    for choice in r.json()["choices"]:
        plp = choice["prompt_logprobs"]
        assert len(plp) == len(PROMPT) and plp[0] is None and choice["logprobs"] is None
        for t in range(1, len(PROMPT)):
            ref = reference[t - 1]
            entry = plp[t]
            own = entry[str(PROMPT[t])]
            assert own["logprob"] == pytest.approx(float(ref[PROMPT[t]]), abs=1e-4)
            assert own["rank"] == int((ref > ref[PROMPT[t]]).sum()) + 1
            assert own["decoded_token"] == token_text(service, PROMPT[t])
            best = ref.topk(3)
            for rank, (i, v) in enumerate(zip(best.indices.tolist(), best.values.tolist()), 1):
                assert entry[str(i)]["logprob"] == pytest.approx(v, abs=1e-4)
                if i != PROMPT[t]:
                    assert entry[str(i)]["rank"] == rank
            assert len(entry) in (3, 4)  # the prompt token, and the top 3 (it may be one of them)
