"""The V4 chat encoder reproduces DeepSeek's four golden prompts exactly, and the rules in its
README (chat vs thinking mode, dropped reasoning, tools, tool-result order, effort prefix)."""

import json
from pathlib import Path

import pytest

from trillion.chat import encode_messages
from trillion.chat.dsml import parse_output
from trillion.chat.encoding import REASONING_EFFORT_MAX

DATA = Path(__file__).parent / "data"


def _golden(i):
    return (DATA / f"test_output_{i}.txt").read_text(encoding="utf-8")


def _input(i):
    return json.loads((DATA / f"test_input_{i}.json").read_text(encoding="utf-8"))


def test_golden_1_thinking_with_tools_and_tool_results():
    data = _input(1)
    messages = data["messages"]
    messages[0]["tools"] = data["tools"]
    assert encode_messages(messages, thinking=True) == _golden(1)


@pytest.mark.parametrize("i,thinking", [(2, True), (3, True), (4, False)])
def test_golden_2_to_4(i, thinking):
    assert encode_messages(_input(i), thinking=thinking) == _golden(i)


def test_golden_outputs_parse_back():
    """The assistant turns of golden 1 parse into the reasoning, content and calls they came from."""
    prompt = _golden(1)
    start = prompt.index("<｜Assistant｜><think>") + len("<｜Assistant｜><think>")
    turn = prompt[start : prompt.index("<｜end▁of▁sentence｜>", start)]
    reasoning, content, calls = parse_output(turn, thinking=True)
    assert reasoning == "The user wants to know the weather in Beijing. I should use the get_weather tool."
    assert content == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"location": "Beijing", "unit": "celsius"})
    ]
    start = prompt.rindex("<｜Assistant｜><think>") + len("<｜Assistant｜><think>")
    reasoning, content, calls = parse_output(prompt[start:].removesuffix("<｜end▁of▁sentence｜>"), thinking=True)
    assert reasoning == "Got the weather data. Let me format a nice response."
    assert "22°C" in content and calls == []


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_chat_and_thinking_mode_openers():
    assert encode_messages(CHAT) == "<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜></think>"
    assert encode_messages(CHAT, thinking=True).endswith("<｜User｜>Hi<｜Assistant｜><think>")
    assert encode_messages(CHAT, add_bos=False).startswith("Be brief.")


def test_earlier_reasoning_dropped_unless_tools():
    convo = CHAT + [
        {"role": "assistant", "reasoning_content": "OLD THOUGHT", "content": "Hello!"},
        {"role": "user", "content": "Again"},
    ]
    plain = encode_messages(convo, thinking=True)
    assert "OLD THOUGHT" not in plain
    assert "<｜Assistant｜></think>Hello!<｜end▁of▁sentence｜><｜User｜>Again<｜Assistant｜><think>" in plain
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    with_tools = encode_messages([dict(convo[0], tools=[tool])] + convo[1:], thinking=True)
    assert "<｜Assistant｜><think>OLD THOUGHT</think>Hello!" in with_tools
    assert "## Tools" in with_tools and '{"name": "f", "parameters":' in with_tools
    kept = encode_messages(convo, thinking=True, drop_thinking=False)
    assert "OLD THOUGHT" in kept


def test_tool_results_follow_call_order_and_merge_with_user_text():
    calls = [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": json.dumps({"i": i})}}
             for i in range(3)]
    convo = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
        {"role": "tool", "tool_call_id": "c0", "content": "zero"},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "user", "content": "thanks"},
    ]
    out = encode_messages(convo)
    assert out.endswith(
        "<｜User｜><tool_result>zero</tool_result>\n\n<tool_result>one</tool_result>\n\n"
        "<tool_result>two</tool_result>\n\nthanks<｜Assistant｜></think>"
    )
    assert '<｜DSML｜parameter name="i" string="false">0</｜DSML｜parameter>' in out


def test_tool_call_arguments_render_strings_raw_and_values_as_json():
    call = {"id": "x", "type": "function",
            "function": {"name": "g", "arguments": json.dumps({"s": "a \"q\"", "n": 1.5, "l": [1, "ü"]})}}
    out = encode_messages([{"role": "user", "content": "u"}, {"role": "assistant", "tool_calls": [call]}])
    assert (
        '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="g">\n'
        '<｜DSML｜parameter name="s" string="true">a "q"</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="n" string="false">1.5</｜DSML｜parameter>\n'
        '<｜DSML｜parameter name="l" string="false">[1, "ü"]</｜DSML｜parameter>\n'
        "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>"
    ) in out
    _, _, parsed = parse_output(out.split("</think>")[1].removesuffix("<｜end▁of▁sentence｜>"))
    assert json.loads(parsed[0].arguments) == {"s": 'a "q"', "n": 1.5, "l": [1, "ü"]}


def test_reasoning_effort_max_prefix_and_bad_input():
    assert encode_messages(CHAT, thinking=True, reasoning_effort="max").startswith(
        "<｜begin▁of▁sentence｜>" + REASONING_EFFORT_MAX + "Be brief.")
    assert REASONING_EFFORT_MAX not in encode_messages(CHAT, reasoning_effort="max")  # chat mode: no prefix
    with pytest.raises(ValueError, match="reasoning_effort"):
        encode_messages(CHAT, reasoning_effort="extreme")
    with pytest.raises(ValueError, match=r"messages\[0\].role"):
        encode_messages([{"role": "robot", "content": "x"}])


def test_content_parts_are_joined():
    msg = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    assert encode_messages([msg]) == "<｜begin▁of▁sentence｜><｜User｜>a\nb<｜Assistant｜></think>"
