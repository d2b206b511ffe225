"""DeepSeek's DSML tool format: the tools section of a prompt, tool calls in assistant turns, and a
streaming parser that splits model output into reasoning, content and OpenAI-style tool calls.

A tool-call block (V4 chat format, `encoding/README.md` of the V4 release):

    <｜DSML｜tool_calls>
    <｜DSML｜invoke name="get_weather">
    <｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>
    <｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜tool_calls>

`string="true"` marks a raw string, `string="false"` a JSON value. OpenAI's arguments are one
JSON object per call; the parser builds it parameter by parameter so a stream can carry it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

DSML = "｜DSML｜"
TOOL_CALLS_OPEN, TOOL_CALLS_CLOSE = f"<{DSML}tool_calls>", f"</{DSML}tool_calls>"
INVOKE_CLOSE, PARAM_CLOSE = f"</{DSML}invoke>", f"</{DSML}parameter>"
END_THINK = "</think>"

TOOLS_PROMPT = """## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<{d}tool_calls>" block like the following:

<{d}tool_calls>
<{d}invoke name="$TOOL_NAME">
<{d}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{d}parameter>
...
</{d}invoke>
<{d}invoke name="$TOOL_NAME2">
...
</{d}invoke>
</{d}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.

Otherwise, output directly after </think> with tool calls or final response.

### Available Tool Schemas

{schemas}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""


