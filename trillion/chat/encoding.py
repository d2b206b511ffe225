"""The DeepSeek-V4 chat format: a list of messages -> the prompt text the model was trained on.

Written from DeepSeek's description and reference encoder (`encoding/encoding_dsv4.py` and its
README in the V4 model repositories); the four test vectors shipped there are our golden tests.

    <｜begin▁of▁sentence｜>{system}<｜User｜>{user}<｜Assistant｜></think>{reply}<｜end▁of▁sentence｜>...

Steps of `encode_messages`:
1. tool results (role "tool") and user messages that follow one another merge into one user
   turn of parts joined by a blank line; tool results become `<tool_result>...</tool_result>`
   and are put in the order of the calls of the assistant turn before them;
2. thinking mode without tools drops earlier reasoning: assistant turns before the last user
   turn lose it, and developer turns before it are dropped (with tools every turn keeps its
   reasoning, since a tool loop needs the whole chain);
3. every message is rendered; a user (or developer) turn that the assistant answers next ends
   with `<｜Assistant｜>` plus `<think>` (thinking) or `</think>` (chat mode).

Messages are OpenAI-style dicts: role (system, user, assistant, tool, developer,
latest_reminder), content (text or a list of {"type": "text", "text": ...} parts),
reasoning_content and tool_calls on assistant turns, tool_call_id on tool turns, tools and
response_format on a system or developer turn, and DeepSeek's quick-instruction `task`.
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .dsml import render_tool_calls, render_tools, to_json

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
LATEST_REMINDER = "<｜latest_reminder｜>"
THINK, END_THINK = "<think>", "</think>"

# Quick-instruction tokens (DeepSeek's classification / helper tasks, set by a message's "task").
TASK_TOKENS = {
    "action": "<｜action｜>",
    "query": "<｜query｜>",
    "authority": "<｜authority｜>",
    "domain": "<｜domain｜>",
    "title": "<｜title｜>",
    "read_url": "<｜read_url｜>",
}
SPECIAL_TOKENS = (BOS, EOS, USER, ASSISTANT, LATEST_REMINDER, THINK, END_THINK, *TASK_TOKENS.values())

# Put before everything in thinking mode with reasoning_effort="max" (DeepSeek's wording).
REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n"
)
RESPONSE_FORMAT = "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{schema}"
EFFORTS = (None, "high", "max")
ROLES = ("system", "developer", "user", "assistant", "tool", "latest_reminder")


def encode_messages(
    messages: list[dict[str, Any]],
    *,
    thinking: bool = False,
    drop_thinking: bool = True,
    reasoning_effort: str | None = None,
    add_bos: bool = True,
) -> str:
    """The prompt text of a conversation (see the module docstring for the steps)."""
    if reasoning_effort not in EFFORTS:
        raise UserError(f"reasoning_effort = {reasoning_effort!r}; expected one of {EFFORTS}")
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise UserError(f"messages[{i}].role = {m.get('role')!r}; expected one of {ROLES}")
    turns = _merge_user_turns(messages)
    keep_reasoning = not drop_thinking or any(m.get("tools") for m in turns)
    if thinking and not keep_reasoning:
        turns = _drop_old_reasoning(turns)
    last_user = _last_user(turns)
    out = BOS if add_bos else ""
    if thinking and reasoning_effort == "max" and turns:
        out += REASONING_EFFORT_MAX
    for i, m in enumerate(turns):
        out += _render(m, i, turns, thinking, keep_reasoning, last_user)
    return out


# ---------------------------------------------------------------------- preprocessing


def _text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list joined by newlines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") if p.get("type") == "text" else f"[Unsupported {p.get('type')}]"
                     for p in content)


def _tool_result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n\n".join(p.get("text", "") if p.get("type") == "text" else f"[Unsupported {p.get('type')}]"
                           for p in content)
    return "" if content is None else str(content)


def _merge_user_turns(messages: list[dict]) -> list[dict]:
    """V4 has no tool role: tool results and the user text around them form one user turn.

    A user turn is {"role": "user", "parts": [("text", str) | ("tool_result", call_id, str)], ...}."""
    turns: list[dict] = []
    order: dict[str, int] = {}  # call id -> position among the last assistant turn's calls
    for m in messages:
        role = m["role"]
        if role == "tool":
            part = ("tool_result", m.get("tool_call_id") or "", _tool_result_text(m.get("content")))
        elif role == "user":
            part = ("text", _text(m.get("content")))
        else:
            if role == "assistant" and m.get("tool_calls"):
                order = {tc.get("id"): k for k, tc in enumerate(m["tool_calls"]) if tc.get("id")}
            turns.append(dict(m))
            continue
        prev = turns[-1] if turns else None
        if prev is not None and prev["role"] == "user" and "parts" in prev and prev.get("task") is None:
            prev["parts"].append(part)
            if m.get("task") is not None:
                prev["task"] = m["task"]
        else:
            turn = {"role": "user", "parts": [part], "order": order}
            for key in ("task", "wo_eos"):
                if key in m:
                    turn[key] = m[key]
            turns.append(turn)
    for t in turns:
        if "parts" in t:
            _sort_tool_results(t)
    return turns


def _sort_tool_results(turn: dict) -> None:
    """Tool results in the order of the calls that asked for them; text parts stay where they are."""
    order = turn.pop("order", {})
    results = [p for p in turn["parts"] if p[0] == "tool_result"]
    if len(results) < 2 or not order:
        return
    results.sort(key=lambda p: order.get(p[1], 0))
    it = iter(results)
    turn["parts"] = [next(it) if p[0] == "tool_result" else p for p in turn["parts"]]


def _last_user(turns: list[dict]) -> int:
    return max((i for i, m in enumerate(turns) if m["role"] in ("user", "developer")), default=-1)


def _drop_old_reasoning(turns: list[dict]) -> list[dict]:
    last = _last_user(turns)
    out = []
    for i, m in enumerate(turns):
        if i >= last or m["role"] in ("user", "system", "latest_reminder"):
            out.append(m)
        elif m["role"] == "assistant":
            out.append({k: v for k, v in m.items() if k != "reasoning_content"})
        # developer turns before the last user turn are dropped
    return out


# ---------------------------------------------------------------------- rendering


def _with_tools(text: str, m: dict) -> str:
    if m.get("tools"):
        text += "\n\n" + render_tools([t["function"] for t in m["tools"]])
    if m.get("response_format"):
        text += "\n\n" + RESPONSE_FORMAT.format(schema=to_json(m["response_format"]))
    return text


def _render(m: dict, i: int, turns: list[dict], thinking: bool, keep_reasoning: bool, last_user: int) -> str:
    role = m["role"]
    if role == "system":
        out = _with_tools(_text(m.get("content")), m)
    elif role == "developer":
        if not m.get("content"):
            raise UserError(f"a developer message needs content: {m}")
        out = _with_tools(USER + _text(m["content"]), m)
    elif role == "user":
        out = USER + "\n\n".join(p[1] if p[0] == "text" else f"<tool_result>{p[2]}</tool_result>" for p in m["parts"])
    elif role == "latest_reminder":
        out = LATEST_REMINDER + _text(m.get("content"))
    else:  # assistant
        reasoning = ""
        after_task = i > 0 and turns[i - 1].get("task") is not None  # a task's answer has no thinking
        if thinking and not after_task and (keep_reasoning or i > last_user):
            reasoning = (m.get("reasoning_content") or "") + END_THINK
        calls = ""
        if m.get("tool_calls"):
            calls = "\n\n" + render_tool_calls(
                [(tc["function"]["name"], tc["function"]["arguments"]) for tc in m["tool_calls"]]
            )
        out = reasoning + _text(m.get("content")) + calls + ("" if m.get("wo_eos") else EOS)

    # what opens the next turn
    nxt = turns[i + 1]["role"] if i + 1 < len(turns) else None
    if nxt is not None and nxt not in ("assistant", "latest_reminder"):
        return out
    task = m.get("task")
    if task is not None:
        if task not in TASK_TOKENS:
            raise UserError(f"task = {task!r}; expected one of {sorted(TASK_TOKENS)}")
        if task == "action":
            out += ASSISTANT + (THINK if thinking else END_THINK) + TASK_TOKENS[task]
        else:
            out += TASK_TOKENS[task]
    elif role in ("user", "developer"):
        out += ASSISTANT + (THINK if thinking and (keep_reasoning or i >= last_user) else END_THINK)
    return out
