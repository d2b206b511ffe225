"""The streaming output parser: however the text is cut into pieces, the pieces add up to the
same reasoning, content and tool calls as the whole text, and no marker leaks into content."""

import json
import random

import pytest

from trillion.chat.dsml import OutputParser, parse_output, render_tool_calls

CALLS = render_tool_calls([("get_weather", json.dumps({"city": "Paris", "days": 3})),
                           ("search", json.dumps({"q": "a < b </x>", "opts": {"n": [1, 2]}})),
                           ("noargs", "{}")])
THINKING_OUTPUT = "Let me think ✓ about 日本.</think>Sure.\n\n" + CALLS


def _stream(text, pieces, **kw):
    p = OutputParser(**kw)
    deltas, i = [], 0
    for n in pieces:
        deltas.append(p.feed(text[i : i + n]))
        i += n
    deltas.append(p.feed(text[i:]))
    deltas.append(p.finish())
    return p, deltas


def _assemble(deltas):
    reasoning = "".join(d.reasoning for d in deltas)
    content = "".join(d.content for d in deltas)
    calls = {}
    for d in deltas:
        for idx, cid, name, args in d.tool_calls:
            c = calls.setdefault(idx, {"id": None, "name": None, "arguments": ""})
            if cid:
                c["id"], c["name"] = cid, name
            c["arguments"] += args
    return reasoning, content, [calls[i] for i in sorted(calls)]


def test_whole_output():
    reasoning, content, calls = parse_output(THINKING_OUTPUT, thinking=True)
    assert reasoning == "Let me think ✓ about 日本."
    assert content == "Sure."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 3}),
        ("search", {"q": "a < b </x>", "opts": {"n": [1, 2]}}),
        ("noargs", {}),
    ]
    assert len({c.id for c in calls}) == 3 and all(c.id.startswith("call_") for c in calls)


@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_gives_the_same_result(seed):
    rng = random.Random(seed)
    pieces = [rng.randint(1, 6) for _ in range(len(THINKING_OUTPUT))]
    p, deltas = _stream(THINKING_OUTPUT, pieces, thinking=True, tools=True)
    reasoning, content, calls = _assemble(deltas)
    assert (reasoning, content) == ("Let me think ✓ about 日本.", "Sure.")
    assert [c["name"] for c in calls] == ["get_weather", "search", "noargs"]
    assert [c["arguments"] for c in calls] == [c.arguments for c in p.calls]
    assert json.loads(calls[1]["arguments"]) == {"q": "a < b </x>", "opts": {"n": [1, 2]}}
    # every call's id and name come in its first piece, before any argument
    first = {}
    for d in deltas:
        for idx, cid, name, args in d.tool_calls:
            first.setdefault(idx, (cid, name))
    assert all(cid and name for cid, name in first.values())


def test_one_character_at_a_time_streams_reasoning_before_the_end():
    p = OutputParser(thinking=True)
    seen = "".join(p.feed(ch).reasoning for ch in "abc</thi")
    assert seen == "abc"  # "</thi" is held back: it may be the end of the reasoning
    d = p.feed("nk>hello")
    assert d.reasoning == "" and d.content == "hello"


def test_chat_mode_and_no_tools():
    assert parse_output("plain </think> text", thinking=False, tools=False) == ("", "plain </think> text", [])
    text = "x\n\n" + CALLS
    _, content, calls = parse_output(text, tools=False)  # no tools in the request: the block is content
    assert content == text and calls == []


def test_malformed_or_truncated_output_loses_nothing():
    broken = '\n\n<｜DSML｜tool_calls>\ngarbage<｜DSML｜invoke name="f">\n<｜DSML｜parameter name="a" string="false">not json'
    reasoning, content, calls = parse_output("answer" + broken)
    assert "garbage" in content and "not json" in content and content.startswith("answer")
    assert [(c.name, c.arguments) for c in calls] == [("f", "{}")]  # the open call is closed at the end
    _, _, calls = parse_output('<｜DSML｜tool_calls><｜DSML｜invoke name="f"><｜DSML｜parameter name="a" '
                               'string="false">{bad</｜DSML｜parameter></｜DSML｜invoke></｜DSML｜tool_calls>')
    assert json.loads(calls[0].arguments) == {"a": "{bad"}  # claimed JSON that is not: kept as a string
    reasoning, content, _ = parse_output("never closed", thinking=True)
    assert reasoning == "never closed" and content == ""