def to_json(value: Any) -> str:
    """JSON the way the chat format writes it: `json.dumps` spacing, non-ASCII kept as is."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, UnicodeEncodeError):
        return json.dumps(value, ensure_ascii=True)


def render_tools(functions: list[dict]) -> str:
    """The "## Tools" prompt section for OpenAI function definitions {name, description, parameters}."""
    return TOOLS_PROMPT.format(d=DSML, schemas="\n".join(to_json(f) for f in functions))


def render_tool_calls(calls: list[tuple[str, str]]) -> str:
    """A DSML block for (name, arguments JSON text) calls; arguments that are not a JSON object
    are passed as one string parameter named "arguments"."""
    invokes = []
    for name, arguments in calls:
        try:
            args = json.loads(arguments)
        except (TypeError, ValueError):
            args = None
        if not isinstance(args, dict):
            args = {"arguments": arguments}
        params = "\n".join(
            f'<{DSML}parameter name="{k}" string="{"true" if isinstance(v, str) else "false"}">'
            f"{v if isinstance(v, str) else to_json(v)}{PARAM_CLOSE}"
            for k, v in args.items()
        )
        invokes.append(f'<{DSML}invoke name="{name}">\n{params}\n{INVOKE_CLOSE}')
    return f"{TOOL_CALLS_OPEN}\n" + "\n".join(invokes) + f"\n{TOOL_CALLS_CLOSE}"


# ---------------------------------------------------------------------- parsing


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str = ""  # JSON object text, complete once the call is closed


@dataclass
class Delta:
    """What one piece of output adds: reasoning text, content text, and tool-call pieces
    (index, id or None, name or None, arguments fragment) in OpenAI's streaming shape."""

    reasoning: str = ""
    content: str = ""
    tool_calls: list[tuple[int, str | None, str | None, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.tool_calls)

    def __iadd__(self, other: Delta) -> Self:
        self.reasoning += other.reasoning
        self.content += other.content
        self.tool_calls += other.tool_calls
        return self


_INVOKE = re.compile(rf'<{DSML}invoke\s+name="([^"]*)"\s*>')
_PARAM = re.compile(rf'<{DSML}parameter\s+name="([^"]*)"\s+string="(true|false)"\s*>(.*?){PARAM_CLOSE}', re.DOTALL)
_TAGS = (f"<{DSML}invoke", f"<{DSML}parameter", INVOKE_CLOSE, TOOL_CALLS_CLOSE)
REASONING, CONTENT, TOOLS = "reasoning", "content", "tools"


def _held(buf: str, markers: tuple[str, ...]) -> int:
    """Length of the longest end of `buf` that could still grow into one of `markers`."""
    for n in range(min(len(buf), max(map(len, markers)) - 1), 0, -1):
        tail = buf[-n:]
        if any(m.startswith(tail) for m in markers):
            return n
    return 0


class OutputParser:
    """Feed model output text as it comes; get back what is safe to show (`Delta`s).

    Steps per piece of text:
    1. thinking mode: everything up to `</think>` is reasoning;
    2. then content, until a `<｜DSML｜tool_calls>` block (only when the request has tools; the
       blank line before the block is part of the format, not of the content);
    3. inside the block, each `invoke` starts a tool call (its id and name are sent at once) and
       each complete `parameter` adds `"name": value` to its JSON arguments; text that is not
       DSML goes to content, so nothing the model wrote is lost.
    The end of a string that could be the start of a marker is held back until it resolves.
    """

    def __init__(self, *, thinking: bool = False, tools: bool = False):
        self.state = REASONING if thinking else CONTENT
        self.tools = tools
        self.buf = ""
        self.reasoning, self.content = "", ""
        self.calls: list[ToolCall] = []
        self._open: ToolCall | None = None
        self._n_params = 0

    def feed(self, text: str) -> Delta:
        self.buf += text
        out = Delta()
        while True:
            before = (self.state, len(self.buf))
            if self.state == REASONING:
                out += self._reasoning()
            elif self.state == CONTENT:
                out += self._content()
            else:
                out += self._tools()
            if (self.state, len(self.buf)) == before:
                return out

    def finish(self) -> Delta:
        """The end of the output: held-back text is released, an unclosed call is closed."""
        out = Delta()
        rest, self.buf = self.buf, ""
        if self.state == REASONING:
            out.reasoning = rest
        else:
            out.content = rest
        if self._open is not None:
            out.tool_calls.append(self._close_call())
        self.reasoning += out.reasoning
        self.content += out.content
        return out

    # ------------------------------------------------------------------ states

    def _reasoning(self) -> Delta:
        i = self.buf.find(END_THINK)
        if i >= 0:
            text, self.buf, self.state = self.buf[:i], self.buf[i + len(END_THINK):], CONTENT
        else:
            n = len(self.buf) - _held(self.buf, (END_THINK,))
            text, self.buf = self.buf[:n], self.buf[n:]
        self.reasoning += text
        return Delta(reasoning=text)

    def _content(self) -> Delta:
        if not self.tools:
            text, self.buf = self.buf, ""
        else:
            i = self.buf.find(TOOL_CALLS_OPEN)
            if i >= 0:
                text, self.buf, self.state = self.buf[:i], self.buf[i + len(TOOL_CALLS_OPEN):], TOOLS
                text = text.removesuffix("\n\n")
            else:
                n = len(self.buf) - _held(self.buf, ("\n\n" + TOOL_CALLS_OPEN,))
                text, self.buf = self.buf[:n], self.buf[n:]
        self.content += text
        return Delta(content=text)

    def _tools(self) -> Delta:
        """Consume at most one element of the tool-call block."""
        body = self.buf.lstrip()
        if not body:
            self.buf = ""
            return Delta()
        if body.startswith(TOOL_CALLS_CLOSE):
            out = Delta(tool_calls=[self._close_call()] if self._open else [])
            self.buf, self.state = body[len(TOOL_CALLS_CLOSE):], CONTENT
            return out
        if body.startswith(INVOKE_CLOSE):
            self.buf = body[len(INVOKE_CLOSE):]
            return Delta(tool_calls=[self._close_call()] if self._open else [])
        m = _INVOKE.match(body)
        if m:
            out = Delta(tool_calls=[self._close_call()] if self._open else [])
            self.buf = body[m.end():]
            self._open = ToolCall(f"call_{uuid.uuid4().hex[:24]}", m.group(1))
            self._n_params = 0
            self.calls.append(self._open)
            out.tool_calls.append((len(self.calls) - 1, self._open.id, self._open.name, ""))
            return out
        m = _PARAM.match(body)
        if m and self._open is not None:
            self.buf = body[m.end():]
            return Delta(tool_calls=[self._argument(m.group(1), m.group(2) == "true", m.group(3))])
        if self._incomplete(body):
            self.buf = body
            return Delta()
        # not DSML: up to the next tag it is content
        nxt = [j for j in (body.find(t, 1) for t in _TAGS) if j > 0]
        j = min(nxt) if nxt else len(body) - _held(body, _TAGS)
        text, self.buf = body[:j], body[j:]
        self.content += text
        return Delta(content=text)

    def _incomplete(self, body: str) -> bool:
        """Could `body` still become a DSML element once more text arrives?"""
        if any(t.startswith(body) for t in _TAGS + (TOOL_CALLS_CLOSE, INVOKE_CLOSE)):
            return True
        if body.startswith(f"<{DSML}invoke"):
            return ">" not in body
        if body.startswith(f"<{DSML}parameter"):
            return PARAM_CLOSE not in body
        return False

    # ------------------------------------------------------------------ tool calls

    def _argument(self, name: str, is_string: bool, raw: str) -> tuple[int, None, None, str]:
        if is_string:
            value = to_json(raw)
        else:
            try:
                json.loads(raw)
                value = raw
            except ValueError:  # not the JSON it claims to be: keep it, as a string
                value = to_json(raw)
        piece = ("{" if self._n_params == 0 else ", ") + f"{to_json(name)}: {value}"
        self._n_params += 1
        self._open.arguments += piece
        return (len(self.calls) - 1, None, None, piece)

    def _close_call(self) -> tuple[int, None, None, str]:
        piece = "}" if self._n_params else "{}"
        self._open.arguments += piece
        self._open = None
        return (len(self.calls) - 1, None, None, piece)


def parse_output(text: str, *, thinking: bool = False, tools: bool = True) -> tuple[str, str, list[ToolCall]]:
    """(reasoning, content, tool calls) of a whole assistant output (without its end token)."""
    p = OutputParser(thinking=thinking, tools=tools)
    p.feed(text)
    p.finish()
    return p.reasoning, p.content, p.calls
