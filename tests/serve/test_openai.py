"""The official `openai` client (sync and async, streaming and not) against the running server:
completions, chat, tool calls and reasoning, with the parameters the issue lists."""

import asyncio
import functools
import json
import operator

import openai
import pytest

from .stub import API_KEY, CFG, MODEL, SCRIPTS

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}
GREEDY = {"temperature": 0, "max_tokens": 6}


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def _async_client(url):
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_models(client, service):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].max_model_len == service.max_model_len


def test_completions_text_and_token_ids_stream_and_not(client, tokenizer):
    out = client.completions.create(model=MODEL, prompt="Hello world", **GREEDY, extra_body={"return_token_ids": True})
    c = out.choices[0]
    # a text prompt starts with BOS (the tokenizer has no config: the model's bos_token_id)
    ids = [CFG.bos_token_id, *tokenizer.encode("Hello world")]
    assert c.finish_reason in ("length", "stop") and out.usage.prompt_tokens == len(ids)
    assert out.usage.completion_tokens == len(c.token_ids) <= 6
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    # the same prompt as token ids, streamed: the same tokens and text
    chunks = list(client.completions.create(model=MODEL, prompt=ids, **GREEDY, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"return_token_ids": True}))
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens and chunks[-1].choices == []
    assert "".join(ch.choices[0].text for ch in chunks[:-1]) == c.text
    assert functools.reduce(operator.iadd, (ch.choices[0].token_ids for ch in chunks[:-1]), []) == c.token_ids
    assert chunks[-2].choices[0].finish_reason == c.finish_reason


def test_completions_n_seed_logprobs_echo_and_several_prompts(client):
    kw = {"model": MODEL, "prompt": "Hello", "max_tokens": 5, "temperature": 1.0, "top_p": 0.9, "seed": 11,
              "extra_body": {"ignore_eos": True}}
    a = client.completions.create(n=3, **kw)
    b = client.completions.create(n=3, **kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # a seed reproduces
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    lp = client.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0, logprobs=3,
                                   extra_body={"ignore_eos": True}).choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(max(top.values()) == pytest.approx(v) for top, v in zip(lp.top_logprobs, lp.token_logprobs))
    echo = client.completions.create(model=MODEL, prompt="Hello", echo=True, **GREEDY)
    assert echo.choices[0].text.startswith("Hello")
    many = client.completions.create(model=MODEL, prompt=["Hello", "world"], n=2, **GREEDY)
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]


def test_stop_strings_and_penalties(client):
    base = client.completions.create(model=MODEL, prompt="Hello", max_tokens=12, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = base[3:5]
    assert stop and base.index(stop) >= 1
    cut = client.completions.create(model=MODEL, prompt="Hello", max_tokens=12, temperature=0, stop=[stop],
                                    extra_body={"ignore_eos": True}).choices[0]
    assert cut.finish_reason == "stop" and cut.text == base[: base.index(stop)]
    streamed = client.completions.create(model=MODEL, prompt="Hello", max_tokens=12, temperature=0, stop=stop,
                                         stream=True, extra_body={"ignore_eos": True})
    assert "".join(ch.choices[0].text for ch in streamed) == cut.text  # no piece of the stop string leaks
    pen = client.completions.create(model=MODEL, prompt="Hello", max_tokens=12, temperature=0,
                                    presence_penalty=2, frequency_penalty=2, extra_body={"ignore_eos": True})
    assert pen.choices[0].finish_reason == "length"


def test_chat_sync_and_streaming(client):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world"}]
    out = client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=6, temperature=0,
                                         logprobs=True, top_logprobs=2)
    c = out.choices[0]
    assert c.message.role == "assistant" and c.finish_reason in ("length", "stop")
    assert 1 <= len(c.logprobs.content) <= 6 and all(len(t.top_logprobs) == 2 for t in c.logprobs.content)
    stream = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=6, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == (c.message.content or "")
    assert chunks[-1].choices[0].finish_reason == c.finish_reason


def test_multibyte_text_is_never_split_in_a_stream(client):
    """The scripted output is full of 2- and 3-byte characters; byte-level tokens cut them."""
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "SCRIPT_TEXT"}],
                                                 stream=True))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices[0].delta.content]
    assert "".join(pieces) == SCRIPTS["SCRIPT_TEXT"]
    assert not any("\ufffd" in p for p in pieces)


def test_tool_calls_sync(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "SCRIPT_TOOL Paris?"}],
                                         tools=[WEATHER], max_tokens=200)
    c = out.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content == "Let me check."
    (call,) = c.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}
    # the round trip: the call and its result go back in, the prompt renders them
    follow = client.chat.completions.create(model=MODEL, max_tokens=3, temperature=0, tools=[WEATHER], messages=[
        {"role": "user", "content": "Paris?"}, c.message, {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].finish_reason in ("length", "stop")


def test_tool_calls_and_reasoning_stream_async(url):
    async def main():
        async with _async_client(url) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "SCRIPT_TOOL Paris?"}], tools=[WEATHER],
                max_tokens=200, stream=True)
            calls, content, reasons = {}, "", []
            async for ch in stream:
                d = ch.choices[0].delta
                content += d.content or ""
                for tc in d.tool_calls or []:
                    entry = calls.setdefault(tc.index, {"id": tc.id, "name": tc.function.name, "arguments": ""})
                    entry["arguments"] += tc.function.arguments or ""
                reasons.append(ch.choices[0].finish_reason)
            assert content == "Let me check." and reasons[-1] == "tool_calls"
            assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
                ("get_weather", {"city": "Paris", "days": 3})]
            assert calls[0]["id"].startswith("call_")

            think = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "SCRIPT_THINK 2+2?"}], reasoning_effort="high",
                stream=True, stream_options={"include_usage": True})
            reasoning, content, usage = "", "", None
            async for ch in think:
                if ch.choices:
                    d = ch.choices[0].delta
                    reasoning += getattr(d, "reasoning_content", None) or ""
                    content += d.content or ""
                usage = ch.usage or usage
            assert (reasoning, content) == ("The user wants 2+2 ✓.", "It is 4, 日本.")
            assert usage.completion_tokens > 0

            full = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "SCRIPT_THINK 2+2?"}], extra_body={"thinking": True})
            msg = full.choices[0].message
            assert (msg.reasoning_content, msg.content) == ("The user wants 2+2 ✓.", "It is 4, 日本.")
            assert full.choices[0].finish_reason == "stop"

    asyncio.run(main())


def test_chat_mode_has_no_reasoning_and_tool_choice_none_ignores_tools(client):
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "SCRIPT_THINK"}])
    msg = out.choices[0].message
    assert msg.content == SCRIPTS["SCRIPT_THINK"] and getattr(msg, "reasoning_content", None) is None
    out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "SCRIPT_TOOL"}],
                                         tools=[WEATHER], tool_choice="none", max_tokens=200)
    assert out.choices[0].message.tool_calls is None and "<｜DSML｜tool_calls>" in out.choices[0].message.content
