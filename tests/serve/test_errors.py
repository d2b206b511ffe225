"""Bad input gets the right 4xx status and an OpenAI-style error body naming the parameter, and
the server keeps serving."""

import httpx
import openai
import pytest

from .stub import API_KEY, MAX_BODY, MODEL, wait_idle

AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "Hello"}]
CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def _tool(**function):
    return [{"type": "function", "function": {"name": "f", **function}}]


# (endpoint, body, status, param, words in the message)
CASES = {
    "missing messages": (CHAT, {"model": MODEL}, 400, "messages", "missing"),
    "missing prompt": (COMP, {"model": MODEL}, 400, "prompt", "missing"),
    "unknown field": (CHAT, {"model": MODEL, "messages": USER, "temprature": 1}, 400, "temprature", "unrecognized"),
    "wrong type temperature": (CHAT, {"model": MODEL, "messages": USER, "temperature": "hot"}, 400, "temperature",
                               "number"),
    "wrong type max_tokens": (COMP, {"model": MODEL, "prompt": "x", "max_tokens": "10"}, 400, "max_tokens", "integer"),
    "wrong type stream": (CHAT, {"model": MODEL, "messages": USER, "stream": "yes"}, 400, "stream", "boolean"),
    "messages not a list": (CHAT, {"model": MODEL, "messages": "hi"}, 400, "messages", "list"),
    "content wrong type": (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400,
                           "messages[0].content", ""),
    "unknown role": (CHAT, {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0]",
                     "robot"),
    "image part": (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages[0].content", ""),
    "empty messages": (CHAT, {"model": MODEL, "messages": []}, 400, "messages", "at least 1"),
    "last message from assistant": (CHAT, {"model": MODEL, "messages": USER + [{"role": "assistant", "content": "x"}]},
                                    400, "messages[1].role", "last message"),
    "empty prompt": (COMP, {"model": MODEL, "prompt": []}, 400, "prompt", ""),
    "prompt ids out of range": (COMP, {"model": MODEL, "prompt": [1, 2, 99999]}, 400, "prompt", "out of range"),
    "context exceeded (completions)": (COMP, {"model": MODEL, "prompt": [5] * 1000, "max_tokens": 100}, 400, "prompt",
                                       "maximum context length is 1024"),
    "context exceeded (chat)": (CHAT, {"model": MODEL, "messages": USER, "max_tokens": 5000}, 400, "messages",
                                "maximum context length"),
    "absurd max_tokens": (COMP, {"model": MODEL, "prompt": "x", "max_tokens": 10**12}, 400, "prompt", "context length"),
    "negative temperature": (CHAT, {"model": MODEL, "messages": USER, "temperature": -1}, 400, "temperature", "greater than or equal to 0"),
    "top_p zero": (CHAT, {"model": MODEL, "messages": USER, "top_p": 0}, 400, "top_p", "greater than 0"),
    "n zero": (CHAT, {"model": MODEL, "messages": USER, "n": 0}, 400, "n", ""),
    "n beyond the batch": (CHAT, {"model": MODEL, "messages": USER, "n": 16, "max_tokens": 2}, 400, "n",
                           "max batch 8"),
    "presence_penalty": (CHAT, {"model": MODEL, "messages": USER, "presence_penalty": 5}, 400, "presence_penalty", ""),
    "negative seed": (CHAT, {"model": MODEL, "messages": USER, "seed": -1}, 400, "seed", ""),
    "top_logprobs 50": (CHAT, {"model": MODEL, "messages": USER, "logprobs": True, "top_logprobs": 50}, 400,
                        "top_logprobs", ""),
    "top_logprobs without logprobs": (CHAT, {"model": MODEL, "messages": USER, "top_logprobs": 2}, 400, "top_logprobs",
                                      "needs logprobs"),
    "completion logprobs 100": (COMP, {"model": MODEL, "prompt": "x", "logprobs": 100}, 400, "logprobs", ""),
    "empty stop string": (COMP, {"model": MODEL, "prompt": "x", "stop": [""]}, 400, "stop", "non-empty"),
    "logit_bias": (COMP, {"model": MODEL, "prompt": "x", "logit_bias": {"5": 1}}, 400, "logit_bias", "not supported"),
    "tool schema not an object": (CHAT, {"model": MODEL, "messages": USER, "tools": _tool(parameters={"type": "array"})},
                                  400, "tools[0].function.parameters", "object"),
    "tool required not in properties": (CHAT, {"model": MODEL, "messages": USER, "tools": _tool(
        parameters={"type": "object", "properties": {"a": {}}, "required": ["b"]})}, 400,
        "tools[0].function.parameters", "not in properties"),
    "tool name with spaces": (CHAT, {"model": MODEL, "messages": USER, "tools": [
        {"type": "function", "function": {"name": "get weather"}}]}, 400, "tools[0].function.name", "function name"),
    "tool without function": (CHAT, {"model": MODEL, "messages": USER, "tools": [{"type": "function"}]}, 400,
                              "tools[0].function", "missing"),
    "tool of another type": (CHAT, {"model": MODEL, "messages": USER, "tools": [{"type": "retrieval", "function": {
        "name": "f"}}]}, 400, "tools[0].type", ""),
    "tool_choice required": (CHAT, {"model": MODEL, "messages": USER, "tools": [TOOL], "tool_choice": "required"}, 400,
                             "tool_choice", "not"),
    "unknown model": (CHAT, {"model": "gpt-4", "messages": USER}, 404, "model", "does not exist"),
    "negative max_tokens": (COMP, {"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, "max_tokens",
                            "greater than or equal to 0"),
    "prompt_logprobs with stream": (COMP, {"model": MODEL, "prompt": "x", "prompt_logprobs": 1, "stream": True}, 400,
                                    "prompt_logprobs", "stream"),
    "prompt_logprobs 21": (COMP, {"model": MODEL, "prompt": "x", "prompt_logprobs": 21}, 400, "prompt_logprobs", ""),
    "thinking kwarg not a bool": (CHAT, {"model": MODEL, "messages": USER, "chat_template_kwargs": {"thinking": "yes"}},
                                  400, "chat_template_kwargs", "true or false"),
    "tokenize nothing": ("/tokenize", {"model": MODEL}, 400, "prompt", "missing"),
    "tokenize chat from the assistant": ("/tokenize", {"messages": [{"role": "assistant", "content": "x"}]}, 400,
                                         "messages[0].role", "last message"),
    "tokenize unknown model": ("/tokenize", {"model": "gpt-4", "prompt": "x"}, 404, "model", "does not exist"),
    "detokenize out of range": ("/detokenize", {"tokens": [1, 99999]}, 400, "prompt", "out of range"),
    "bad effort": (CHAT, {"model": MODEL, "messages": USER, "reasoning_effort": "extreme"}, 400, "reasoning_effort", ""),
}


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
        yield c


def _error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request(http, name):
    path, body, status, param, words = CASES[name]
    for stream in (False, True) if path in (CHAT, COMP) else (False,):  # streaming: refused the same way, at once
        r = http.post(path, json=dict(body, stream=True) if stream and "stream" not in body else body)
        err = _error(r, status)
        assert err["param"] == param, err
        assert words.lower() in err["message"].lower(), err
        assert err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_invalid_json_and_wrong_content(http):
    err = _error(http.post(CHAT, content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}),
                 400)
    assert err["code"] == "invalid_json" and "JSON" in err["message"]
    _error(http.post(CHAT, content=b"[1, 2]", headers={"content-type": "application/json"}), 400)


def test_auth(url):
    body = {"model": MODEL, "messages": USER, "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        err = _error(httpx.post(url + CHAT, json=body, headers=headers), 401)
        assert err["type"] == "authentication_error"
    _error(httpx.get(url + "/v1/models"), 401)
    _error(httpx.get(url + "/metrics"), 401)
    assert httpx.get(url + "/health").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_body_size_limit(http):
    huge = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (MAX_BODY + 10)}]}
    err = _error(http.post(CHAT, json=huge), 413)
    assert err["code"] == "request_too_large"


def test_unknown_route_and_method(http):
    assert _error(http.get("/v1/nothing"), 404)["type"] == "not_found_error"
    _error(http.get(CHAT), 405)


def test_still_serving_after_all_that(url, service):
    client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
    out = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=3, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop")
    wait_idle(service)
