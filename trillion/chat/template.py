"""The V4 chat format as a Jinja chat template, for tools that render chats themselves.

transformers' `apply_chat_template`, vLLM's chat endpoint and lm-eval read `chat_template` from a
model folder's tokenizer_config.json (trillion.checkpoint.side_files writes it). DeepSeek ships no
template for V4, only its Python encoder; this renders what `encode_messages` renders for plain
conversations of system, user and assistant turns, in chat mode and in thinking mode (template
variable `thinking`, as DeepSeek's V3.x templates call it, or `enable_thinking`), with one
difference of convention: a conversation ending with a user turn gets the assistant prefix only with
`add_generation_prompt=True` (encode_messages always adds it). Tools, tool calls and other roles
raise an error naming trillion's encoder, which renders them (trillion.chat.encoding, DSML).

The steps mirror encode_messages: consecutive user turns merge into one, joined by a blank line; a
user turn the assistant answers ends with `<｜Assistant｜>` then `<think>` (thinking mode, last user
turn) or `</think>`; in thinking mode only the assistant turns after the last user turn carry their
`reasoning_content` (closed by `</think>`). Content is a string or a list of {"type": "text"} parts.
"""

from __future__ import annotations

from .encoding import ASSISTANT, END_THINK, EOS, THINK, USER

# Whitespace control on every tag ({%- -%}) so the template's own line breaks never reach the
# output, whatever trim_blocks / lstrip_blocks the renderer uses; literal text only inside {{ }}.
CHAT_TEMPLATE = (
    """
{%- set think = (thinking is defined and thinking) or (enable_thinking is defined and enable_thinking) -%}
{%- if tools is defined and tools -%}
  {{- raise_exception('this chat template renders plain conversations; tools need trillion.chat.encoding') -}}
{%- endif -%}
{%- macro text(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- elif content is iterable and content is not mapping -%}
    {%- for part in content -%}
      {{- ('' if loop.first else '\\n') ~ (part.text if part.type == 'text' else '[Unsupported ' ~ part.type ~ ']') -}}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}
  {%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{{- bos_token -}}
{%- for m in messages -%}
  {%- if m.role == 'system' -%}
    {{- text(m.content) -}}
  {%- elif m.role == 'user' -%}
    {{- '\\n\\n' if loop.previtem is defined and loop.previtem.role == 'user' else 'USER' -}}
    {{- text(m.content) -}}
    {%- if (loop.nextitem is defined and loop.nextitem.role == 'assistant')
          or (loop.nextitem is not defined and add_generation_prompt is defined and add_generation_prompt) -%}
      {{- 'ASSISTANT' ~ ('THINK' if think and loop.index0 == ns.last_user else 'END_THINK') -}}
    {%- endif -%}
  {%- elif m.role == 'assistant' -%}
    {%- if m.tool_calls is defined and m.tool_calls -%}
      {{- raise_exception('this chat template renders plain conversations; tool calls need trillion.chat.encoding') -}}
    {%- endif -%}
    {%- if think and loop.index0 > ns.last_user -%}
      {{- (m.reasoning_content if m.reasoning_content is defined and m.reasoning_content else '') ~ 'END_THINK' -}}
    {%- endif -%}
    {{- text(m.content) ~ 'EOS' -}}
  {%- else -%}
    {{- raise_exception('this chat template renders system, user and assistant turns, not ' ~ m.role
                        ~ '; use trillion.chat.encoding') -}}
  {%- endif -%}
{%- endfor -%}
""".strip()
    .replace("'END_THINK'", repr(END_THINK))
    .replace("'THINK'", repr(THINK))
    .replace("'ASSISTANT'", repr(ASSISTANT))
    .replace("'USER'", repr(USER))
    .replace("'EOS'", repr(EOS))
)
