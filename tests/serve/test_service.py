"""The layers under the HTTP app: `TextStream` (ids -> text, stop strings), the `Service` Python
API, a failing engine step, and `trillion serve` on a flavor without a tokenizer."""

import asyncio

import httpx
import pytest

from trillion.cli.main import build_parser
from trillion.engine.sampling import SamplingParams
from trillion.serve import ChatMode, RequestError, ServerThread, create_app, load_service
from trillion.serve.text import token_bytes
from trillion.tokenizer import TextStream

from .stub import API_KEY, MODEL, wait_idle


def test_text_stream_holds_back_what_may_be_a_stop_string(tokenizer):
    ids = tokenizer.encode("héllo wörld ✓ 日本 and more")
    plain = TextStream(tokenizer, hidden=set())
    pieces = [plain.push(t) for t in ids]
    pieces.append(plain.finish())
    assert "".join(pieces) == "héllo wörld ✓ 日本 and more" and not any("\ufffd" in p for p in pieces)

    ts = TextStream(tokenizer, hidden={1}, stop=["日本 and"])
    out = ""
    for t in ids + [1]:
        out += ts.push(t)
        assert "日" not in out  # never shown: it could be (and is) the start of the stop string
        if ts.stopped:
            break
    assert ts.stopped and out == "héllo wörld ✓ "
    # byte-level tokens may hold part of a character: their bytes still add up
    assert b"".join(token_bytes(tokenizer, t) for t in tokenizer.encode("✓ 日本")) == "✓ 日本".encode()


def test_python_api_without_http(service, tokenizer):
    """Service is usable directly: chat prompt -> generation -> reasoning and content."""

    async def main():
        ids = service.chat_prompt([{"role": "user", "content": "SCRIPT_THINK"}], thinking=True)
        assert tokenizer.decode(ids, skip_special_tokens=False).endswith("SCRIPT_THINK<｜Assistant｜><think>")
        gen = await service.generate(ids, SamplingParams(max_new_tokens=50, temperature=0),
                                     chat=ChatMode(thinking=True))
        (choice,) = await gen.collect()
        return choice, gen

    choice, gen = asyncio.run(main())
    assert (choice.reasoning, choice.content, choice.finish_reason) == ("The user wants 2+2 ✓.", "It is 4, 日本.", "stop")
    assert gen.completion_tokens == len(choice.token_ids) and choice.token_ids[-1] == 1  # the end token
    with pytest.raises(RequestError, match="last message"):
        service.chat_prompt([{"role": "system", "content": "x"}])
    # OpenAI's developer role is a system turn; a response format joins the (added) system turn
    ids = service.chat_prompt([{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "hi"}],
                              response_format={"type": "json_object"})
    assert tokenizer.decode(ids, skip_special_tokens=False) == (
        '<｜begin▁of▁sentence｜>Be terse.\n\n## Response Format:\n\nYou MUST strictly adhere to the following '
        'schema to reply:\n{"type": "json_object"}<｜User｜>hi<｜Assistant｜></think>')
    wait_idle(service)


def test_a_failing_engine_step_fails_only_what_ran(url, service, monkeypatch):
    real = service.engine.step
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated device error")
        return real()

    monkeypatch.setattr(service.engine, "step", flaky)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 20, "temperature": 0, "ignore_eos": True}
    r = httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 500 and "simulated device error" in r.json()["error"]["message"]
    wait_idle(service)
    r = httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_cli_defaults_and_a_flavor_without_tokenizer():
    args = build_parser().parse_args(["serve", "--model", "tiny"])
    assert (args.host, args.port, args.max_batch, args.max_queue, args.api_key) == ("127.0.0.1", 8000, 8, 64, None)
    service = load_service("tiny", max_batch=2, max_model_len=128)
    with ServerThread(create_app(service)) as url:
        r = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 4,
                                                      "temperature": 0, "return_token_ids": True})
        assert r.status_code == 200 and len(r.json()["choices"][0]["token_ids"]) <= 4
        r = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user",
                                                                                           "content": "hi"}]})
        assert r.status_code == 400 and "tokenizer" in r.json()["error"]["message"]
